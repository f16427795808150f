"""Export a trained model to ONNX or TorchScript, with what an outside user needs to reproduce
the service's answers: one file per endpoint, preprocess.json and a model card, in a ZIP.

Torch and skl2onnx load only when an export is built (the API imports this module to map its
errors and to say which formats a model has).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from app.ml.base import Trained
from app.ml.deep.model import DeepModel
from app.ml.exporting.card import model_card
from app.ml.exporting.spec import (
    CARD_FILE,
    FORMATS,
    ONNX,
    PREPROCESS_FILE,
    TOLERANCE_RULE,
    TORCHSCRIPT,
    Export,
    ExportRefused,
)
from app.ml.transfer.model import TransferModel
from app.ml.unsupervised._common import UnsupervisedModel
from app.ml.unsupervised.dbscan import DBSCANModel

__all__ = ["FORMATS", "ONNX", "TORCHSCRIPT", "ExportRefused", "build", "formats", "refusal"]

# Why a scikit-learn model without a converter has no export (by the class that answers).
WHY_NOT = {
    DBSCANModel: "a dbscan model labels a new row by its nearest core sample within eps, "
                 "which skl2onnx cannot express",
}
ZIP_DATE = (2020, 1, 1, 0, 0, 0)  # fixed, so the same export is the same bytes


def formats(trained: Trained) -> tuple[str, ...]:
    """The formats this model exports to (empty when none)."""
    if isinstance(trained, DeepModel | TransferModel):
        return FORMATS
    if isinstance(trained, UnsupervisedModel) and _sklearn_converter(trained) is not None:
        return (ONNX,)
    return ()


def _sklearn_converter(trained: UnsupervisedModel) -> Any:
    from app.ml.exporting.sklearn_onnx import converter

    return converter(trained)


def refusal(trained: Trained, fmt: str) -> ExportRefused | None:
    """Why trained cannot be exported as fmt (None when it can)."""
    supported = formats(trained)
    if fmt not in FORMATS:
        return ExportRefused(f"unknown export format {fmt!r}", supported)
    if fmt in supported:
        return None
    if not supported:
        return ExportRefused(f"a {trained.algorithm} model cannot be exported: "
                             f"{_why_not(trained)}", supported)
    return ExportRefused(f"a {trained.algorithm} model is a scikit-learn model: it exports "
                         f"to ONNX (skl2onnx), not {fmt}", supported)


def _why_not(trained: Trained) -> str:
    if trained.has_training_embedding:
        return "it embeds only its training rows and has no mapping for new ones"
    return next((why for cls, why in WHY_NOT.items() if isinstance(trained, cls)),
                "no converter expresses how it answers new rows")


def build(trained: Trained, fmt: str, *, model_id: str,
          features: list[str] | None = None) -> bytes:
    """The export archive (ZIP bytes) of a trained model; ExportRefused when it has none."""
    refused = refusal(trained, fmt)
    if refused is not None:
        raise refused
    made = _export(trained, fmt)
    preprocess = {
        "model_id": model_id, "algorithm": trained.algorithm, "format": fmt,
        "input": {**made.input, **({"features": features} if features else {})},
        "endpoints": {e.name: e.to_json() for e in made.endpoints},
        "tolerance": TOLERANCE_RULE, **made.extra}
    files = {**made.files,
             PREPROCESS_FILE: json.dumps(preprocess, indent=2, allow_nan=False).encode(),
             CARD_FILE: model_card(preprocess).encode()}
    return zipped(files)


def _export(trained: Trained, fmt: str) -> Export:
    if isinstance(trained, UnsupervisedModel):
        made: Export = _sklearn_converter(trained)(trained)
        return made
    from app.ml.exporting import torchnets

    if isinstance(trained, TransferModel):
        return torchnets.transfer(trained, fmt)
    assert isinstance(trained, DeepModel)
    return torchnets.deep(trained, fmt)


def zipped(files: dict[str, bytes]) -> bytes:
    """files in a ZIP (deflated, fixed timestamps), in name order."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files):
            z.writestr(zipfile.ZipInfo(name, date_time=ZIP_DATE), files[name],
                       compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()

