"""contrastive: SimCLR-style. Two random views of each row, an encoder and a projection head,
NT-Xent (InfoNCE) loss at temperature τ. embed is the encoder output (the head is dropped).

Views are made in torch on whole batches: images get a random resized crop with a small
rotation and shift (one affine grid_sample), brightness/contrast jitter, Gaussian noise and,
only if asked, horizontal flips. Rows get SCARF corruption: a random share of features is
replaced by the same feature of another row, plus a little noise.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from app.ml.deep.nets import Encoder, Normalize, projection_head
from app.ml.deep.params import ContrastiveParams
from app.ml.deep.preprocess import IMAGE, Prep
from app.ml.deep.runtime import Runtime, SingleLossObjective

ASPECT_RANGE = (3 / 4, 4 / 3)


def architecture(p: ContrastiveParams) -> dict[str, Any]:
    """What config.json records to rebuild the network."""
    return {"embedding_dim": p.embedding_dim, "projection_dim": p.projection_dim,
            "hidden_dims": list(p.hidden_dims), "base_channels": p.base_channels, **p.mlp_arch()}


class ContrastiveNet(nn.Module):
    """Encoder (what embed returns) plus the projection head the loss is computed on."""

    def __init__(self, arch: dict[str, Any], prep: Prep) -> None:
        super().__init__()
        self.encoder = Encoder(arch, prep, int(arch["embedding_dim"]))
        self.head = projection_head(int(arch["embedding_dim"]), int(arch["projection_dim"]))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.encoder(x))
        return out

    def embed(self, x: Tensor) -> Tensor:
        """The encoder output of each row."""
        out: Tensor = self.encoder(x)
        return out


def build(arch: dict[str, Any], prep: Prep) -> ContrastiveNet:
    """The network of a saved or new model."""
    return ContrastiveNet(arch, prep)


def nt_xent(z: Tensor, temperature: float) -> Tensor:
    """NT-Xent of 2N projections where rows i and i+N are the two views of one example."""
    n = z.shape[0] // 2
    with torch.autocast(z.device.type, enabled=False):  # similarities in float32, not bf16
        z = F.normalize(z.float(), dim=1)
        sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), -math.inf)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


class ImageViews:
    """Random views of model-space NCHW image batches (augmented in [0, 1] pixel space)."""

    def __init__(self, p: ContrastiveParams, prep: Prep, rt: Runtime) -> None:
        self.p, self.rt = p, rt
        self.norm = Normalize(prep).to(rt.device)

    def __call__(self, x: Tensor) -> Tensor:
        p, rt, n = self.p, self.rt, x.shape[0]
        pixels = self.norm.inverse(x)
        grid = F.affine_grid(self._affine(n), list(pixels.shape), align_corners=False)
        out = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
        if p.color_jitter:
            mean = out.mean(dim=(1, 2, 3), keepdim=True)
            contrast = 1 + p.color_jitter * (2 * rt.rand(n, 1, 1, 1) - 1)
            brightness = p.color_jitter * (2 * rt.rand(n, 1, 1, 1) - 1)
            out = ((out - mean) * contrast + mean + brightness).clamp(0, 1)
        if p.view_noise:
            out = out + p.view_noise * rt.randn(*out.shape)
        views: Tensor = self.norm(out)
        return views

    def _affine(self, n: int) -> Tensor:
        # One 2x3 matrix per view: zoom into a random crop of the given area and aspect,
        # rotate a little, move the crop within the image (plus a small extra shift).
        p, rt = self.p, self.rt
        area = p.crop_scale_min + (1 - p.crop_scale_min) * rt.rand(n)
        lo, hi = math.log(ASPECT_RANGE[0]), math.log(ASPECT_RANGE[1])
        aspect = torch.exp(lo + (hi - lo) * rt.rand(n))
        sx = torch.sqrt(area * aspect).clamp(max=1)
        sy = torch.sqrt(area / aspect).clamp(max=1)
        angle = math.radians(p.rotation_degrees) * (2 * rt.rand(n) - 1)
        tx = (1 - sx) * (2 * rt.rand(n) - 1) + 2 * p.translate * (2 * rt.rand(n) - 1)
        ty = (1 - sy) * (2 * rt.rand(n) - 1) + 2 * p.translate * (2 * rt.rand(n) - 1)
        if p.flip:
            sx = sx * torch.where(rt.rand(n) < 0.5, -1.0, 1.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        return torch.stack([torch.stack([sx * cos, -sy * sin, tx], dim=1),
                            torch.stack([sx * sin, sy * cos, ty], dim=1)], dim=1)


class RowViews:
    """SCARF views of model-space rows: masked features from random other rows, plus noise."""

    def __init__(self, p: ContrastiveParams, rt: Runtime) -> None:
        self.p, self.rt = p, rt

    def __call__(self, x: Tensor) -> Tensor:
        p, rt = self.p, self.rt
        n, d = x.shape
        out = x
        if p.mask_fraction:
            donors = x.gather(0, rt.randint(n, n, d))
            out = torch.where(rt.rand(n, d) < p.mask_fraction, donors, x)
        if p.view_noise:
            out = out + p.view_noise * rt.randn(n, d)
        return out


class ContrastiveObjective(SingleLossObjective):
    """NT-Xent over the projections of two views of every row of the batch."""

    min_batch = 2  # a batch of one has no negatives

    def __init__(self, net: ContrastiveNet, rt: Runtime, p: ContrastiveParams,
                 prep: Prep) -> None:
        super().__init__(net, rt, p)
        self.net, self.temperature = net, p.temperature
        self.views = ImageViews(p, prep, rt) if prep.kind == IMAGE else RowViews(p, rt)

    def loss(self, xb: Tensor, *, training: bool) -> Tensor:
        both = torch.cat([self.views(xb), self.views(xb)])
        return nt_xent(self.net(both), self.temperature)


def objective(net: ContrastiveNet, rt: Runtime, p: ContrastiveParams,
              prep: Prep) -> ContrastiveObjective:
    """The training objective of a new network."""
    return ContrastiveObjective(net, rt, p, prep)
