"""gan: a generator and a discriminator trained with the non-saturating GAN loss.

Tabular: MLPs (the generator mirrors hidden_dims). Images: DCGAN-style, a transpose-conv
generator ending in [0, 1] pixels and a LeakyReLU conv discriminator. The generator has batch
norm after every hidden layer (without it, it collapsed to one digit on the digits images).
embed is the discriminator's penultimate features; generate decodes N(0, I) noise.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from app.ml.deep.nets import Decoder, Encoder
from app.ml.deep.params import GANParams
from app.ml.deep.preprocess import Prep
from app.ml.deep.runtime import Objective, Runtime, make_optimizer

BETAS = (0.5, 0.999)  # DCGAN's Adam betas: a short momentum keeps the two players stable


def architecture(p: GANParams) -> dict[str, Any]:
    """What config.json records to rebuild the network."""
    return {"latent_dim": p.latent_dim, "hidden_dims": list(p.hidden_dims),
            "base_channels": p.base_channels}


class GANNet(nn.Module):
    """generator: noise → model space; discriminator: model space → one logit."""

    def __init__(self, arch: dict[str, Any], prep: Prep) -> None:
        super().__init__()
        self.latent_dim = int(arch["latent_dim"])
        self.generator = Decoder(arch, prep, self.latent_dim, batch_norm=True)
        self.discriminator = Encoder(arch, prep, 1, act="leaky")

    def embed(self, x: Tensor) -> Tensor:
        """The discriminator's penultimate features of each row."""
        out: Tensor = self.discriminator.trunk(x)
        return out

    def sample(self, z: Tensor) -> Tensor:
        """Generate model-space samples from noise."""
        out: Tensor = self.generator(z)
        return out


def build(arch: dict[str, Any], prep: Prep) -> GANNet:
    """The network of a saved or new model."""
    return GANNet(arch, prep)


class GANObjective(Objective):
    """One discriminator step then one generator step per batch; separate Adams."""

    validates = False
    min_batch = 2  # the generator's batch norm needs two rows

    def __init__(self, net: GANNet, rt: Runtime, p: GANParams) -> None:
        self.module, self.net, self.rt = net, net, rt
        self.g_opt = make_optimizer(net.generator.parameters(), p, betas=BETAS)
        self.d_opt = make_optimizer(net.discriminator.parameters(), p, betas=BETAS)
        self.optimizers = {"generator": self.g_opt, "discriminator": self.d_opt}

    def train_step(self, xb: Tensor) -> dict[str, Tensor]:
        g, d, n = self.net.generator, self.net.discriminator, xb.shape[0]
        self.d_opt.zero_grad(set_to_none=True)
        with self.rt.autocast():
            fake = g(self.rt.randn(n, self.net.latent_dim)).detach()
            # BCE(D(x), 1) + BCE(D(G(z)), 0), written with softplus for stability
            d_loss = (F.softplus(-d(xb).float()) + F.softplus(d(fake).float())).mean()
        d_loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is unannotated
        self.rt.average_gradients(d)
        self.d_opt.step()
        self.g_opt.zero_grad(set_to_none=True)
        d.requires_grad_(False)  # the generator step needs no discriminator gradients
        try:
            with self.rt.autocast():
                g_loss = F.softplus(-d(g(self.rt.randn(n, self.net.latent_dim))).float()).mean()
            g_loss.backward()  # type: ignore[no-untyped-call]  # Tensor.backward is unannotated
        finally:
            d.requires_grad_(True)
        self.rt.average_gradients(g)
        self.g_opt.step()
        d_loss, g_loss = d_loss.detach(), g_loss.detach()
        return {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss}


def objective(net: GANNet, rt: Runtime, p: GANParams, prep: Prep) -> GANObjective:
    """The training objective of a new network."""
    return GANObjective(net, rt, p)
