"""Torch models as exported graphs: each served part wrapped with its input and output stages.

The service standardises rows, turns uint8 pixels into the model's normalised space, and maps
reconstructions back to the caller's units; these wrappers do the same inside the graph, so an
exported file takes the raw rows (or decoded uint8 images, or token ids) the service takes and
answers what it answers. Exported with torch.onnx (the torch.export path: it handles the
antialiased resize of transfer image inputs, the legacy exporter does not) or torch.jit.trace.
"""

from __future__ import annotations

import copy
import inspect
import io
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from app.ml.base import EMBED, GENERATE, PREDICT, Trained
from app.ml.deep.model import SEED_SPACE, DeepModel
from app.ml.deep.preprocess import IMAGE, TABULAR, Prep
from app.ml.exporting.spec import (
    BATCH,
    NETWORK_ATOL,
    ONNX,
    PIXEL_ATOL,
    SUFFIX,
    Endpoint,
    Export,
    Port,
)
from app.ml.transfer.model import TEXT, TOKENIZER_FILE, TransferModel

SEQUENCE = "sequence"
EXAMPLE_ROWS = 2  # torch.export specialises a batch of one: trace with two rows


# ------------------------------------------------------------------- input and output stages


class RowsIn(nn.Module):
    """Raw float64 rows to model space as the service standardises them: (x - mean) / std in
    float64, then float32 (a feature in large units keeps its precision to the network)."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float64))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float64))

    def forward(self, rows: Tensor) -> Tensor:
        return ((rows.double() - self.mean) / self.std).float()


class RowsOut(RowsIn):
    """Model-space rows back in the training data's units, in float64 as the service answers."""

    def forward(self, rows: Tensor) -> Tensor:
        return rows.double() * self.std + self.mean


