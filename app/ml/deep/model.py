"""Trained models of the family: input checks, inference, generation, save and load.

Importing this module loads no torch (the catalogue names these classes); torch comes in when
a model is built, loaded or asked something. Saved as config.json (algorithm, params, data,
preprocessing, architecture, metrics) + weights.safetensors; load rebuilds the network from
the config and reads the weights with safetensors: nothing is unpickled.

Serving: the network is put in eval mode once; predict/embed/generate run under
torch.inference_mode() with no shared mutable state, so several threads may call them at once.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from app.ml.artifacts import UnsafeArtifact
from app.ml.base import InputError, Trained
from app.ml.deep.preprocess import (
    IMAGE,
    TABULAR,
    Prep,
    model_space_to_uint8,
    request_input,
    standardize_rows,
    to_nchw,
    unstandardize_rows,
)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT = 1
# Rows per inference chunk: about this many input values, between the two bounds.
CHUNK_VALUES = 2**22
CHUNK_ROWS = (16, 4096)
MAX_GENERATE = 100_000
SEED_SPACE = 2**64


def _torch() -> Any:
    import torch

    return torch


class DeepModel(Trained):
    """A trained network of the family plus what it needs to answer: preprocessing and config."""

    net_module: ClassVar[str]  # the torch module with build(arch, prep)
    scored: ClassVar[tuple[str, ...]] = ()  # per-row outputs of predict that evaluate averages
    batchable: ClassVar[bool] = True
    trains_in_epochs: ClassVar[bool] = True

    def __init__(self, *, config: dict[str, Any], net: Any) -> None:
        self.config = config
        self.metrics: dict[str, Any] = config.get("metrics", {})
        self.prep = Prep.from_json(config["preprocessing"])
        self.net = net.eval()
        self.device = "cpu"
        self._norm: Any = None
        self.to(str(next(net.parameters()).device))

    # ---- what the service reads about the model -------------------------------------------

    @property
    def data_kind(self) -> str:
        """'tabular' or 'image'."""
        return self.prep.kind

    @property
    def input_shape(self) -> list[int]:
        """[n_features] for rows, [height, width, channels] for images."""
        return list(self.prep.shape)

    @property
    def n_features_in(self) -> int:
        """Values per input row (h*w*c for images)."""
        return self.prep.n_features

    @property
    def dtype(self) -> str:
        """The input dtype requests are cast to: float32 rows, uint8 images."""
        return "float32" if self.prep.kind == TABULAR else "uint8"

    # ---- inference -------------------------------------------------------------------------

    def to(self, device: str) -> Self:
        """Move the network to device ('cpu' or 'cuda'); call before serving, not during."""
        from app.ml.deep.nets import Normalize

        self.net.to(device)
        self.device = device
        self._norm = Normalize(self.prep).to(device) if self.prep.kind == IMAGE else None
        return self

    def _chunk_rows(self) -> int:
        lo, hi = CHUNK_ROWS
        return max(lo, min(hi, CHUNK_VALUES // max(1, self.prep.n_features)))

    def _model_space(self, part: np.ndarray) -> Any:
        torch = _torch()
        if self.prep.kind == TABULAR:
            return torch.from_numpy(standardize_rows(part, self.prep)).to(self.device)
        from app.ml.deep.nets import images_to_model_space

        nchw = torch.from_numpy(to_nchw(part)).to(self.device)
        return images_to_model_space(nchw, self._norm)

    def _infer(self, x: Any, fn: Callable[[Any], Any]) -> list[Any]:
        """fn(model-space batch) of each chunk of the checked input, under inference_mode."""
        torch = _torch()
        arr = request_input(x, self.prep)
        step = self._chunk_rows()
        with torch.inference_mode():
            return [fn(self._model_space(arr[i:i + step])) for i in range(0, len(arr), step)]

    def _embed(self, x: Any) -> np.ndarray:
        parts = self._infer(x, lambda t: self.net.embed(t).float().cpu().numpy())
        return np.concatenate(parts).astype(np.float32, copy=False)

    def outputs(self, x: Any, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Chosen outputs of net.predict as numpy arrays, one row per input row."""
        def pick(t: Any) -> dict[str, np.ndarray]:
            out = self.net.predict(t)
            return {k: out[k].float().cpu().numpy() for k in keys}
        parts = self._infer(x, pick)
        return {k: np.concatenate([p[k] for p in parts]) for k in keys}

    def evaluate(self, x: Any, y: np.ndarray | None) -> dict[str, Any]:
        """The mean of each per-row score of predict (reconstruction error, negative ELBO)."""
        if not self.scored:
            return super().evaluate(x, y)
        return {k: float(v.astype(np.float64).mean())
                for k, v in self.outputs(x, self.scored).items()}

    def _predict(self, x: Any, scores: tuple[str, ...]) -> dict[str, Any]:
        out = self.outputs(x, ("reconstruction", *scores))
        result: dict[str, Any] = {"predictions": self._samples(out.pop("reconstruction"))}
        result.update({k: [float(v) for v in values] for k, values in out.items()})
        return result

    def _samples(self, values: np.ndarray) -> list[Any]:
        """Model-space outputs as the service answers them: rows, or uint8 HxWxC images."""
        if self.prep.kind == TABULAR:
            rows: list[Any] = unstandardize_rows(values, self.prep).tolist()
            return rows
        images: list[Any] = model_space_to_uint8(values, self.prep).tolist()
        return images

    def _generate(self, n: int, seed: int | None) -> list[Any]:
        torch = _torch()
        if not 1 <= int(n) <= MAX_GENERATE:
            raise InputError(f"n must be between 1 and {MAX_GENERATE}, got {n}")
        seed = secrets.randbits(63) if seed is None else int(seed) % SEED_SPACE
        gen = torch.Generator(device="cpu").manual_seed(seed)
        z = torch.randn(int(n), self.net.latent_dim, generator=gen)
        step = self._chunk_rows()
        with torch.inference_mode():
            parts = [self.net.sample(z[i:i + step].to(self.device)).float().cpu().numpy()
                     for i in range(0, int(n), step)]
        values = np.concatenate(parts)
        if self.prep.kind == TABULAR:
            return self._samples(values)
        return [{"b64": png_b64(img)} for img in model_space_to_uint8(values, self.prep)]

    # ---- save / load -----------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write config.json and weights.safetensors into directory."""
        write_network(Path(directory), self.config, self.algorithm, self.metrics, self.net)

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Rebuild the network from config.json and read its weights (on CPU)."""
        config, net = read_network(Path(directory), cls.algorithm, cls.build_net)
        return cls(config=config, net=net)

    @classmethod
    def build_net(cls, config: dict[str, Any]) -> Any:
        """A fresh (untrained) network of the recorded architecture."""
        module = importlib.import_module(cls.net_module)
        return module.build(config["architecture"], Prep.from_json(config["preprocessing"]))

    # ---- as a transfer backbone ------------------------------------------------------------

    @classmethod
    def encoder_of(cls, net: Any) -> Any:
        """The part of a network of this class that embed() runs, as a transfer backbone (a
        torch module with features_dim and blocks()); by default the network's encoder."""
        from app.ml.deep.nets import EncoderBackbone

        return EncoderBackbone(net.encoder, int(net.encoder.out.out_features))

    def encoder(self) -> Any:
        """This model's encoder, with its trained weights, as a transfer backbone."""
        return self.encoder_of(self.net)


