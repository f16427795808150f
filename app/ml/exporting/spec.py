"""What an export is made of: its endpoints, their tensors, and the refusal of one it cannot be.

Plain data, no torch and no onnx: the HTTP layer maps ExportRefused to its problem, and the
builders (torchnets, sklearn_onnx) fill in Endpoints that preprocess.json and the model card
describe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ONNX = "onnx"
TORCHSCRIPT = "torchscript"
FORMATS = (ONNX, TORCHSCRIPT)
SUFFIX = {ONNX: "onnx", TORCHSCRIPT: "pt"}
BATCH = "batch"  # the name of the dynamic first axis in every shape we describe
PREPROCESS_FILE = "preprocess.json"
CARD_FILE = "README.md"
# How close an output is to the service's answer (|export - service| <= atol + atol * |service|):
# a network's float32 arithmetic differs from torch's in the last bits, which its layers grow to
# ~1e-6; a float64 scikit-learn graph to ~1e-13; pixels may round the other way at .5.
NETWORK_ATOL = 1e-4
FLOAT64_ATOL = 1e-8
PIXEL_ATOL = 1.0
EXACT = 0.0
TOLERANCE_RULE = ("each output's atol: |export - service| <= atol + atol * |service|, "
                  "elementwise; atol 0: equal")


class ExportRefused(Exception):
    """A model that cannot be exported in the asked format; names the formats it has."""

    def __init__(self, reason: str, supported: tuple[str, ...]) -> None:
        names = ", ".join(supported) if supported else "none"
        super().__init__(f"{reason}; formats this model exports to: {names}")
        self.reason = reason
        self.supported = supported


@dataclass(frozen=True)
class Port:
    """One input or output tensor of an exported file, and the answer field it stands for."""

    name: str  # the tensor's name in the file
    dtype: str  # numpy spelling: float32, float64, int64, uint8
    shape: list[Any]  # BATCH for the dynamic axis, "sequence" for a text's tokens, else ints
    answer: str | None = None  # the field of the service's JSON answer it equals (outputs)
    atol: float | None = None  # how close to that answer (outputs; see TOLERANCE_RULE)


@dataclass(frozen=True)
class Endpoint:
    """One service endpoint as an exported file: what goes in, what comes out."""

    name: str  # predict, embed or generate
    file: str
    inputs: list[Port]
    outputs: list[Port]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Export:
    """The files of an archive (name → bytes) and what preprocess.json says about them."""

    files: dict[str, bytes]
    endpoints: list[Endpoint]
    input: dict[str, Any]  # how a caller turns raw data into the first input tensor
    extra: dict[str, Any] = field(default_factory=dict)  # classes, noise, ... per model type
