"""Named backbones as torch modules, the image input stage, and the transfer network.

A backbone is rebuilt from a plain JSON spec (recorded in the model's config.json), so a saved
transfer model needs neither the weights file nor the model it started from: its own
safetensors hold every weight. Pretrained weights are read only when a job starts. A backbone
taken from a model trained here is that model class's encoder (deep.nets.EncoderBackbone, or
a transfer network's backbone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from app.ml.deep.nets import Blocks, parameterized
from app.ml.deep.runtime import Runtime
from app.ml.transfer.backbones import ARCHITECTURES
from app.ml.transfer.params import TransferParams

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R BT.601 luma: RGB images into a single-channel backbone.
LUMA = (0.299, 0.587, 0.114)


# ---------------------------------------------------------------------------- image input


def adapt_channels(x: Tensor, channels: int) -> Tensor:
    """NCHW [0, 1] pixels with the channels a backbone expects: gray is repeated, alpha is
    dropped, colour becomes luma for a single-channel backbone."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 4:
        return adapt_channels(x[:, :3], channels)
    if c == 1:
        return adapt_channels(x.expand(-1, 3, -1, -1), channels)
    if channels == 1:
        w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)
    return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # RGB into RGBA: opaque


# fill_mode → grid_sample's padding_mode ("wrap" folds the grid back first, then needs none).
PADDING = {"nearest": "border", "constant": "zeros", "reflect": "reflection", "wrap": "border"}


class Augment:
    """Random rotation, shear, shift, zoom, flips and brightness, like Keras'
    ImageDataGenerator (one affine grid_sample per batch; fill_mode fills the edges)."""

    def __init__(self, p: TransferParams, rt: Runtime) -> None:
        self.p, self.rt = p, rt

    def __call__(self, x: Tensor) -> Tensor:
        p, rt, n = self.p, self.rt, x.shape[0]

        def sym(scale: float) -> Tensor:
            """Uniform draws in [-scale, scale], one per image."""
            return scale * (2 * rt.rand(n) - 1)

        angle = sym(math.radians(p.rotation_range))
        zoom = 1 + sym(p.zoom_range)
        sx = zoom * torch.where(rt.rand(n) < 0.5, -1.0, 1.0) if p.horizontal_flip else zoom
        sy = zoom * torch.where(rt.rand(n) < 0.5, -1.0, 1.0) if p.vertical_flip else zoom
        tx, ty = sym(2 * p.width_shift_range), sym(2 * p.height_shift_range)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([torch.stack([sx * cos, -sy * sin, tx], dim=1),
                             torch.stack([sx * sin, sy * cos, ty], dim=1)], dim=1)
        if p.shear_range:  # Keras' shear matrix [[1, -sin s, 0], [0, cos s, 0]], after the rest
            shear = sym(math.radians(p.shear_range))
            zero, one = torch.zeros_like(shear), torch.ones_like(shear)
            sh = torch.stack([torch.stack([one, -torch.sin(shear), zero], dim=1),
                              torch.stack([zero, torch.cos(shear), zero], dim=1),
                              torch.stack([zero, zero, one], dim=1)], dim=1)
            theta = theta @ sh
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        if p.fill_mode == "wrap":
            grid = torch.remainder(grid + 1, 2) - 1
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode=PADDING[p.fill_mode],
                            align_corners=False)
        if p.brightness_range:
            low, high = p.brightness_range
            factor = low + (high - low) * rt.rand(n)
            out = (out * factor.view(n, 1, 1, 1).to(out.dtype)).clamp(0, 1)
        return out


class ImageInput(nn.Module):
    """uint8 NCHW images as stored → the backbone's model space: channels adapted, resized,
    augmented while training, normalised with the backbone's mean and std."""

    mean: Tensor  # buffers, registered in __init__
    std: Tensor

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.size = (int(spec["size"][0]), int(spec["size"][1]))
        self.channels = int(spec["channels"])
        c = self.channels
        self.register_buffer("mean", torch.tensor(spec["mean"], dtype=torch.float32)
                             .view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec["std"], dtype=torch.float32)
                             .view(1, c, 1, 1), persistent=False)

    def forward(self, x: Tensor, augment: Augment | None = None) -> Tensor:
        pixels = adapt_channels(x.float().div(255.0), self.channels)
        if tuple(pixels.shape[-2:]) != self.size:
            pixels = F.interpolate(pixels, size=self.size, mode="bilinear", align_corners=False,
                                   antialias=True)
        if augment is not None:
            pixels = augment(pixels)
        return (pixels - self.mean) / self.std


# ------------------------------------------------------------------------------ backbones


class TorchvisionBackbone(nn.Module):
    """A torchvision classifier without its last layer: pooled features, and its blocks."""

    def __init__(self, name: str, state: dict[str, Tensor] | None = None,
                 feature_layer: str | None = None) -> None:
        super().__init__()
        import torchvision.models as tvm

        if name not in ARCHITECTURES or ARCHITECTURES[name].source != "torchvision":
            raise ValueError(f"unknown torchvision architecture {name!r}")
        net = getattr(tvm, name)(weights=None)
        if state is not None:
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise ValueError(f"the weights file does not fit {name}: {str(exc)[:600]}") from exc
        self.name = name
        arch = ARCHITECTURES[name]
        layer = feature_layer or arch.feature_layer
        if name.startswith("resnet"):  # its pooled output is its penultimate layer
            net.fc = nn.Identity()
        elif layer == "penultimate":  # the classifier up to the class scores
            net.classifier = nn.Sequential(*list(net.classifier)[:-1])
        else:  # the last convolution's output, averaged over the image (Keras' pooling="avg")
            net.classifier = nn.Identity()
            if name.startswith("vgg"):
                net.avgpool = nn.AdaptiveAvgPool2d(1)
        self.net = net
        self.features_dim = arch.dim(layer)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out

    def blocks(self) -> Blocks:
        n = self.net
        if self.name.startswith("resnet"):
            return [(n.conv1, n.bn1), (n.layer1,), (n.layer2,), (n.layer3,), (n.layer4,)]
        if self.name.startswith("mobilenet"):
            return [(m,) for m in n.features]
        return parameterized(n.features) + parameterized(n.classifier)


