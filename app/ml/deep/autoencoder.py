"""autoencoder: encoder → code → decoder, trained on reconstruction MSE or binary
cross-entropy (optionally denoising)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from app.ml.deep.nets import Decoder, Encoder, flat_per_row
from app.ml.deep.params import AutoencoderParams
from app.ml.deep.preprocess import Prep
from app.ml.deep.runtime import Runtime, SingleLossObjective

MSE = "mse"
BCE = "bce"


def architecture(p: AutoencoderParams) -> dict[str, Any]:
    """What config.json records to rebuild the network (models saved before output_activation
    and loss existed lack those keys: linear and mse, as they were built)."""
    return {"latent_dim": p.latent_dim, "hidden_dims": list(p.hidden_dims),
            "base_channels": p.base_channels, **p.mlp_arch(),
            "code_activation": not p.hidden_dims,
            "output_activation": p.output_activation, "loss": p.loss}


class AutoencoderNet(nn.Module):
    """Encoder to a latent_dim code, decoder back to model space."""

    def __init__(self, arch: dict[str, Any], prep: Prep) -> None:
        super().__init__()
        self.encoder = Encoder(arch, prep, int(arch["latent_dim"]))
        self.decoder = Decoder(arch, prep, int(arch["latent_dim"]))
        self.loss = arch.get("loss", MSE)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.decoder(self.encoder(x))
        return out

    def embed(self, x: Tensor) -> Tensor:
        """The code of each row."""
        out: Tensor = self.encoder(x)
        return out

    def predict(self, x: Tensor) -> dict[str, Tensor]:
        """Reconstruction (model space) and its per-row error, as the model was trained:
        MSE in model space, or binary cross-entropy (mean per value)."""
        if self.loss == BCE:
            recon, error = self.cross_entropy(x, x)
            return {"reconstruction": recon, "reconstruction_error": error}
        recon = self(x)
        return {"reconstruction": recon,
                "reconstruction_error": flat_per_row((recon.float() - x) ** 2).mean(dim=1)}

    def cross_entropy(self, inputs: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """The reconstruction of inputs and its per-row binary cross-entropy against x, from
        the logits (stable, and safe under autocast)."""
        logits = self.decoder.logits(self.encoder(inputs)).float()
        bce = F.binary_cross_entropy_with_logits(logits, self.decoder.unit_targets(x.float()),
                                                 reduction="none")
        return self.decoder.finish(logits), flat_per_row(bce).mean(dim=1)


def build(arch: dict[str, Any], prep: Prep) -> AutoencoderNet:
    """The network of a saved or new model."""
    return AutoencoderNet(arch, prep)


class AutoencoderObjective(SingleLossObjective):
    """Reconstruction MSE or cross-entropy; with noise, of the clean input from a noisy one."""

    def __init__(self, net: AutoencoderNet, rt: Runtime, p: AutoencoderParams) -> None:
        super().__init__(net, rt, p)
        self.net, self.noise = net, p.noise

    def loss(self, xb: Tensor, *, training: bool) -> Tensor:
        inputs = xb + self.noise * self.rt.randn(*xb.shape) if training and self.noise else xb
        if self.net.loss == BCE:  # every row has as many values: the mean of the row means
            return self.net.cross_entropy(inputs, xb)[1].mean()
        return F.mse_loss(self.net(inputs).float(), xb)


def objective(net: AutoencoderNet, rt: Runtime, p: AutoencoderParams,
              prep: Prep) -> AutoencoderObjective:
    """The training objective of a new network."""
    return AutoencoderObjective(net, rt, p)
