"""The family's catalogue entries: metadata, params and shape checks (no torch here).

fit() imports the torch side (app.ml.deep.training) only when a job actually trains.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from app.ml.base import EMBED, GENERATE, PREDICT, Algorithm, FitInput, Params, Report
from app.ml.deep.model import (
    AutoencoderModel,
    ContrastiveModel,
    DeepModel,
    GANModel,
    VAEModel,
)
from app.ml.deep.params import (
    AutoencoderParams,
    ContrastiveParams,
    GANParams,
    VAEParams,
    validation_rows,
)
from app.ml.deep.preprocess import TABULAR, training_data

FAMILY = "self_supervised"
# check_fit names this for problems of the data itself rather than of one param.
DATASET = "dataset"


def bce_problems(p: AutoencoderParams, kind: str,
                 value_range: tuple[float, float] | None) -> list[tuple[str, str]]:
    """Why loss 'bce' cannot train on this data: rows must reach the network as values in
    [0, 1] (images always do). value_range: the features' (min, max), None when unknown."""
    if p.loss != "bce" or kind != TABULAR:
        return []
    found = []
    if p.output_activation != "sigmoid":
        found.append("bce scores a sigmoid output: set output_activation 'sigmoid'")
    if p.standardize:
        found.append("bce needs inputs in [0, 1] and standardize z-scores them: set "
                     "standardize false")
    if value_range is not None and not (value_range[0] >= 0 and value_range[1] <= 1):
        found.append(f"bce needs inputs in [0, 1], but the features range from "
                     f"{value_range[0]:g} to {value_range[1]:g}: scale them to [0, 1] (e.g. "
                     "divide pixels by 255) or use loss 'mse'")
    return [("loss", reason) for reason in found]



class DeepAlgorithm(Algorithm):
    """An algorithm of the self-supervised family: trains on the gpu queue, on rows or images."""

    family: ClassVar[str] = FAMILY
    data_kinds: ClassVar[tuple[str, ...]] = ("tabular", "image")
    queue: ClassVar[str] = "gpu"
    extras: ClassVar[tuple[str, ...]] = ()
    trained_cls: ClassVar[type[DeepModel]]
    validates: ClassVar[bool] = True  # False: no validation split, val_loss or early stopping
    sweep_metrics: ClassVar[tuple[str, ...]] = (
        "val_loss", "loss", "best_val_loss", "final_loss", "knn_accuracy", "linear_probe_accuracy")
    min_train_rows: ClassVar[int] = 1

    def check_fit(self, params: Params, *, n_rows: int, n_features: int) -> list[tuple[str, str]]:
        """Problems that make params unfit for data of this shape, as (param, reason) pairs."""
        p = self.own(params)
        if n_rows < 2:
            return [(DATASET, f"{self.name} needs at least 2 rows to train on, got {n_rows}")]
        if not self.validates:
            return []
        n_val = validation_rows(n_rows, p.validation_fraction)
        found = []
        if n_rows - n_val < self.min_train_rows:
            found.append(("validation_fraction", (
                f"validation_fraction={p.validation_fraction} leaves {n_rows - n_val} of "
                f"{n_rows} rows to train on; lower it")))
        if p.early_stopping_patience and n_val == 0:
            found.append(("early_stopping_patience", (
                "early stopping needs validation rows, but validation_fraction="
                f"{p.validation_fraction} of {n_rows} rows holds none out; raise "
                "validation_fraction or set the patience to 0")))
        return found

    def fit(self, data: FitInput, params: Params, report: Report) -> DeepModel:
        """Train on rows (n, d) or uint8 images (n, h, w, c); data.y (class indices) only
        scores the embedding, training ignores it.

        data.resume_from: a checkpoint this service wrote for the same job; training continues
        after its epoch with its weights, optimizer and RNG state.
        """
        from app.ml.deep.runtime import load_checkpoint
        from app.ml.deep.training import fit_model

        p = self.own(params)
        kind, arr = training_data(data.x)
        problems = self.check_fit(p, n_rows=len(arr), n_features=int(np.prod(arr.shape[1:])))
        if problems:
            raise ValueError("; ".join(reason for _, reason in problems))
        state = load_checkpoint(data.resume_from) if data.resume_from is not None else None
        return fit_model(self.trained_cls, kind, arr, p, report, validates=self.validates,
                         y=data.y, resume_from=state)