class PixelsIn(nn.Module):
    """uint8 NHWC images to model space: NCHW, / 255, per-channel (x - mean) / std."""

    mean: Tensor
    std: Tensor

    def __init__(self, prep: Prep) -> None:
        super().__init__()
        c = prep.shape[-1]
        self.register_buffer("mean", torch.tensor(prep.mean, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(prep.std, dtype=torch.float32).view(1, c, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return (images.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std


class PixelsOut(PixelsIn):
    """Model-space NCHW images back to uint8 NHWC pixels (rounded half to even, clipped)."""

    def forward(self, images: Tensor) -> Tensor:
        pixels = torch.round((images.float() * self.std + self.mean) * 255.0)
        return pixels.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


class NHWCtoNCHW(nn.Module):
    """uint8 NHWC as decoded to the NCHW a transfer network stores (it normalises itself)."""

    def forward(self, images: Tensor) -> Tensor:
        return images.permute(0, 3, 1, 2)


# ---------------------------------------------------------------------- the served parts


class Embed(nn.Module):
    """input stage → net.embed."""

    net: Any  # a family's network: its embed/predict/sample are not nn.Module's

    def __init__(self, stage: nn.Module, net: nn.Module) -> None:
        super().__init__()
        self.stage, self.net = stage, net

    def forward(self, *inputs: Tensor) -> Tensor:
        out: Tensor = self.net.embed(self.stage(*inputs)).float()
        return out


class Reconstruct(nn.Module):
    """input stage → net.predict: the reconstruction in the caller's units, then the scores."""

    net: Any  # a family's network: its embed/predict/sample are not nn.Module's

    def __init__(self, stage: nn.Module, net: nn.Module, back: nn.Module,
                 scores: tuple[str, ...]) -> None:
        super().__init__()
        self.stage, self.net, self.back, self.scores = stage, net, back, scores

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = self.net.predict(self.stage(x))
        return (self.back(out["reconstruction"]), *(out[k].float() for k in self.scores))


class Generate(nn.Module):
    """Latent noise → net.sample → the caller's units."""

    net: Any  # a family's network: its embed/predict/sample are not nn.Module's

    def __init__(self, net: nn.Module, back: nn.Module) -> None:
        super().__init__()
        self.net, self.back = net, back

    def forward(self, z: Tensor) -> Tensor:
        out: Tensor = self.back(self.net.sample(z))
        return out


class Classify(nn.Module):
    """input stage → transfer net → softmax: the service's probabilities."""

    def __init__(self, stage: nn.Module, net: nn.Module) -> None:
        super().__init__()
        self.stage, self.net = stage, net

    def forward(self, *inputs: Tensor) -> Tensor:
        return torch.softmax(self.net(self.stage(*inputs)).float(), dim=1)


class Regress(nn.Module):
    """input stage → transfer net → the value in the target's units (float64, as served)."""

    def __init__(self, stage: nn.Module, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.stage, self.net, self.mean, self.std = stage, net, mean, std

    def forward(self, *inputs: Tensor) -> Tensor:
        out: Tensor = self.net(self.stage(*inputs)).double()[:, 0] * self.std + self.mean
        return out


class Tokens(nn.Module):
    """input_ids and attention_mask as the (n, 2, L) the MiniLM backbone reads."""

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return torch.stack([input_ids, attention_mask], dim=1)


# --------------------------------------------------------------------------- writing files


def onnx_bytes(module: nn.Module, examples: tuple[Tensor, ...], inputs: list[Port],
               outputs: list[Port]) -> bytes:
    """module as one ONNX file whose batch (and token) axes are dynamic."""
    batch = torch.export.Dim("batch", min=1)
    sequence = torch.export.Dim("sequence", min=1)
    shapes = tuple({i: batch if d == BATCH else sequence for i, d in enumerate(p.shape)
                    if d in (BATCH, SEQUENCE)} for p in inputs)
    dynamic: tuple[Any, ...] = shapes
    if _takes_varargs(module):  # forward(*inputs): torch.export sees one tuple argument
        dynamic = (shapes,)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        torch.onnx.export(module, examples, str(path), dynamo=True, external_data=False,
                          input_names=[p.name for p in inputs],
                          output_names=[p.name for p in outputs],
                          dynamic_shapes=dynamic, verbose=False)
        return path.read_bytes()


def _takes_varargs(module: nn.Module) -> bool:
    params = inspect.signature(module.forward).parameters.values()
    return any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)


def torchscript_bytes(module: nn.Module, examples: tuple[Tensor, ...]) -> bytes:
    """module traced with torch.jit on examples, saved."""
    # A copy without gradients: the loaded module answers tensors a caller can .numpy() at
    # once, and the model being exported keeps its own parameters as they were.
    frozen = copy.deepcopy(module).requires_grad_(False)
    traced = torch.jit.trace(  # type: ignore[no-untyped-call]  # torch.jit.trace is unannotated
        frozen, examples, check_trace=False)
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    return buf.getvalue()


def _file(fmt: str, module: nn.Module, examples: tuple[Tensor, ...], inputs: list[Port],
          outputs: list[Port]) -> bytes:
    module.eval()
    with torch.no_grad():
        if fmt == ONNX:
            return onnx_bytes(module, examples, inputs, outputs)
        return torchscript_bytes(module, examples)


def _width(module: nn.Module, examples: tuple[Tensor, ...]) -> int:
    """Values per row of what module answers."""
    with torch.no_grad():
        return int(module.eval()(*examples).shape[1])


def _answers(trained: Trained) -> list[str]:
    """The endpoints a trained model answers: the methods its class gives an answer to."""
    return [name for name in (PREDICT, EMBED, GENERATE)
            if getattr(type(trained), name) is not getattr(Trained, name)]


# ---------------------------------------------------------------------- self-supervised


def _deep_input(prep: Prep) -> tuple[nn.Module, Port, Tensor, dict[str, Any]]:
    """The input stage, its port, an example and what preprocess.json says of a deep model."""
    if prep.kind == TABULAR:
        port = Port("rows", "float64", [BATCH, prep.shape[0]])
        example = torch.zeros(EXAMPLE_ROWS, prep.shape[0], dtype=torch.float64)
        return RowsIn(prep.mean, prep.std), port, example, rows_input(prep.mean, prep.std)
    h, w, c = prep.shape
    port = Port("images", "uint8", [BATCH, h, w, c])
    example = torch.zeros(EXAMPLE_ROWS, h, w, c, dtype=torch.uint8)
    in_graph = ["NHWC to NCHW", "x / 255", (f"per-channel (x - mean) / std, mean {list(prep.mean)}, "
                f"std {list(prep.std)}")]
    return PixelsIn(prep), port, example, image_input(h, w, c, in_graph)


def rows_input(mean: Sequence[float], std: Sequence[float]) -> dict[str, Any]:
    """preprocess.json's input of a model that takes raw numeric rows."""
    return {"kind": TABULAR, "dtype": "float64", "layout": "rows (batch, features), the "
            "features in the order of the model's input_schema",
            "in_graph": [("standardisation (x - mean) / std in float64, then float32 for the "
                         "network")],
            "mean": list(mean), "std": list(std)}


def image_input(height: int, width: int, channels: int, in_graph: list[str]) -> dict[str, Any]:
    """preprocess.json's input of an image model: how the service decodes a PNG/JPEG."""
    return {
        "kind": IMAGE, "dtype": "uint8", "layout": "NHWC", "height": height, "width": width,
        "channels": channels, "channel_order": "L (gray)" if channels == 1 else "RGB",
        "decode": [
            "open the PNG/JPEG with Pillow (EXIF orientation is not applied)",
            "16-bit gray is scaled to 8 bits (>> 8)",
            "transparency (RGBA, LA, PA, or tRNS) is composited onto white",
            f"convert to mode {'L' if channels == 1 else 'RGB'}",
            (f"resize to {width}x{height} (width x height) with Pillow's BILINEAR if the size "
            "differs"),
            (f"numpy uint8 array (height, width, channels) = ({height}, {width}, {channels}); "
            "stack the images on a first batch axis")],
        "in_graph": in_graph}


def _deep_back(prep: Prep) -> tuple[nn.Module, str, list[Any], float]:
    """The output stage of reconstructions and samples: its dtype, per-row shape, tolerance."""
    if prep.kind == TABULAR:
        return RowsOut(prep.mean, prep.std), "float64", [prep.shape[0]], NETWORK_ATOL
    return PixelsOut(prep), "uint8", list(prep.shape), PIXEL_ATOL


@dataclass(frozen=True)
class Served:
    """One endpoint: the module that answers it, the inputs it is traced on, its description."""

    module: nn.Module
    examples: tuple[Tensor, ...]
    endpoint: Endpoint


def _written(fmt: str, served: list[Served]) -> dict[str, bytes]:
    """Each served endpoint's file in fmt."""
    return {p.endpoint.file: _file(fmt, p.module, p.examples, p.endpoint.inputs,
                                   p.endpoint.outputs) for p in served}


@dataclass(frozen=True)
class DeepStages:
    """A self-supervised network with its input stage and its output stage (rows or pixels)."""

    net: Any
    stage: nn.Module
    port: Port
    example: Tensor
    back: nn.Module
    out: Port  # the reconstruction / sample output, per row


def _deep_stages(trained: DeepModel) -> tuple[DeepStages, dict[str, Any]]:
    """The stages of a trained network, and what preprocess.json says of its input."""
    stage, port, example, described = _deep_input(trained.prep)
    back, dtype, shape, atol = _deep_back(trained.prep)
    stages = DeepStages(trained.net.cpu().eval(), stage, port, example, back,
                        Port("", dtype, [BATCH, *shape], None, atol))
    return stages, described


def _deep_embed(s: DeepStages, file: str, scored: tuple[str, ...]) -> Served:
    module = Embed(s.stage, s.net)
    dim = _width(module, (s.example,))
    return Served(module, (s.example,), Endpoint(EMBED, file, [s.port], [
        Port("embeddings", "float32", [BATCH, dim], "embeddings", NETWORK_ATOL)]))


def _deep_predict(s: DeepStages, file: str, scored: tuple[str, ...]) -> Served:
    outs = [replace(s.out, name="predictions", answer="predictions"),
            *(Port(k, "float32", [BATCH], k, NETWORK_ATOL) for k in scored)]
    notes = [("image reconstructions come as uint8 NHWC pixels; the JSON answer holds the same "
              "pixels as nested lists")] if s.out.dtype == "uint8" else []
    return Served(Reconstruct(s.stage, s.net, s.back, scored), (s.example,),
                  Endpoint(PREDICT, file, [s.port], outs, notes))


def _deep_generate(s: DeepStages, file: str, scored: tuple[str, ...]) -> Served:
    latent = int(s.net.latent_dim)
    notes = [("images come as uint8 NHWC pixels; the service answers each as {\"b64\": PNG of "
              "those pixels}")] if s.out.dtype == "uint8" else []
    return Served(Generate(s.net, s.back), (torch.zeros(EXAMPLE_ROWS, latent),),
                  Endpoint(GENERATE, file, [Port("z", "float32", [BATCH, latent])],
                           [replace(s.out, name="samples", answer="samples")], notes))


DEEP_ENDPOINTS = {EMBED: _deep_embed, PREDICT: _deep_predict, GENERATE: _deep_generate}


def deep(trained: DeepModel, fmt: str) -> Export:
    """Every endpoint of a self-supervised model as one file each."""
    stages, described = _deep_stages(trained)
    served = [DEEP_ENDPOINTS[name](stages, f"{name}.{SUFFIX[fmt]}", trained.scored)
              for name in _answers(trained)]
    extra = {"noise": noise(int(stages.net.latent_dim))} if GENERATE in _answers(trained) else {}
    return Export(_written(fmt, served), [p.endpoint for p in served], described, extra)


def noise(latent_dim: int) -> dict[str, Any]:
    """How POST /v1/models/{id}/generate draws the latent noise it decodes."""
    return {
        "input": "z", "latent_dim": latent_dim, "distribution": "standard normal N(0, I)",
        "service_draws": ("gen = torch.Generator(device='cpu').manual_seed(seed % "
                          f"{SEED_SPACE}); z = torch.randn(n, {latent_dim}, generator=gen) "
                          "(without a seed: a random 63-bit one)"),
    }


# ----------------------------------------------------------------------------- transfer


def _transfer_input(trained: TransferModel) -> tuple[nn.Module, list[Port], tuple[Tensor, ...],
                                                      dict[str, Any]]:
    """The input stage, ports, examples and preprocess.json input of a transfer model."""
    inp = trained.config["input"]
    if trained.kind == TABULAR:
        width = int(inp["shape"][0])
        return (RowsIn(inp["mean"], inp["std"]), [Port("rows", "float64", [BATCH, width])],
                (torch.zeros(EXAMPLE_ROWS, width, dtype=torch.float64),),
                rows_input(inp["mean"], inp["std"]))
    if trained.kind == TEXT:
        ids = [Port("input_ids", "int64", [BATCH, SEQUENCE]),
               Port("attention_mask", "int64", [BATCH, SEQUENCE])]
        example = torch.ones(EXAMPLE_ROWS, 4, dtype=torch.int64)
        return Tokens(), ids, (example, example.clone()), text_input(int(inp["max_length"]))
    h, w, c = (int(v) for v in inp["shape"])
    spec = trained.config["backbone"].get("image") or {}
    in_graph = ["NHWC to NCHW", "x / 255",
                (f"channels adapted to the backbone's {spec.get('channels')} (gray repeated, "
                "alpha dropped, colour to BT.601 luma for a gray backbone)"),
                (f"resized to {spec.get('size')} (bilinear, antialiased, as torch's "
                "F.interpolate(..., antialias=True)) if it differs"),
                f"per-channel (x - mean) / std, mean {spec.get('mean')}, std {spec.get('std')}"]
    example = torch.zeros(EXAMPLE_ROWS, h, w, c, dtype=torch.uint8)
    return (NHWCtoNCHW(), [Port("images", "uint8", [BATCH, h, w, c])], (example,),
            image_input(h, w, c, in_graph))


def text_input(max_length: int) -> dict[str, Any]:
    """preprocess.json's input of a MiniLM text model."""
    return {
        "kind": TEXT, "tokenizer": TOKENIZER_FILE, "max_length": max_length,
        "tokenize": [
            "tokenizers.Tokenizer.from_file('tokenizer.json')",
            f"enable_truncation(max_length={max_length})",
            "enable_padding(pad_id=0, pad_token='[PAD]') (pads to the longest text of the batch)",
            ("encode_batch(texts): input_ids = [e.ids], attention_mask = [e.attention_mask], "
            "both int64 (batch, sequence)")],
        "in_graph": ["BERT (all-MiniLM-L6-v2)", "mean pooling over the attention mask",
                     "L2 normalisation", "the trained head"]}


def _transfer_predict(trained: TransferModel, stage: nn.Module, ports: list[Port],
                      examples: tuple[Tensor, ...], file: str) -> tuple[Served, dict[str, Any]]:
    """The head's answer: probabilities (with the classes for preprocess.json), or values."""
    net, task = trained.net, trained.task
    if task["head"] == "regression":
        module: nn.Module = Regress(stage, net, float(task["target_mean"]),
                                    float(task["target_std"]))
        return Served(module, examples, Endpoint(PREDICT, file, ports, [
            Port("predictions", "float64", [BATCH], "predictions", NETWORK_ATOL)],
            ["predictions: the value in the target's units"])), {}
    classes = list(task.get("class_values") or task.get("classes") or [])
    return Served(Classify(stage, net), examples, Endpoint(PREDICT, file, ports, [
        Port("probabilities", "float32", [BATCH, len(classes)], "probabilities", NETWORK_ATOL)],
        ["predictions = classes[argmax(probabilities)] (classes in preprocess.json)"])), {
        "classes": classes}


def transfer(trained: TransferModel, fmt: str) -> Export:
    """predict (probabilities, or values) and embed of a transfer model, one file each."""
    trained.net.cpu().eval()
    stage, ports, examples, described = _transfer_input(trained)
    predict, extra = _transfer_predict(trained, stage, ports, examples,
                                       f"{PREDICT}.{SUFFIX[fmt]}")
    body = Embed(stage, trained.net)
    embed = Served(body, examples, Endpoint(EMBED, f"{EMBED}.{SUFFIX[fmt]}", ports, [
        Port("embeddings", "float32", [BATCH, _width(body, examples)], "embeddings",
             NETWORK_ATOL)]))
    files = _written(fmt, [predict, embed])
    if trained.tokens is not None:
        files[TOKENIZER_FILE] = trained.tokens.path.read_bytes()
    return Export(files, [predict.endpoint, embed.endpoint], described,
                  {"task": trained.task, **extra})
