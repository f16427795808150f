"""Binary bodies for predict/embed: NumPy .npy and Arrow IPC streams, in and out, next to JSON.

A float matrix as JSON costs a Python object per number on both sides; as .npy it is one
header and a memcpy. Requests are bounded while they stream, never unpickled, and refused
(422 naming `body`) when they are not a 2-D numeric array.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from fastapi import Request, Response

from app.errors import Invalid, TooLarge, field_error

NPY = "application/x-npy"
ARROW = "application/vnd.apache.arrow.stream"
JSON = "application/json"
BINARY = (NPY, ARROW)
# On a 413 for too many rows: the most one call takes, for clients that split (the CLI does).
MAX_INSTANCES_HEADER = "X-Max-Instances"


def media_type(header: str | None) -> str:
    """The bare media type of a Content-Type header ('' when absent)."""
    return (header or "").split(";", 1)[0].strip().lower()


def accepted(request: Request) -> str:
    """The response type the client asked for: npy or Arrow when named in Accept, else JSON."""
    accept = request.headers.get("accept", "")
    offered = [media_type(part) for part in accept.split(",")]
    return next((m for m in offered if m in BINARY), JSON)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes limit bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is larger than {limit} bytes (PRETRAINER_MAX_BODY_BYTES)",
                           errors=[{"field": "body", "message": "too large"}])
        chunks.append(chunk)
    return b"".join(chunks)


def decode(raw: bytes, ctype: str, features: list[str]) -> np.ndarray:
    """A 2-D numeric array from an .npy body or an Arrow stream with one column per feature."""
    return _npy(raw) if ctype == NPY else _arrow(raw, features)


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


def matrix(arr: np.ndarray, features: list[str], dtype: str, max_rows: int) -> np.ndarray:
    """arr checked as the model's input: 2-D, one column per feature, numeric, finite."""
    if arr.dtype.kind not in "biuf":
        raise field_error("body", f"has dtype {arr.dtype}; send a numeric (int, float or bool) "
                                  "array")
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise field_error("body", f"has shape {arr.shape}; send a 2-D array of rows × "
                                  f"{len(features)} features")
    if arr.shape[0] > max_rows:
        raise TooLarge(f"{arr.shape[0]} instances in one call; the limit is {max_rows} "
                       "(PRETRAINER_MAX_INSTANCES): split them into calls of at most that many",
                       errors=[{"field": "body", "message": "too many rows"}],
                       headers={MAX_INSTANCES_HEADER: str(max_rows)})
    if arr.shape[1] != len(features):
        raise Invalid(f"the array has {arr.shape[1]} columns, expected {len(features)} "
                      f"({', '.join(features[:20])})",
                      errors=[{"field": "body", "message": f"expected {len(features)} columns"}])
    with np.errstate(over="ignore"):
        x = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(x).all():
        i, j = (int(k) for k in np.argwhere(~np.isfinite(x))[0])
        raise field_error("body", f"row {i}, column {j} ({features[j]}) is not a finite {dtype} "
                                  "number")
    return x


def respond(payload: dict[str, Any], main: str, media: str) -> Response:
    """payload as JSON (orjson), as the .npy of its `main` array, or as an Arrow stream."""
    if media == NPY:
        buf = io.BytesIO()
        np.save(buf, np.asarray(payload[main]), allow_pickle=False)
        # Only `main` travels as .npy; name what was left out so clients know to ask for Arrow.
        rest = ",".join(k for k in payload if k != main)
        headers = {"X-Omitted-Fields": rest} if rest else None
        return Response(buf.getvalue(), media_type=NPY, headers=headers)
    if media == ARROW:
        return Response(_arrow_stream(payload), media_type=ARROW)
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type=JSON)


def _arrow_stream(payload: dict[str, Any]) -> bytes:
    """One column per array in payload; rows of 2-D (or more) arrays as fixed-size lists."""
    columns = {}
    for name, value in payload.items():
        arr = np.ascontiguousarray(value)
        if arr.ndim == 1:
            columns[name] = pa.array(arr)
        else:
            flat = arr.reshape(len(arr), -1)
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])
    table = pa.table(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


BINARY_SCHEMA = {"type": "string", "format": "binary"}
NPY_DOC = ("a NumPy .npy 2-D numeric array, rows × the model's features in their order "
           "(no pickles, no object dtype)")
ARROW_DOC = "an Arrow IPC stream with one numeric column per feature, named as in the model"


def request_content() -> dict[str, Any]:
    """OpenAPI requestBody entries for the binary types."""
    return {NPY: {"schema": {**BINARY_SCHEMA, "description": NPY_DOC}},
            ARROW: {"schema": {**BINARY_SCHEMA, "description": ARROW_DOC}}}


def response_content(main: str) -> dict[str, Any]:
    """OpenAPI response entries for the binary types (chosen by the Accept header)."""
    return {NPY: {"schema": {**BINARY_SCHEMA, "description": f"the `{main}` array as .npy; other "
                                                               "fields are named in X-Omitted-Fields"}},
            ARROW: {"schema": {**BINARY_SCHEMA, "description": "an Arrow IPC stream, one column "
                                                                 "per response field"}}}
