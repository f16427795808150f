"""Binary predict/embed bodies as model input: a NumPy .npy array or an Arrow IPC stream.

Never unpickled; refused (422 naming `body`) when not a 2-D numeric array with one column per
feature, and bounded by the request's cell budget and instance limit. (Apart from inputs so
that the decode processes, which never see a binary body, do not load pyarrow.)
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa

from app.errors import field_error
from app.serving.inputs import MAX_INSTANCES_HEADER, NPY, InputSpec
from app.serving.limits import Limits


def from_binary(raw: bytes, media: str, spec: InputSpec, limits: Limits) -> np.ndarray:
    """The rows of an .npy or Arrow body, checked against the model's features and budgets."""
    arr = decode(raw, media, spec.features)
    if arr.size > limits.max_request_cells:
        raise field_error(
            "body", "too many values", status=413,
            detail=f"the array has {arr.size} values; the budget is "
                   f"{limits.max_request_cells} per call (PRETRAINER_MAX_REQUEST_CELLS)")
    return array_rows(arr, spec.features, spec.dtype, limits.max_instances)


def decode(raw: bytes, media: str, features: list[str]) -> np.ndarray:
    """A 2-D numeric array from an .npy body or an Arrow stream with one column per feature."""
    return _npy(raw) if media == NPY else _arrow(raw, features)


def _npy(raw: bytes) -> np.ndarray:
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as exc:  # whatever np.load makes of bad bytes is the client's
        raise field_error("body", f"is not a NumPy .npy array: {_reason(exc)}") from exc
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise field_error("body", "is an .npz archive; send one .npy array")
    return arr


def _arrow(raw: bytes, features: list[str]) -> np.ndarray:
    try:
        table = pa.ipc.open_stream(raw).read_all()
    except Exception as exc:  # whatever pyarrow makes of bad bytes is the client's
        raise field_error("body", f"is not an Arrow IPC stream: {_reason(exc)}") from exc
    missing = [f for f in features if f not in table.column_names]
    if missing:
        raise field_error("body", f'the Arrow stream has no column "{missing[0]}" '
                                  f"(columns needed: {', '.join(features)})")
    try:
        cols = [table.column(f).to_numpy() for f in features]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError) as exc:
        raise field_error("body", f"a feature column is not numeric: {_reason(exc)}") from exc
    return np.column_stack(cols) if cols else np.empty((table.num_rows, 0))


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]


def array_rows(arr: np.ndarray, features: list[str], dtype: str, max_rows: int) -> np.ndarray:
    """arr checked as the model's input: 2-D, one column per feature, numeric, finite."""
    if arr.dtype.kind not in "biuf":
        raise field_error("body", f"has dtype {arr.dtype}; send a numeric (int, float or bool) "
                                  "array")
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise field_error("body", f"has shape {arr.shape}; send a 2-D array of rows × "
                                  f"{len(features)} features")
    if arr.shape[0] > max_rows:
        raise field_error(
            "body", "too many rows", status=413,
            detail=f"{arr.shape[0]} instances in one call; the limit is {max_rows} "
                   "(PRETRAINER_MAX_INSTANCES): split them into calls of at most that many",
            headers={MAX_INSTANCES_HEADER: str(max_rows)})
    if arr.shape[1] != len(features):
        raise field_error(
            "body", f"expected {len(features)} columns",
            detail=f"the array has {arr.shape[1]} columns, expected {len(features)} "
                   f"({', '.join(features[:20])})")
    with np.errstate(over="ignore"):
        x = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(x).all():
        i, j = (int(k) for k in np.argwhere(~np.isfinite(x))[0])
        raise field_error("body", f"row {i}, column {j} ({features[j]}) is not a finite {dtype} "
                                  "number")
    return x
