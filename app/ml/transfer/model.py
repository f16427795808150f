"""A trained transfer model: input checks, predict (labels + probabilities, or values), embed
(backbone features), save and load.

Torch-free at import. Saved as config.json (params, task, input, backbone spec, head, metrics)
+ weights.safetensors (every weight, backbone included) + tokenizer.json for text models; load
rebuilds the network from the config: nothing is unpickled and no outside file is needed.
A backbone taken from another model trained here is rebuilt by that model's own class
(build_net, then encoder_of): this module names no other algorithm.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from app.ml.base import InputError, Trained
from app.ml.classes import indices_of
from app.ml.deep import MODELS, DeepModel
from app.ml.deep.model import read_network, write_network
from app.ml.deep.preprocess import (
    IMAGE,
    TABULAR,
    Prep,
    request_images,
    request_rows,
    standardize_rows,
    to_nchw,
)
from app.ml.scores import classification_scores, regression_scores

TOKENIZER_FILE = "tokenizer.json"
TEXT = "text"
CHUNK_ROWS = 256
MAX_TEXT_CHARS = 100_000


class Tokens:
    """Texts as (n, 2, L) int64 token ids + attention mask, with the backbone's tokenizer."""

    def __init__(self, tokenizer_json: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.path = Path(tokenizer_json)
        self.tok = Tokenizer.from_file(str(self.path))
        self.tok.enable_truncation(max_length=max_length)
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")
        self.max_length = max_length

    def __call__(self, texts: list[str]) -> np.ndarray:
        enc = self.tok.encode_batch(list(texts))
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        return np.stack([ids, mask], axis=1)


def request_texts(x: Any) -> list[str]:
    """Texts of a predict/embed request: a list of strings, each at most MAX_TEXT_CHARS."""
    values = list(x.tolist() if isinstance(x, np.ndarray) else x)
    if not values:
        raise InputError("expected at least one text, got none")
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise InputError(f"instances[{i}] must be a string (the text), got {type(v).__name__}")
        if len(v) > MAX_TEXT_CHARS:
            raise InputError(f"instances[{i}] has {len(v)} characters; at most {MAX_TEXT_CHARS}")
    return values


def _input_prep(inp: dict[str, Any]) -> Prep | None:
    """The checks (and, for rows, the standardization) of a model's input; None for text."""
    shape = tuple(int(v) for v in inp.get("shape", ()))
    if inp["kind"] == TABULAR:
        return Prep(kind=TABULAR, shape=shape, mean=tuple(inp["mean"]), std=tuple(inp["std"]))
    if inp["kind"] == IMAGE:  # pixels go to the network as uint8; it normalises them itself
        return Prep(kind=IMAGE, shape=shape, mean=(0.0,) * shape[-1], std=(1.0,) * shape[-1])
    return None


class TransferModel(Trained):
    """A backbone + head trained on labels: predicts classes or values, embeds features."""

    algorithm: ClassVar[str] = "transfer"
    batchable: ClassVar[bool] = True
    trains_in_epochs: ClassVar[bool] = True

    def __init__(self, *, config: dict[str, Any], net: Any, tokens: Tokens | None = None) -> None:
        self.config = config
        self.metrics: dict[str, Any] = config.get("metrics", {})
        self.net = net.eval()
        self.tokens = tokens
        self.device = str(next(net.parameters()).device)
        self.kind = config["input"]["kind"]
        self.prep = _input_prep(config["input"])

    @property
    def task(self) -> dict[str, Any]:
        """{"head": "classification", "classes", "class_values"} or {"head": "regression",
        "target_mean", "target_std"}."""
        task: dict[str, Any] = self.config["task"]
        return task

    @property
    def classes(self) -> list[str]:
        return list(self.task.get("classes") or [])

    def to(self, device: str) -> Self:
        """Move the network to device; call before serving, not during."""
        self.net.to(device)
        self.device = device
        return self

    # ---- inference -------------------------------------------------------------------------

    def _chunks(self, x: Any) -> list[np.ndarray]:
        """A request's instances, checked once, as the network's stored input in chunks."""
        if self.kind == TEXT:  # tokenized chunk by chunk: padded only to each chunk's longest
            assert self.tokens is not None
            texts = request_texts(x)
            return [self.tokens(texts[i:i + CHUNK_ROWS]) for i in range(0, len(texts), CHUNK_ROWS)]
        assert self.prep is not None
        if self.kind == TABULAR:
            arr = standardize_rows(request_rows(x, self.prep), self.prep)
        else:
            arr = to_nchw(request_images(x, self.prep))
        return [arr[i:i + CHUNK_ROWS] for i in range(0, len(arr), CHUNK_ROWS)]

    def _run(self, x: Any, fn: Any) -> np.ndarray:
        import torch

        with torch.inference_mode():
            parts = [fn(torch.from_numpy(a).to(self.device)).float().cpu().numpy()
                     for a in self._chunks(x)]
        return np.concatenate(parts)

    def logits(self, x: Any) -> np.ndarray:
        """Raw head outputs (n, classes) or (n, 1)."""
        return self._run(x, self.net)

    def predict(self, x: Any) -> dict[str, Any]:
        """Classification: {"predictions": the labels as the training data had them,
        "probabilities": one per class, in the order of the model's classes};
        regression: {"predictions": values}."""
        out = self.logits(x)
        if self.task["head"] == "regression":
            values = out[:, 0].astype(np.float64) * self.task["target_std"] + self.task["target_mean"]
            return {"predictions": values.tolist()}
        shifted = np.exp(out - out.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        values = self.task.get("class_values") or self.classes
        return {"predictions": [values[i] for i in probs.argmax(axis=1)],
                "probabilities": probs.astype(np.float64).tolist()}

    def evaluate(self, x: Any, y: np.ndarray | None) -> dict[str, Any]:
        """Classification: accuracy, macro F1, log loss; regression: RMSE, MAE, R² (in the
        target's units) of predict on x against the labels y."""
        if y is None:
            raise InputError("scoring a transfer model needs the labels: name the label "
                             "column in target")
        labels = np.asarray(y).tolist()
        if len(labels) != len(x):
            raise InputError(f"{len(labels)} labels for {len(x)} rows")
        answer = self.predict(x)
        if self.task["head"] == "regression":
            try:
                true = np.asarray(labels, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise InputError("a regression model is scored on a numeric target") from exc
            return regression_scores(true, np.asarray(answer["predictions"]))
        return classification_scores(indices_of(labels, self.classes),
                                     np.asarray(answer["probabilities"]))

    def embed(self, x: Any) -> np.ndarray:
        """The backbone's features of each instance (n, features_dim), float32."""
        return self._run(x, self.net.embed).astype(np.float32, copy=False)

    # ---- save / load -----------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """config.json, weights.safetensors and (text) tokenizer.json into directory."""
        write_network(Path(directory), self.config, self.algorithm, self.metrics, self.net)
        if self.tokens is not None:
            shutil.copyfile(self.tokens.path, Path(directory) / TOKENIZER_FILE)

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Rebuild the network from config.json and read its weights (on CPU)."""
        directory = Path(directory)
        config, net = read_network(directory, cls.algorithm, cls.build_net)
        tokens = None
        if config["input"]["kind"] == TEXT:
            tokens = Tokens(directory / TOKENIZER_FILE, int(config["input"]["max_length"]))
        return cls(config=config, net=net, tokens=tokens)

    @classmethod
    def build_net(cls, config: dict[str, Any]) -> Any:
        """A fresh (untrained) network of a saved config: input stage, backbone and head."""
        from app.ml.transfer.nets import TransferNet

        backbone, image = fresh_backbone(config["backbone"])
        return TransferNet(backbone, image, config["head"])

    # ---- as a transfer backbone itself -----------------------------------------------------

    @classmethod
    def encoder_of(cls, net: Any) -> Any:
        """The backbone inside a transfer network: what embed() runs."""
        return net.backbone

    def encoder(self) -> Any:
        """This model's backbone, with its trained weights."""
        return self.encoder_of(self.net)


# The models trained here that a transfer job can take an encoder from, each rebuilding its
# own network and knowing its own encoder.
ENCODER_SOURCES: tuple[type[DeepModel | TransferModel], ...] = (*MODELS, TransferModel)
# Their algorithms: the models a `model:<id>` backbone may name.
ENCODER_ALGORITHMS = tuple(cls.algorithm for cls in ENCODER_SOURCES)


def source_class(algorithm: str) -> type[DeepModel | TransferModel]:
    """The trained-model class of a backbone's source model; ValueError if it has no encoder."""
    for cls in ENCODER_SOURCES:
        if cls.algorithm == algorithm:
            return cls
    raise ValueError(f"a {algorithm} model has no encoder to transfer from")


def fresh_backbone(spec: dict[str, Any]) -> tuple[Any, Any]:
    """A backbone (random weights) and its image input stage (or None) from a recorded spec."""
    from app.ml.transfer.nets import ImageInput, named_backbone

    if spec["source"] != "model":
        return named_backbone(spec)
    inner = spec["model_config"]
    cls = source_class(inner["algorithm"])
    image = ImageInput(spec["image"]) if spec.get("image") else None
    return cls.encoder_of(cls.build_net(inner)), image