class AutoencoderAlgorithm(DeepAlgorithm):
    """autoencoder."""

    name: ClassVar[str] = "autoencoder"
    description: ClassVar[str] = (
        "Autoencoder (PyTorch): an encoder squeezes each row or image into a latent_dim code and "
        "a decoder rebuilds it, trained on reconstruction error (denoising with noise > 0). MLP "
        "for tables, small conv net for images. embed gives the code; predict the "
        "reconstruction and its per-row error (an anomaly score). Metrics: "
        "val_reconstruction_error, and kNN / linear-probe accuracy when labels are given.")
    capabilities: ClassVar[tuple[str, ...]] = (PREDICT, EMBED)
    params_model: ClassVar[type[AutoencoderParams]] = AutoencoderParams
    trained_cls: ClassVar[type[AutoencoderModel]] = AutoencoderModel
    sweep_metrics: ClassVar[tuple[str, ...]] = (
        *DeepAlgorithm.sweep_metrics, "val_reconstruction_error", "train_reconstruction_error")

    def check_data(self, params: Params, *, kind: str,
                   value_range: tuple[float, float] | None) -> list[tuple[str, str]]:
        """loss 'bce' on rows that do not reach the network in [0, 1]."""
        return bce_problems(self.own(params), kind, value_range)

    def fit(self, data: FitInput, params: Params, report: Report) -> DeepModel:
        """Refuse bce on rows outside [0, 1] (a dataset stored before its columns' ranges
        were recorded passes the submit check), then train as the family does."""
        kind, arr = training_data(data.x)
        seen = (float(arr.min()), float(arr.max())) if kind == TABULAR else None
        problems = bce_problems(self.own(params), kind, seen)
        if problems:
            raise ValueError("; ".join(reason for _, reason in problems))
        return super().fit(data, params, report)


class VAEAlgorithm(DeepAlgorithm):
    """vae."""

    name: ClassVar[str] = "vae"
    description: ClassVar[str] = (
        "Variational autoencoder (PyTorch, beta-VAE): learns a Gaussian latent space by "
        "maximising the evidence lower bound. embed gives the posterior mean; predict the "
        "reconstruction with its error and negative ELBO per row; generate decodes draws from "
        "the prior (rows, or PNG images as base64).")
    capabilities: ClassVar[tuple[str, ...]] = (PREDICT, EMBED, GENERATE)
    params_model: ClassVar[type[VAEParams]] = VAEParams
    trained_cls: ClassVar[type[VAEModel]] = VAEModel
    sweep_metrics: ClassVar[tuple[str, ...]] = (
        *DeepAlgorithm.sweep_metrics, "val_reconstruction_error", "train_reconstruction_error")


class ContrastiveAlgorithm(DeepAlgorithm):
    """contrastive."""

    name: ClassVar[str] = "contrastive"
    description: ClassVar[str] = (
        "Contrastive learning (PyTorch, SimCLR-style): two random views of each example "
        "(crops, small rotations, jitter and noise for images; SCARF feature corruption for "
        "tables) are pulled together and pushed from the rest of the batch with the NT-Xent "
        "(InfoNCE) loss at a temperature. embed gives the encoder output: a backbone for "
        "transfer. Metrics: kNN / linear-probe accuracy when labels are given.")
    capabilities: ClassVar[tuple[str, ...]] = (EMBED,)
    params_model: ClassVar[type[ContrastiveParams]] = ContrastiveParams
    trained_cls: ClassVar[type[ContrastiveModel]] = ContrastiveModel
    min_train_rows: ClassVar[int] = 2


class GANAlgorithm(DeepAlgorithm):
    """gan."""

    name: ClassVar[str] = "gan"
    description: ClassVar[str] = (
        "Generative adversarial network (PyTorch): a generator learns to turn noise into rows "
        "or images that a discriminator cannot tell from the data (non-saturating loss; "
        "DCGAN-style conv nets for images). generate gives new samples; embed the "
        "discriminator's penultimate features. History has d_loss and g_loss per epoch.")
    capabilities: ClassVar[tuple[str, ...]] = (EMBED, GENERATE)
    params_model: ClassVar[type[GANParams]] = GANParams
    trained_cls: ClassVar[type[GANModel]] = GANModel
    sweep_metrics: ClassVar[tuple[str, ...]] = (
        "d_loss", "g_loss", "loss", "final_d_loss", "final_g_loss", "final_loss", "knn_accuracy",
        "linear_probe_accuracy")
    validates: ClassVar[bool] = False


# The family's algorithms, in catalogue order.
ALGORITHMS: tuple[DeepAlgorithm, ...] = (
    AutoencoderAlgorithm(),
    VAEAlgorithm(),
    ContrastiveAlgorithm(),
    GANAlgorithm(),
)
