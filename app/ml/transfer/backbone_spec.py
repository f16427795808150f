"""A transfer job's backbone: the spec config.json records to rebuild it, the input config,
the tokenizer of text models, and the backbone module with its starting weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from app.ml.base import BackboneRef
from app.ml.deep.model import read_config
from app.ml.deep.preprocess import IMAGE, TABULAR, Prep
from app.ml.transfer.backbones import ARCHITECTURES
from app.ml.transfer.model import (
    TEXT,
    TOKENIZER_FILE,
    Tokens,
    TransferModel,
    fresh_backbone,
    source_class,
)
from app.ml.transfer.nets import IMAGENET_MEAN, IMAGENET_STD, pretrained_named
from app.ml.transfer.params import TransferParams


def backbone_spec(ref: BackboneRef, p: TransferParams, kind: str, data: Any
                  ) -> tuple[dict[str, Any], dict[str, Any], Tokens | None]:
    """The backbone spec (what config.json records to rebuild it), the input config, and the
    tokenizer of text models."""
    if ref.source == "torchvision":
        size = p.image_size or ARCHITECTURES[ref.name].input_size or 224
        image = {"size": [size, size], "channels": 3, "mean": list(IMAGENET_MEAN),
                 "std": list(IMAGENET_STD)}
        return ({"source": "torchvision", "name": ref.name, "image": image,
                 "feature_layer": p.feature_layer or ARCHITECTURES[ref.name].feature_layer},
                {"kind": IMAGE, "shape": list(data.shape[1:])}, None)
    folder = Path(str(ref.path))
    if ref.source == "minilm":
        bert = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        tokens = Tokens(folder / TOKENIZER_FILE, p.max_length)
        return ({"source": "minilm", "name": ref.name, "bert": bert},
                {"kind": TEXT, "max_length": p.max_length}, tokens)
    source = read_config(folder)
    source.pop("metrics", None)  # the spec rebuilds the network; the scores stay with the model
    spec: dict[str, Any] = {"source": "model", "name": ref.name, "model_config": source,
                            "image": None}
    if source["algorithm"] == TransferModel.algorithm:  # a transfer source: its input carries over
        inner_input = source["input"]
        if kind == TEXT:
            return spec, {"kind": TEXT, "max_length": p.max_length}, Tokens(
                folder / TOKENIZER_FILE, p.max_length)
        if kind == IMAGE:
            spec["image"] = source["backbone"]["image"]
            return spec, {"kind": IMAGE, "shape": list(data.shape[1:])}, None
        _check_width(inner_input["shape"][0], data.shape[1], ref)
        return spec, {**inner_input}, None
    prep = Prep.from_json(source["preprocessing"])
    if kind == IMAGE:
        h, w, c = prep.shape
        if p.image_size and (p.image_size, p.image_size) != (h, w):
            raise ValueError(f"backbone {ref.spec} was trained on {h}x{w} images; its network "
                             f"takes only that size, not image_size={p.image_size}")
        spec["image"] = {"size": [h, w], "channels": c, "mean": list(prep.mean),
                         "std": list(prep.std)}
        return spec, {"kind": IMAGE, "shape": list(data.shape[1:])}, None
    _check_width(prep.shape[0], data.shape[1], ref)
    return spec, {"kind": TABULAR, "shape": [prep.shape[0]], "mean": list(prep.mean),
                  "std": list(prep.std)}, None


def _check_width(expected: int, got: int, ref: BackboneRef) -> None:
    if int(expected) != int(got):
        raise ValueError(f"backbone {ref.spec} takes rows of {expected} features; the job's "
                         f"features are {got}")


def starting_backbone(ref: BackboneRef, spec: dict[str, Any]) -> nn.Module:
    """The backbone of spec, with the pretrained weights ref points at (read-only, safe loads)
    or, for pretrained=false, random ones."""
    if not ref.pretrained:
        backbone: nn.Module = fresh_backbone(spec)[0]
        return backbone
    path = Path(str(ref.path))
    if spec["source"] != "model":
        return pretrained_named(spec, path)
    trained = source_class(spec["model_config"]["algorithm"]).load(path)
    encoder: nn.Module = trained.encoder()
    return encoder
