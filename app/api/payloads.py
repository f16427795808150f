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

from app.config import Settings
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


def _body_too_large(limit: int) -> TooLarge:
    return TooLarge(f"the body is larger than {limit} bytes (PRETRAINER_MAX_BODY_BYTES)",
                    errors=[{"field": "body", "message": "too large"}])


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes limit bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _body_too_large(limit)
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


# ------------------------------------------------------------------ counting a JSON body early

_QUOTE, _BACKSLASH, _COMMA = ord('"'), ord("\\"), ord(",")
_OPENS = np.zeros(256, dtype=np.int8)
_OPENS[[ord("["), ord("{")]] = 1
_OPENS[[ord("]"), ord("}")]] = -1
_MARKS = _OPENS != 0
_MARKS[_COMMA] = True
_SCAN_BYTES = 1 << 20


class InstanceCount:
    """Counts the instances and cells of a `{"instances": [...]}` body chunk by chunk, unparsed.

    A body is refused (413) as soon as it passes a limit, before it is held whole or parsed:
    parsing 5M rows into Python lists takes seconds with the GIL held and gigabytes. The scan
    is vectorised per chunk (NumPy) and keeps only the state a chunk boundary needs: inside a
    string or not, the parity of a trailing run of backslashes, and the nesting depth. Elements
    at depth 2 (inside the array inside the body's object) are instances; values inside them
    are cells. Invalid JSON is counted loosely and refused by the parser afterwards.
    """

    def __init__(self, max_instances: int, max_cells: int) -> None:
        self.max_instances, self.max_cells = max_instances, max_cells
        self.instances = self.cells = 0
        self._in_string, self._escaped, self._depth = False, False, 0

    def feed(self, chunk: bytes) -> None:
        """Count one chunk; TooLarge as soon as a limit is passed."""
        view = memoryview(chunk)
        for start in range(0, len(view), _SCAN_BYTES):  # bounded scratch arrays, early refusal
            self._feed(np.frombuffer(view[start:start + _SCAN_BYTES], dtype=np.uint8))

    def _feed(self, a: np.ndarray) -> None:
        quotes = self._real_quotes(a)
        marks = np.flatnonzero(_MARKS[a])  # , [ ] { } anywhere; then those outside strings
        marks = marks[(np.searchsorted(quotes, marks) + self._in_string) % 2 == 0]
        kinds = a[marks]
        step = _OPENS[kinds].astype(np.int64)
        depth = np.cumsum(step) + self._depth
        commas = kinds == _COMMA
        opened = step > 0
        # The instances array's opening counts its first element; each comma inside, one more.
        self.instances += int(np.count_nonzero((commas | opened) & (depth == 2)))
        self.cells += int(np.count_nonzero(commas & (depth >= 3))
                          + np.count_nonzero(opened & (depth == 3)))
        self._in_string = bool((len(quotes) + self._in_string) % 2)
        if len(depth):
            self._depth = int(depth[-1])
        self._check()

    def _real_quotes(self, a: np.ndarray) -> np.ndarray:
        """Positions of the quotes not escaped by an odd run of backslashes before them."""
        quotes = np.flatnonzero(a == _QUOTE)
        if not self._escaped and not (a == _BACKSLASH).any():
            return quotes
        idx = np.arange(len(a))
        last_plain = np.maximum.accumulate(np.where(a != _BACKSLASH, idx, -1))
        before = np.where(quotes > 0, last_plain[np.maximum(quotes - 1, 0)], -1)
        run = quotes - 1 - before
        run = np.where(before < 0, run + self._escaped, run)  # a run carried from the last chunk
        tail = len(a) - 1 - int(last_plain[-1])
        self._escaped = bool((tail + (self._escaped if last_plain[-1] < 0 else 0)) % 2)
        return quotes[run % 2 == 0]

    def _check(self) -> None:
        # A non-empty array of n elements has n - 1 commas: the count is exact for valid JSON.
        if self.instances > self.max_instances:
            raise TooLarge(f"more than {self.max_instances} instances in one call; the limit is "
                           f"{self.max_instances} (PRETRAINER_MAX_INSTANCES): split them into "
                           "calls of at most that many",
                           errors=[{"field": "instances", "message": "too many"}],
                           headers={MAX_INSTANCES_HEADER: str(self.max_instances)})
        if self.cells > self.max_cells:
            raise TooLarge(f"more than {self.max_cells} values in one call's instances; the "
                           f"budget is {self.max_cells} (PRETRAINER_MAX_REQUEST_CELLS): send "
                           "fewer instances per call",
                           errors=[{"field": "instances", "message": "too many values"}])


async def read_json_body(request: Request, settings: Settings) -> tuple[bytes, bool]:
    """The body and whether it is small; past inline_body_bytes it is counted as it streams."""
    limit, small = settings.max_body_bytes, settings.inline_body_bytes
    chunks: list[bytes] = []
    size, counter = 0, None
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _body_too_large(limit)
        chunks.append(chunk)
        if size > small:
            if counter is None:  # the chunks before this one were not counted yet
                counter = InstanceCount(settings.max_instances, settings.max_request_cells)
                for earlier in chunks[:-1]:
                    counter.feed(earlier)
            counter.feed(chunk)
    return b"".join(chunks) if len(chunks) != 1 else chunks[0], counter is None
