"""Network building blocks: MLPs for rows, a small conv encoder/decoder sized from the image.

Everything is rebuilt from a plain `arch` dict (recorded in config.json) plus the model's Prep,
so a saved model needs no pickled code: weights come from safetensors, structure from here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from app.ml.deep.preprocess import IMAGE, Prep

# Stride-2 stages halve the image until its smaller side is at most this.
MIN_SIDE = 4
MAX_STAGES = 6
# Channels grow by 2x per stage up to this multiple of base_channels.
MAX_WIDTH_FACTOR = 8

Activation = Callable[[], nn.Module]
# Output activations of a decoder of rows (images always end in a sigmoid to [0, 1] pixels).
LINEAR = "linear"
SIGMOID = "sigmoid"


def activation(name: str) -> Activation:
    """A fresh activation module factory by name."""
    if name == "relu":
        return nn.ReLU
    if name == "gelu":
        return nn.GELU
    if name == "silu":
        return nn.SiLU
    if name == "leaky":
        return lambda: nn.LeakyReLU(0.2)
    raise ValueError(f"unknown activation {name!r}")


def mlp(dims: Sequence[int], act: Activation, *, last_act: bool = False,
        batch_norm: bool = False, dropout: float = 0.0) -> nn.Sequential:
    """Linear layers through dims, with act between them (and after the last if asked);
    batch_norm puts a BatchNorm1d before each of those activations, dropout a Dropout after."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(a, b))
        if last_act or i < len(dims) - 2:
            layers += [nn.BatchNorm1d(b), act()] if batch_norm else [act()]
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def mlp_options(arch: dict[str, Any]) -> dict[str, Any]:
    """mlp()'s batch_norm and dropout as an architecture records them (absent in models saved
    before they existed: then off, as those models were built)."""
    return {"batch_norm": bool(arch.get("batch_norm", False)),
            "dropout": float(arch.get("dropout", 0.0))}


def conv_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Spatial size before each stride-2 stage and after the last: [(h, w), ..., (h', w')]."""
    sizes = [(height, width)]
    while min(sizes[-1]) > MIN_SIDE and len(sizes) <= MAX_STAGES:
        h, w = sizes[-1]
        sizes.append((math.ceil(h / 2), math.ceil(w / 2)))  # k=3, s=2, p=1 gives ceil(n/2)
    return sizes


def conv_widths(base: int, n_sizes: int) -> list[int]:
    """Channels at each size of conv_sizes()."""
    return [base * min(2**i, MAX_WIDTH_FACTOR) for i in range(n_sizes)]


class Normalize(nn.Module):
    """Per-channel (x - mean) / std on NCHW; the stats come from config, not the weights file."""

    mean: Tensor  # buffers, registered in __init__
    std: Tensor

    def __init__(self, prep: Prep) -> None:
        super().__init__()
        c = len(prep.mean)
        self.register_buffer("mean", torch.tensor(prep.mean, dtype=torch.float32)
                             .view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(prep.std, dtype=torch.float32)
                             .view(1, c, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def inverse(self, x: Tensor) -> Tensor:
        """Model space back to [0, 1] pixels."""
        return x * self.std + self.mean


def images_to_model_space(batch: Tensor, norm: Normalize) -> Tensor:
    """uint8 NCHW (any device) to float model space: /255 then per-channel normalisation."""
    out: Tensor = norm(batch.float().div_(255.0))
    return out


class Crop(nn.Module):
    """Crop NCHW to an exact size (a stride-2 transpose conv may overshoot an odd side by one)."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.height, self.width = height, width

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, : self.height, : self.width]


class Encoder(nn.Module):
    """Input (model space) to a vector: `trunk` gives the last hidden features, `out` the output.

    Tabular: an MLP. Images: a 3x3 conv stem, stride-2 conv stages down to <= 4 px, then an MLP.
    """

    def __init__(self, arch: dict[str, Any], prep: Prep, out_dim: int, act: str = "relu") -> None:
        super().__init__()
        make_act = activation(arch.get("activation") or act)
        options = mlp_options(arch)
        hidden = [int(v) for v in arch["hidden_dims"]]
        width = prep.shape[0]  # what reaches `out` without hidden layers: the row, or the convs
        if prep.kind == IMAGE:
            h, w, c = prep.shape
            sizes = conv_sizes(h, w)
            widths = conv_widths(int(arch["base_channels"]), len(sizes))
            layers: list[nn.Module] = [nn.Conv2d(c, widths[0], 3, padding=1), make_act()]
            for a, b in itertools.pairwise(widths):
                layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), make_act()]
            layers.append(nn.Flatten())
            width = widths[-1] * sizes[-1][0] * sizes[-1][1]
            self.trunk = nn.Sequential(*layers, mlp([width, *hidden], make_act, last_act=True,
                                                    **options))
        else:
            self.trunk = mlp([width, *hidden], make_act, last_act=True, **options)
        self.out = nn.Linear(hidden[-1] if hidden else width, out_dim)
        self.features_dim = hidden[-1] if hidden else width
        # A single-layer autoencoder's code is the hidden layer itself, activated as hidden
        # layers are (the classic 784 -> ReLU(128) -> 784); recorded, so old models stay linear.
        self.code_act = make_act() if arch.get("code_activation") else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.code_act(self.out(self.trunk(x)))
        return out


