"""vae: a Gaussian-latent variational autoencoder (beta-VAE).

The decoder's likelihood p(x|z): a unit-variance Gaussian in model space (rows), a Gaussian
with a learned variance (images by default), or a Bernoulli on [0, 1] pixels. A unit Gaussian
on z-scored pixels weighs reconstruction so little against the KL term that most latent
dimensions collapse and samples blur; a learned variance weighs it by the data's own noise.
A KL warm-up (the KL weight ramps up to beta) and free bits are further guards, as params.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from app.ml.deep.nets import Decoder, Encoder, flat_per_row
from app.ml.deep.params import VAEParams
from app.ml.deep.preprocess import IMAGE, Prep
from app.ml.deep.runtime import Runtime, SingleLossObjective

# log-variance is clamped to keep exp() finite early in training.
LOGVAR_RANGE = (-20.0, 20.0)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
GAUSSIAN = "gaussian"
LEARNED = "learned_gaussian"
BERNOULLI = "bernoulli"
AUTO = "auto"
# learned_gaussian: log sigma starts at 0 (the unit Gaussian) and stays above this floor, so a
# constant feature cannot drive the likelihood to infinity.
LOG_SIGMA_MIN = math.log(1e-3)


def architecture(p: VAEParams) -> dict[str, Any]:
    """What config.json records to rebuild the network."""
    return {"latent_dim": p.latent_dim, "hidden_dims": list(p.hidden_dims),
            "base_channels": p.base_channels, "likelihood": p.likelihood,
            **p.mlp_arch()}


def resolve_likelihood(name: str, kind: str) -> str:
    """'auto' is the learned-variance Gaussian for images (see bench/vae_digits.py), the unit
    Gaussian for rows; Bernoulli needs [0, 1] pixels."""
    if name == AUTO:
        return LEARNED if kind == IMAGE else GAUSSIAN
    if name == BERNOULLI and kind != IMAGE:
        raise ValueError("likelihood 'bernoulli' models [0, 1] pixels: it is for image data; "
                         "use 'gaussian' (or 'auto') for tabular rows")
    if name not in (GAUSSIAN, LEARNED, BERNOULLI):
        raise ValueError(f"unknown likelihood {name!r}")
    return name


def kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) of each latent dimension of each row, (n, latent)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)


def free_bits_kl(kl: Tensor, free_bits: float) -> Tensor:
    """KL summed over dimensions, each dimension's batch mean floored at free_bits nats.

    A dimension whose KL is under the floor gets no gradient pushing it to the prior (Kingma et
    al. 2016), so the encoder keeps using it. With free_bits 0 this is the batch-mean KL.
    """
    return kl.mean(dim=0).clamp(min=free_bits).sum()


def kl_weight(beta: float, epoch: int, warmup_epochs: int) -> float:
    """The KL weight of a (1-based) epoch: ramps linearly to beta over warmup_epochs."""
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, epoch / warmup_epochs)


class VAENet(nn.Module):
    """Encoder to (mu, log-variance) of q(z|x); decoder from z to the mean of p(x|z)."""

    def __init__(self, arch: dict[str, Any], prep: Prep) -> None:
        super().__init__()
        self.latent_dim = int(arch["latent_dim"])
        # Models saved before the likelihood was a param used the Gaussian: they still do.
        self.likelihood = resolve_likelihood(arch.get("likelihood", GAUSSIAN), prep.kind)
        self.encoder = Encoder(arch, prep, 2 * self.latent_dim)
        self.decoder = Decoder(arch, prep, self.latent_dim)
        if self.likelihood == LEARNED:  # one noise scale for every value (model space)
            self.log_sigma = nn.Parameter(torch.zeros(()))

    def sigma_log(self) -> Tensor:
        """log sigma of a learned_gaussian decoder, floored."""
        return self.log_sigma.float().clamp(min=LOG_SIGMA_MIN)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """mu and log-variance (float32) of q(z|x)."""
        mu, logvar = self.encoder(x).float().chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def reconstruct(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """Per row: the decoder's mean (model space) and -log p(x|z) (Gaussians: without the
        constant D/2 log 2π)."""
        if self.likelihood == BERNOULLI:
            logits = self.decoder.logits(z).float()
            recon = self.decoder.finish(logits)
            pixels = self.decoder.unit_targets(x.float())
            bce = F.binary_cross_entropy_with_logits(logits, pixels, reduction="none")
            return recon, flat_per_row(bce).sum(dim=1)
        recon = self.decoder(z).float()
        sq = 0.5 * flat_per_row((recon - x) ** 2).sum(dim=1)
        if self.likelihood == LEARNED:
            log_sigma = self.sigma_log()
            return recon, sq * torch.exp(-2 * log_sigma) + flat_per_row(x).shape[1] * log_sigma
        return recon, sq

    def terms(self, x: Tensor, z: Tensor, mu: Tensor,
              logvar: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per row: reconstruction, -log p(x|z) as reconstruct() gives it, KL(q || N(0, I))."""
        recon, nll = self.reconstruct(x, z)
        return recon, nll, kl_per_dim(mu, logvar).sum(dim=1)

    def embed(self, x: Tensor) -> Tensor:
        """The posterior mean of each row."""
        return self.posterior(x)[0]

    def predict(self, x: Tensor) -> dict[str, Tensor]:
        """Reconstruction from the posterior mean, its per-row MSE and negative ELBO.

        The ELBO is evaluated at z = posterior mean (deterministic, so a row's answer does not
        depend on the request it came in), in nats: -log p(x|z) + KL. Gaussian: 0.5 * ||x - x̂||²
        + D/2 * log 2π in model space; Bernoulli: the cross-entropy of the [0, 1] pixels.
        """
        mu, logvar = self.posterior(x)
        recon, nll, kl = self.terms(x, mu, mu, logvar)
        if self.likelihood != BERNOULLI:
            nll = nll + flat_per_row(x).shape[1] * HALF_LOG_2PI
        return {"reconstruction": recon,
                "reconstruction_error": flat_per_row((recon - x) ** 2).mean(dim=1),
                "negative_elbo": nll + kl}

    def sample(self, z: Tensor) -> Tensor:
        """Decode latent draws to model space (the mean of p(x|z))."""
        out: Tensor = self.decoder(z)
        return out


