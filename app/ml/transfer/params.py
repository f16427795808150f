"""Params of `transfer` (torch-free: they are the JSON Schema of GET /v1/algorithms)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from app.ml.deep.params import TrainParams, Width

FreezeBlocks = Annotated[int, Field(ge=0, le=10_000)]


class TransferParams(TrainParams):
    """A pretrained backbone, a new head, and how much of the backbone may move."""

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
    warmup_epochs: int = Field(
        0, ge=0, le=1000, description="Linear learning-rate warmup over this many epochs.")
    validation_fraction: float = Field(
        0.2, ge=0, le=0.5,
        description="Share of the labelled rows held out (stratified by class, seeded) for "
        "val_loss, early stopping and the evaluation metrics.")
    # Images: resizing and Keras ImageDataGenerator-style augmentation (training only).
    image_size: int | None = Field(
        None, ge=8, le=1024,
        description="Images: side the inputs are resized to; default: the backbone's own "
        "(224 for torchvision architectures, the pretraining size for model:<id>).")
    rotation_range: float = Field(0.0, ge=0, le=180, description="Images: random rotation, degrees.")
    width_shift_range: float = Field(0.0, ge=0, le=1, description="Images: random horizontal shift, fraction of the width.")
    height_shift_range: float = Field(0.0, ge=0, le=1, description="Images: random vertical shift, fraction of the height.")
    zoom_range: float = Field(0.0, ge=0, lt=1, description="Images: random zoom in [1 - z, 1 + z].")
    horizontal_flip: bool = Field(False, description="Images: flip left-right at random.")
    vertical_flip: bool = Field(False, description="Images: flip upside down at random.")
    max_length: int = Field(128, ge=4, le=512, description="Text: tokens per text (longer ones are truncated).")

    @field_validator("backbone")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    @property
    def augments(self) -> bool:
        """True when any image augmentation is on."""
        return bool(self.rotation_range or self.width_shift_range or self.height_shift_range
                    or self.zoom_range or self.horizontal_flip or self.vertical_flip)
