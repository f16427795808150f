"""The self-supervised family: autoencoder, vae, contrastive and gan in PyTorch.

Importing this package loads no torch (the API builds its catalogue from it and must start
fast): params, algorithms and the trained-model classes are torch-free at import; fit(), load()
and inference import torch when they run. The torch side: runtime (the shared training loop),
nets, one module per algorithm, training (the fit pipeline).
"""

from __future__ import annotations

from app.ml.deep.algorithms import (
    ALGORITHMS,
    FAMILY,
    AutoencoderAlgorithm,
    ContrastiveAlgorithm,
    DeepAlgorithm,
    GANAlgorithm,
    VAEAlgorithm,
)
from app.ml.deep.model import AutoencoderModel, ContrastiveModel, DeepModel, GANModel, VAEModel
from app.ml.deep.params import (
    AutoencoderParams,
    ContrastiveParams,
    GANParams,
    TrainParams,
    VAEParams,
)

# The family's trained-model classes: what a transfer job may take an encoder from.
MODELS: tuple[type[DeepModel], ...] = tuple(algo.trained_cls for algo in ALGORITHMS)

__all__ = [
    "ALGORITHMS",
    "FAMILY",
    "MODELS",
    "AutoencoderAlgorithm",
    "AutoencoderModel",
    "AutoencoderParams",
    "ContrastiveAlgorithm",
    "ContrastiveModel",
    "ContrastiveParams",
    "DeepAlgorithm",
    "DeepModel",
    "GANAlgorithm",
    "GANModel",
    "GANParams",
    "TrainParams",
    "VAEAlgorithm",
    "VAEModel",
    "VAEParams",
]
