"""The transfer family: a pretrained backbone, a new head, freezing and L2-SP (PyTorch).

Torch-free at import, like the self-supervised family: the catalogue is built from it at API
start; nets, training and inference import torch when they run.
"""

from __future__ import annotations

from app.ml.transfer.algorithm import FAMILY, TransferAlgorithm
from app.ml.transfer.model import TransferModel
from app.ml.transfer.params import TransferParams

ALGORITHMS = (TransferAlgorithm(),)

__all__ = ["ALGORITHMS", "FAMILY", "TransferAlgorithm", "TransferModel", "TransferParams"]