def build(arch: dict[str, Any], prep: Prep) -> VAENet:
    """The network of a saved or new model."""
    return VAENet(arch, prep)


class VAEObjective(SingleLossObjective):
    """Mean over rows of -log p(x|z) + w * KL (reparameterised z; z = mu in eval).

    Training: w ramps to beta over kl_warmup_epochs and each dimension's KL is floored at
    free_bits. val_loss is always the plain beta objective, so epochs compare fairly.
    """

    def __init__(self, net: VAENet, rt: Runtime, p: VAEParams) -> None:
        super().__init__(net, rt, p)
        self.net, self.beta = net, p.beta
        self.warmup, self.free_bits = p.kl_warmup_epochs, p.free_bits
        self.weight = kl_weight(p.beta, 1, p.kl_warmup_epochs)

    def begin_epoch(self, epoch: int) -> None:
        self.weight = kl_weight(self.beta, epoch, self.warmup)

    def loss(self, xb: Tensor, *, training: bool) -> Tensor:
        mu, logvar = self.net.posterior(xb)
        z = mu + torch.exp(0.5 * logvar) * self.rt.randn(*mu.shape) if training else mu
        _, nll = self.net.reconstruct(xb, z)
        kl = kl_per_dim(mu, logvar)
        if training:
            return nll.mean() + self.weight * free_bits_kl(kl, self.free_bits)
        return nll.mean() + self.beta * kl.sum(dim=1).mean()


def objective(net: VAENet, rt: Runtime, p: VAEParams, prep: Prep) -> VAEObjective:
    """The training objective of a new network."""
    return VAEObjective(net, rt, p)