def write_network(directory: Path, config: dict[str, Any], algorithm: str,
                  metrics: dict[str, Any], net: Any) -> None:
    """config.json (with format, algorithm and metrics) and weights.safetensors of a network."""
    from safetensors.torch import save_file

    config = {**config, "format": FORMAT, "algorithm": algorithm, "metrics": metrics}
    text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False)
    (directory / CONFIG_FILE).write_text(text, encoding="utf-8")
    # Own contiguous CPU copies: safetensors refuses views that share storage.
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"algorithm": algorithm})


def read_network(directory: Path, algorithm: str,
                 build: Callable[[dict[str, Any]], Any]) -> tuple[dict[str, Any], Any]:
    """(config, network) of what write_network saved: built from the config, weights strict."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = read_config(directory)
    if config.get("algorithm") != algorithm:
        raise UnsafeArtifact(f"{directory} holds a {config.get('algorithm')!r} model, "
                             f"not {algorithm!r}")
    try:
        net = build(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise UnsafeArtifact(f"{CONFIG_FILE} in {directory} does not describe a "
                             f"{algorithm} network: {exc!r}") from exc
    try:
        net.load_state_dict(load_file(str(directory / WEIGHTS_FILE), device="cpu"), strict=True)
    except (OSError, RuntimeError, ValueError, SafetensorError) as exc:
        raise UnsafeArtifact(f"cannot load {WEIGHTS_FILE} in {directory}: {exc}") from exc
    return config, net


def read_config(directory: Path) -> dict[str, Any]:
    """config.json of a saved model, format-checked."""
    path = Path(directory) / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UnsafeArtifact(f"cannot read {CONFIG_FILE} in {directory}: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise UnsafeArtifact(f"{CONFIG_FILE} in {directory} is not format {FORMAT}")
    return config


def png_b64(image: np.ndarray) -> str:
    """A uint8 HxWxC image (C 1, 3 or 4) as base64 PNG."""
    from PIL import Image

    c = image.shape[-1]  # Pillow picks L, RGB or RGBA from the shape of uint8 data
    pil = Image.fromarray(np.ascontiguousarray(image[:, :, 0] if c == 1 else image))
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class AutoencoderModel(DeepModel):
    """A trained autoencoder: embed gives the code, predict the reconstruction and its error."""

    algorithm: ClassVar[str] = "autoencoder"
    net_module: ClassVar[str] = "app.ml.deep.autoencoder"
    scored: ClassVar[tuple[str, ...]] = ("reconstruction_error",)

    def predict(self, x: np.ndarray) -> dict[str, Any]:
        """{"predictions": reconstructions (rows, or HxWxC uint8 images as nested lists),
        "reconstruction_error": per-row MSE in the model's normalised space}."""
        return self._predict(x, ("reconstruction_error",))

    def embed(self, x: np.ndarray) -> np.ndarray:
        """The code of each row (n, latent_dim), float32."""
        return self._embed(x)


class VAEModel(DeepModel):
    """A trained VAE: embed gives the posterior mean, generate decodes prior draws."""

    algorithm: ClassVar[str] = "vae"
    net_module: ClassVar[str] = "app.ml.deep.vae"
    scored: ClassVar[tuple[str, ...]] = ("reconstruction_error", "negative_elbo")

    def predict(self, x: np.ndarray) -> dict[str, Any]:
        """Reconstructions plus per-row "reconstruction_error" and "negative_elbo"."""
        return self._predict(x, ("reconstruction_error", "negative_elbo"))

    def embed(self, x: np.ndarray) -> np.ndarray:
        """The posterior mean of each row (n, latent_dim), float32."""
        return self._embed(x)

    def generate(self, n: int, seed: int | None) -> list[Any]:
        """n samples of the prior, decoded: rows as lists, or images as {"b64": PNG}."""
        return self._generate(n, seed)

    @classmethod
    def encoder_of(cls, net: Any) -> Any:
        """The posterior mean, as embed() gives it."""
        from app.ml.deep.nets import PosteriorMean

        return PosteriorMean(net.encoder, int(net.latent_dim))


class ContrastiveModel(DeepModel):
    """A trained contrastive encoder: embed only."""

    algorithm: ClassVar[str] = "contrastive"
    net_module: ClassVar[str] = "app.ml.deep.contrastive"

    def embed(self, x: np.ndarray) -> np.ndarray:
        """The encoder output of each row (n, embedding_dim), float32."""
        return self._embed(x)


class GANModel(DeepModel):
    """A trained GAN: generate from noise; embed with the discriminator's features."""

    algorithm: ClassVar[str] = "gan"
    net_module: ClassVar[str] = "app.ml.deep.gan"

    def embed(self, x: np.ndarray) -> np.ndarray:
        """The discriminator's penultimate features (n, hidden_dims[-1]), float32."""
        return self._embed(x)

    def generate(self, n: int, seed: int | None) -> list[Any]:
        """n generated samples: rows as lists, or images as {"b64": PNG}."""
        return self._generate(n, seed)

    @classmethod
    def encoder_of(cls, net: Any) -> Any:
        """The discriminator's penultimate features, as embed() gives them."""
        from app.ml.deep.nets import TrunkFeatures

        return TrunkFeatures(net.discriminator, int(net.discriminator.features_dim))