class MiniLMBackbone(nn.Module):
    """all-MiniLM-L6-v2: BERT, mean pooling over real tokens, L2 normalisation — the
    sentence-transformers pipeline. Input: (n, 2, L) int64 token ids and attention mask."""

    def __init__(self, bert_config: dict[str, Any], state: dict[str, Tensor] | None = None) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        self.bert = BertModel(BertConfig(**bert_config), add_pooling_layer=False)
        if state is not None:
            state = {k.removeprefix("bert."): v for k, v in state.items()
                     if not k.startswith(("pooler.", "bert.pooler.")) and "position_ids" not in k}
            self.bert.load_state_dict(state, strict=True)
        self.features_dim = int(bert_config["hidden_size"])

    def forward(self, x: Tensor) -> Tensor:
        ids, mask = x[:, 0], x[:, 1]
        hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)

    def blocks(self) -> Blocks:
        return [(self.bert.embeddings,), *((layer,) for layer in self.bert.encoder.layer)]


# ------------------------------------------------------------------------- the network


def head(in_dim: int, hidden: Sequence[int], out_dim: int, dropout: float) -> nn.Sequential:
    """Dropout + Linear (+ ReLU between) through hidden to out_dim."""
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden, out_dim]
    for i in range(len(dims) - 1):
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class TransferNet(nn.Module):
    """input stage (images) → backbone → head. `frozen` modules stay in eval mode."""

    def __init__(self, backbone: Any, image_input: ImageInput | None,
                 head_spec: dict[str, Any]) -> None:
        super().__init__()
        # A backbone module: a named one, or the encoder of a model trained here; each has
        # features_dim and blocks().
        self.backbone = backbone
        self.image_input = image_input
        self.head = head(int(backbone.features_dim), head_spec["hidden_dims"],
                         int(head_spec["n_out"]), float(head_spec["dropout"]))
        self.frozen: list[nn.Module] = []

    def features(self, x: Tensor, augment: Augment | None = None) -> Tensor:
        """Backbone features of stored inputs (augmented when given an Augment)."""
        if self.image_input is not None:
            x = self.image_input(x, augment)
        out: Tensor = self.backbone(x)
        return out

    def forward(self, x: Tensor, augment: Augment | None = None) -> Tensor:
        out: Tensor = self.head(self.features(x, augment))
        return out

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x)

    def train(self, mode: bool = True) -> TransferNet:
        # Frozen layers keep their pretrained batch-norm statistics and no dropout.
        super().train(mode)
        for m in self.frozen:
            m.eval()
        return self

    def set_freeze(self, freeze: str | int) -> list[nn.Parameter]:
        """Mark what trains; return the backbone's trainable parameters."""
        blocks = self.backbone.blocks()
        if freeze == "none":
            trainable = blocks
        elif freeze == "backbone":
            trainable = []
        else:
            trainable = blocks[len(blocks) - min(int(freeze), len(blocks)):] if int(freeze) else []
        moving = {id(m) for group in trainable for m in group}
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        params: list[nn.Parameter] = []
        for group in trainable:
            for m in group:
                for p in m.parameters():
                    p.requires_grad_(True)
                    params.append(p)
        self.frozen = [m for group in blocks for m in group if id(m) not in moving]
        if freeze == "backbone" or not trainable:
            self.frozen = [self.backbone]
        return params


# -------------------------------------------------------------------- building from specs


def named_backbone(spec: dict[str, Any]) -> tuple[nn.Module, ImageInput | None]:
    """A torchvision or MiniLM backbone (random weights) and its image input stage from a
    recorded spec."""
    source = spec["source"]
    if source == "torchvision":
        # spec.get: specs recorded before feature_layer existed use the architecture's default.
        return (TorchvisionBackbone(spec["name"], feature_layer=spec.get("feature_layer")),
                ImageInput(spec["image"]))
    if source == "minilm":
        return MiniLMBackbone(spec["bert"]), None
    raise ValueError(f"unknown backbone source {source!r}")


def pretrained_named(spec: dict[str, Any], path: Path) -> nn.Module:
    """A torchvision or MiniLM backbone with the pretrained weights at path (safe loads)."""
    if spec["source"] == "torchvision":
        return TorchvisionBackbone(spec["name"], read_weights(path),
                                   feature_layer=spec.get("feature_layer"))
    from safetensors.torch import load_file

    return MiniLMBackbone(spec["bert"], load_file(str(path / "model.safetensors")))


def read_weights(path: Path) -> dict[str, Tensor]:
    """A state dict from safetensors, or a .pth read with torch.load(weights_only=True)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path.name} does not hold a state dict of tensors")
    return state
