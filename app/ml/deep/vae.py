"""vae: a Gaussian-latent variational autoencoder (beta-VAE), unit-variance Gaussian decoder."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from app.ml.deep.nets import Decoder, Encoder, flat_per_row
from app.ml.deep.params import VAEParams
from app.ml.deep.preprocess import Prep
from app.ml.deep.runtime import Runtime, SingleLossObjective

# log-variance is clamped to keep exp() finite early in training.
LOGVAR_RANGE = (-20.0, 20.0)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def architecture(p: VAEParams) -> dict[str, Any]:
    """What config.json records to rebuild the network."""
    return {"latent_dim": p.latent_dim, "hidden_dims": list(p.hidden_dims),
            "base_channels": p.base_channels, **p.mlp_arch()}


class VAENet(nn.Module):
    """Encoder to (mu, log-variance) of q(z|x); decoder from z to the mean of p(x|z)."""

    def __init__(self, arch: dict[str, Any], prep: Prep) -> None:
        super().__init__()
        self.latent_dim = int(arch["latent_dim"])
        self.encoder = Encoder(arch, prep, 2 * self.latent_dim)
        self.decoder = Decoder(arch, prep, self.latent_dim)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """mu and log-variance (float32) of q(z|x)."""
        mu, logvar = self.encoder(x).float().chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def terms(self, x: Tensor, z: Tensor, mu: Tensor, logvar: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per row: reconstruction, 0.5 * squared error summed, and KL(q || N(0, I))."""
        recon = self.decoder(z).float()
        sq = 0.5 * flat_per_row((recon - x) ** 2).sum(dim=1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1)
        return recon, sq, kl

    def embed(self, x: Tensor) -> Tensor:
        """The posterior mean of each row."""
        return self.posterior(x)[0]

    def predict(self, x: Tensor) -> dict[str, Tensor]:
        """Reconstruction from the posterior mean, its per-row MSE and negative ELBO.

        The ELBO is evaluated at z = posterior mean (deterministic, so a row's answer does not
        depend on the request it came in): 0.5 * ||x - x̂||² + D/2 * log 2π + KL, in nats, in
        model space.
        """
        mu, logvar = self.posterior(x)
        recon, sq, kl = self.terms(x, mu, mu, logvar)
        dims = flat_per_row(x).shape[1]
        return {"reconstruction": recon,
                "reconstruction_error": flat_per_row((recon - x) ** 2).mean(dim=1),
                "negative_elbo": sq + dims * HALF_LOG_2PI + kl}

    def sample(self, z: Tensor) -> Tensor:
        """Decode latent draws to model space."""
        return self.decoder(z)


def build(arch: dict[str, Any], prep: Prep) -> VAENet:
    """The network of a saved or new model."""
    return VAENet(arch, prep)


class VAEObjective(SingleLossObjective):
    """Mean over rows of 0.5 * squared error + beta * KL (reparameterised z; z = mu in eval)."""

    def __init__(self, net: VAENet, rt: Runtime, p: VAEParams) -> None:
        super().__init__(net, rt, p)
        self.net, self.beta = net, p.beta

    def loss(self, xb: Tensor, *, training: bool) -> Tensor:
        mu, logvar = self.net.posterior(xb)
        z = mu + torch.exp(0.5 * logvar) * self.rt.randn(*mu.shape) if training else mu
        _, sq, kl = self.net.terms(xb, z, mu, logvar)
        return (sq + self.beta * kl).mean()


def objective(net: VAENet, rt: Runtime, p: VAEParams, prep: Prep) -> VAEObjective:
    """The training objective of a new network."""
    return VAEObjective(net, rt, p)