class Decoder(nn.Module):
    """A vector back to model space: the mirror of Encoder.

    Images: MLP, reshape to the smallest conv size, stride-2 transpose convs (cropped to the
    encoder's sizes), a 3x3 conv to the channels, a sigmoid to [0, 1] pixels, then the same
    normalisation as the input. So outputs always are valid images. batch_norm (a DCGAN
    generator) puts batch norm after every hidden layer, which keeps a GAN from collapsing.
    """

    def __init__(self, arch: dict[str, Any], prep: Prep, in_dim: int, *,
                 batch_norm: bool = False) -> None:
        super().__init__()
        hidden = [int(v) for v in reversed(arch["hidden_dims"])]
        relu = activation(arch.get("activation") or "relu")
        options = mlp_options(arch)
        batch_norm = batch_norm or options["batch_norm"]
        self.image = prep.kind == IMAGE
        if not self.image:
            rows = mlp([in_dim, *hidden, prep.shape[0]], relu, batch_norm=batch_norm,
                       dropout=options["dropout"])
            # Rows end linear unless the architecture asks for a sigmoid (values in [0, 1]).
            self.squash = arch.get("output_activation", LINEAR) == SIGMOID
            if self.squash:
                rows.append(nn.Sigmoid())  # holds no weights: saved models' keys stay the same
            self.net: nn.Module = rows
            return
        self.squash = True
        h, w, c = prep.shape
        sizes = conv_sizes(h, w)
        widths = conv_widths(int(arch["base_channels"]), len(sizes))
        sh, sw = sizes[-1]
        layers: list[nn.Module] = [mlp([in_dim, *hidden, widths[-1] * sh * sw], relu,
                                       last_act=True, batch_norm=batch_norm,
                                       dropout=options["dropout"]),
                                   nn.Unflatten(1, (widths[-1], sh, sw))]
        for i in range(len(sizes) - 1, 0, -1):
            layers += [nn.ConvTranspose2d(widths[i], widths[i - 1], 4, stride=2, padding=1),
                       Crop(*sizes[i - 1])]
            if batch_norm:
                layers.append(nn.BatchNorm2d(widths[i - 1]))
            layers.append(relu())
        layers += [nn.Conv2d(widths[0], c, 3, padding=1), nn.Sigmoid(), Normalize(prep)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        out: Tensor = self.net(z)
        return out

    def _head(self) -> int:
        """How many of the last layers turn logits into the output: Sigmoid (rows), or
        Sigmoid and Normalize (images)."""
        if not self.squash:
            raise ValueError("this decoder ends linear: it has no logits")
        return 2 if self.image else 1

    def logits(self, z: Tensor) -> Tensor:
        """The output before its sigmoid (a decoder that squashes to [0, 1] only)."""
        layers = self.net
        assert isinstance(layers, nn.Sequential)
        out: Tensor = layers[:-self._head()](z)
        return out

    def finish(self, logits: Tensor) -> Tensor:
        """logits() as forward() gives them: squashed (and normalised, images)."""
        layers = self.net
        assert isinstance(layers, nn.Sequential)
        out: Tensor = layers[-self._head():](logits)
        return out

    def unit_targets(self, x: Tensor) -> Tensor:
        """Model-space inputs as the [0, 1] values a sigmoid output is scored against: images
        back to pixels, rows as they are; clamped, so a request outside [0, 1] still scores."""
        if self.image:
            layers = self.net
            assert isinstance(layers, nn.Sequential)
            norm = layers[-1]
            assert isinstance(norm, Normalize)
            x = norm.inverse(x)
        return x.clamp(0.0, 1.0)


Blocks = list[tuple[nn.Module, ...]]


def parameterized(module: nn.Module) -> Blocks:
    """The module's layers that hold weights, input to output: the blocks of a small encoder."""
    return [(m,) for m in module.modules() if next(m.parameters(recurse=False), None) is not None]


class EncoderBackbone(nn.Module):
    """The encoder of a model trained here, as a transfer backbone: what its embed() computes.

    Its one submodule is `module`, so a transfer model's backbone weights are named
    backbone.module.* whichever model it started from (stored transfer models rely on it).
    """

    def __init__(self, module: nn.Module, features_dim: int) -> None:
        super().__init__()
        self.module, self.features_dim = module, features_dim

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.module(x)
        return out

    def blocks(self) -> Blocks:
        return parameterized(self.module)


class PosteriorMean(EncoderBackbone):
    """A VAE's encoder as a backbone: the first half of its output, the posterior mean."""

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.module(x)
        return out[:, : self.features_dim]


class TrunkFeatures(EncoderBackbone):
    """A GAN's discriminator as a backbone: its penultimate features."""

    def forward(self, x: Tensor) -> Tensor:
        trunk = self.module.trunk
        assert isinstance(trunk, nn.Module)
        out: Tensor = trunk(x)
        return out


def projection_head(in_dim: int, out_dim: int) -> nn.Sequential:
    """SimCLR's projection head: Linear, ReLU, Linear."""
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Linear(in_dim, out_dim))


def flat_per_row(x: Tensor) -> Tensor:
    """Rows (n, d) or images (n, c, h, w) as (n, values)."""
    return x.reshape(x.shape[0], -1)
