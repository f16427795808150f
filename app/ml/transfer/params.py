"""Params of `transfer` (torch-free: they are the JSON Schema of GET /v1/algorithms)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field, field_validator

from app.ml.deep.params import TrainParams, Width, validation_rows

FreezeBlocks = Annotated[int, Field(ge=0, le=10_000)]

# Defaults chosen by the data (params left null). Measured on digits with 10 labels per class,
# where the old fixed defaults (20 epochs at batch 128, lr 1e-3, 20% held out) gave 20 Adam
# steps and scored .60.
# Training length: at least this many optimisation steps ...
AUTO_MIN_STEPS = 300
# ... and never fewer passes than the old fixed default (big sets train as they did) ...
AUTO_MIN_EPOCHS = 20
# ... nor more than this many.
AUTO_MAX_EPOCHS = 500
# A batch of at most this share of the training rows (so an epoch is at least 4 steps) ...
AUTO_BATCH_FRACTION = 0.25
# ... and at most the old default.
AUTO_MAX_BATCH = 128
# A head on a frozen backbone (a probe) converges at this rate within AUTO_MIN_STEPS; the
# backbone's weights, when they move, need the smaller Adam default.
PROBE_LEARNING_RATE = 1e-2
FINE_TUNE_LEARNING_RATE = 1e-3
# The held-out split: this share, but only when the smallest class keeps at least
# AUTO_MIN_TRAIN_PER_CLASS rows to train on; smaller labelled sets train on every row.
AUTO_VALIDATION_FRACTION = 0.2
AUTO_MIN_TRAIN_PER_CLASS = 40


class TransferParams(TrainParams):
    """A pretrained backbone, a new head, and how much of the backbone may move."""

    # epochs, batch_size, learning_rate and validation_fraction widen TrainParams' types
    # with null (auto: params.resolve decides from the data before training), which mypy
    # reports as an incompatible override; training reads them only after resolve().
    epochs: int | None = Field(  # type: ignore[assignment]
        None, ge=1, le=10_000,
        description="Passes over the training rows; null: chosen by the data, enough passes "
        f"for at least {AUTO_MIN_STEPS} optimisation steps (at least {AUTO_MIN_EPOCHS}, at "
        f"most {AUTO_MAX_EPOCHS}). The job's metrics record the value used.")
    batch_size: int | None = Field(  # type: ignore[assignment]
        None, ge=1, le=65_536,
        description="Rows per optimisation step (clamped to the number of training rows); "
        f"null: {AUTO_BATCH_FRACTION:g} of the training rows, at most {AUTO_MAX_BATCH}.")
    learning_rate: float | None = Field(  # type: ignore[assignment]
        None, gt=0, le=10,
        description=f"Adam(W) step size of the head; null: {PROBE_LEARNING_RATE:g} when the "
        f"backbone is frozen (a probe), {FINE_TUNE_LEARNING_RATE:g} when any of it trains.")

    backbone: str = Field(
        ..., min_length=1, max_length=100,
        description="What to start from: 'model:<id>' (the encoder of a PyTorch model trained "
        "here: autoencoder, vae, contrastive, gan or an earlier transfer model), a torchvision "
        "architecture (resnet18, resnet50, mobilenet_v3_small, vgg16; weights read from "
        "PRETRAINER_WEIGHTS_DIR) or 'minilm' (all-MiniLM-L6-v2, for text). GET /v1/backbones "
        "lists what is available.")
    pretrained: bool = Field(
        True, description="false: the same architecture from random initialization, the "
        "baseline that shows what pretraining bought.")
    freeze: Literal["backbone", "none"] | FreezeBlocks = Field(
        "backbone",
        description="'backbone': train the head only (a linear probe, or an MLP probe with "
        "head_hidden_dims); 'none': fine-tune everything; an integer N: train the last N "
        "blocks of the backbone and the head.")
    backbone_lr_mult: float = Field(
        0.1, gt=0, le=100,
        description="The backbone's learning rate is learning_rate times this (discriminative "
        "learning rates); the head trains at learning_rate.")
    l2sp: float = Field(
        0.0, ge=0, le=1e6,
        description="lambda of the L2-SP penalty lambda * ||theta - theta_0||^2 that pulls the "
        "trainable backbone weights toward the pretrained ones (then the backbone gets no "
        "weight decay); 0 is plain weight decay.")
    head: Literal["classification", "regression"] = Field(
        "classification",
        description="classification: softmax over the classes (folders, or the target "
        "column's values); regression: one value from a numeric target column.")
    class_weight: Literal["none", "balanced"] | dict[str, Annotated[float, Field(gt=0)]] = Field(
        "none", description="Classification: weigh the loss per class: 'balanced' (inverse "
        "frequency) or {class: weight}.")
    head_hidden_dims: list[Width] = Field(
        default_factory=list, max_length=4,
        description="Hidden layers of the head; [] is a single linear layer.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout before the head's layers.")
    validation_fraction: float | None = Field(  # type: ignore[assignment]  # null: see epochs
        None, ge=0, le=0.5,
        description="Share of the labelled rows held out (stratified by class, seeded) for "
        f"val_loss, early stopping and the evaluation metrics; null: {AUTO_VALIDATION_FRACTION:g} "
        f"when every class keeps at least {AUTO_MIN_TRAIN_PER_CLASS} rows to train on (or "
        "early_stopping_patience is set), else 0: a small labelled set trains on every row and "
        "its metrics are on the training rows (eval_split 'train'); score it on a test set.")
    feature_layer: Literal["pool", "penultimate"] | None = Field(
        None, description="torchvision backbones: where the features come from: 'pool', the "
        "last convolution averaged over the image (resnet18/50 512/2048, mobilenet_v3_small "
        "576, vgg16 512), or 'penultimate', the classifier's layer before the class scores "
        "(the same for ResNet; mobilenet_v3_small 1024, vgg16 4096); null: vgg16 "
        "'penultimate', the others 'pool'.")
    # Images: resizing and Keras ImageDataGenerator-style augmentation (training only).
    image_size: int | None = Field(
        None, ge=8, le=1024,
        description="Images: side the inputs are resized to; default: the backbone's own "
        "(224 for torchvision architectures, the pretraining size for model:<id>).")
    rotation_range: float = Field(0.0, ge=0, le=180, description="Images: random rotation, degrees.")
    width_shift_range: float = Field(0.0, ge=0, le=1, description="Images: random horizontal shift, fraction of the width.")
    height_shift_range: float = Field(0.0, ge=0, le=1, description="Images: random vertical shift, fraction of the height.")
    zoom_range: float = Field(0.0, ge=0, lt=1, description="Images: random zoom in [1 - z, 1 + z].")
    shear_range: float = Field(0.0, ge=0, le=90, description="Images: random shear, degrees "
                               "(counter-clockwise), as Keras' shear_range.")
    # A list of two, not a tuple: params are strict, and strict validation takes a JSON array
    # (a list once parsed) for a list only.
    brightness_range: Annotated[list[Annotated[float, Field(ge=0, le=10)]],
                                Field(min_length=2, max_length=2)] | None = Field(
        None, description="Images: [low, high]: pixel values are multiplied by a random factor "
        "in this range (then clipped), as Keras' brightness_range; null: off.")
    fill_mode: Literal["nearest", "constant", "reflect", "wrap"] = Field(
        "nearest", description="Images: how pixels moved in from outside the image are "
        "filled: the nearest edge pixel, black (constant), a mirror image, or the opposite edge.")
    horizontal_flip: bool = Field(False, description="Images: flip left-right at random.")
    vertical_flip: bool = Field(False, description="Images: flip upside down at random.")
    max_length: int = Field(128, ge=4, le=512, description="Text: tokens per text (longer ones are truncated).")

    @field_validator("brightness_range")
    @classmethod
    def _ordered(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and v[0] > v[1]:
            raise ValueError("brightness_range is [low, high]: low must not exceed high")
        return v

    @field_validator("backbone")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    @property
    def augments(self) -> bool:
        """True when any image augmentation is on."""
        return bool(self.rotation_range or self.width_shift_range or self.height_shift_range
                    or self.zoom_range or self.horizontal_flip or self.vertical_flip
                    or self.shear_range or self.brightness_range)


def resolve(p: TransferParams, *, n_rows: int, class_counts: Sequence[int] | None
            ) -> TransferParams:
    """p with every null (auto) training param replaced by the value the data calls for.

    class_counts: labelled rows per class (None for a regression head).
    """
    fraction = p.validation_fraction
    if fraction is None:
        fraction = auto_validation_fraction(p, n_rows=n_rows, class_counts=class_counts)
    n_train = n_rows - validation_rows(n_rows, fraction)
    batch = p.batch_size or max(1, min(AUTO_MAX_BATCH, math.floor(n_train * AUTO_BATCH_FRACTION)))
    epochs = p.epochs
    if epochs is None:
        steps = max(1, math.ceil(n_train / min(batch, n_train)))
        epochs = min(AUTO_MAX_EPOCHS, max(AUTO_MIN_EPOCHS, math.ceil(AUTO_MIN_STEPS / steps)))
    lr = p.learning_rate
    if lr is None:
        lr = PROBE_LEARNING_RATE if p.freeze in ("backbone", 0) else FINE_TUNE_LEARNING_RATE
    return p.model_copy(update={"validation_fraction": fraction, "batch_size": batch,
                                "epochs": epochs, "learning_rate": lr})


def auto_validation_fraction(p: TransferParams, *, n_rows: int,
                             class_counts: Sequence[int] | None) -> float:
    """The held-out share when validation_fraction is null (see its description)."""
    if p.early_stopping_patience:
        return AUTO_VALIDATION_FRACTION
    smallest = min(class_counts) if class_counts else n_rows
    kept = smallest - math.ceil(smallest * AUTO_VALIDATION_FRACTION)
    return AUTO_VALIDATION_FRACTION if kept >= AUTO_MIN_TRAIN_PER_CLASS else 0.0
