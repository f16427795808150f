"""Request bodies as model input: JSON instances, .npy and Arrow arrays, images and texts.

Everything here is bounded by Limits: a body is refused (413) as soon as it streams past a
limit, before it is held whole or parsed; binary bodies are never unpickled and must be a 2-D
numeric array; images are summed against the pixel budget from their headers before any is
decoded. The functions that parse or decode are plain calls: the service decides which run on
the event loop and which in the serving pool.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.data.images import ImageError, decode_b64, decode_image, image_size
from app.data.loaders import FeatureError
from app.errors import Invalid, TooLarge, field_error
from app.schemas import InstancesIn
from app.serving.cache import Loaded
from app.serving.limits import Limits

NPY = "application/x-npy"
ARROW = "application/vnd.apache.arrow.stream"
JSON = "application/json"
MULTIPART = "multipart/form-data"
BINARY = (NPY, ARROW)
# On a 413 for too many rows: the most one call takes, for clients that split (the CLI does).
MAX_INSTANCES_HEADER = "X-Max-Instances"
_NUMBER_TYPES = frozenset({int, float, bool})


@dataclass
class Body:
    """A predict/embed request body as it arrives: its media type, its bytes as they stream,
    and (for multipart) a reader of at most n file parts."""

    media: str
    chunks: AsyncIterator[bytes]
    files: Callable[[int], Awaitable[list[bytes]]]


# ------------------------------------------------------------------------------ reading bodies


def _body_too_large(limit: int) -> TooLarge:
    return TooLarge(f"the body is larger than {limit} bytes (PRETRAINER_MAX_BODY_BYTES)",
                    errors=[{"field": "body", "message": "too large"}])


async def read_body(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes limit bytes."""
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _body_too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


async def read_json_body(chunks: AsyncIterator[bytes], limits: Limits) -> tuple[bytes, bool]:
    """The body and whether it is small; past inline_body_bytes it is counted as it streams."""
    limit, small = limits.max_body_bytes, limits.inline_body_bytes
    parts: list[bytes] = []
    size, counter = 0, None
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _body_too_large(limit)
        parts.append(chunk)
        if size > small:
            if counter is None:  # the chunks before this one were not counted yet
                counter = InstanceCount(limits.max_instances, limits.max_request_cells)
                for earlier in parts[:-1]:
                    counter.feed(earlier)
            counter.feed(chunk)
    return b"".join(parts) if len(parts) != 1 else parts[0], counter is None


# ---------------------------------------------------------------------- counting a JSON body

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
        real: np.ndarray = quotes[run % 2 == 0]
        return real

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


# ---------------------------------------------------------------------------- JSON instances


def parse(raw: bytes) -> list[Any]:
    """The instances of a JSON body, refused as FastAPI refuses a body it validated itself."""
    try:
        return InstancesIn.model_validate_json(raw).instances
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


def from_json(entry: Loaded, raw: bytes, limits: Limits) -> np.ndarray:
    """Parse a JSON body and build the model's input from it."""
    return matrix(entry, parse(raw), limits)


def matrix(entry: Loaded, instances: list[Any], limits: Limits) -> np.ndarray:
    """The model's input from parsed instances: images, texts or numeric rows by its kind."""
    limit = limits.max_instances
    if len(instances) > limit:
        raise TooLarge(f"{len(instances)} instances in one call; the limit is {limit} "
                       "(PRETRAINER_MAX_INSTANCES): split them into calls of at most that many",
                       errors=[{"field": "instances", "message": "too many"}],
                       headers={MAX_INSTANCES_HEADER: str(limit)})
    if entry.kind == "image":
        return images(entry, instances, limits)
    if entry.kind == "text":
        return texts(instances)
    try:
        return instances_to_matrix(instances, entry.features, entry.dtype)
    except FeatureError as exc:
        raise Invalid(exc.message, errors=[{"field": "instances", "message": exc.message}]) from exc


def instances_to_matrix(instances: list[Any], features: list[str], dtype: str) -> np.ndarray:
    """Predict-request instances (lists in feature order, or objects by column) as a 2-D array."""
    if not isinstance(instances, list) or not instances:
        raise FeatureError("instances is empty; send at least one instance")
    rows = [_instance_row(i, inst, features) for i, inst in enumerate(instances)]
    try:
        with np.errstate(over="ignore"):  # overflow to inf is reported below, by position
            x = np.array(rows, dtype=dtype)
    except OverflowError:
        raise _too_large(rows, dtype) from None
    if not np.isfinite(x).all():
        i, j = (int(k) for k in np.argwhere(~np.isfinite(x))[0])
        raise FeatureError(f"instances[{i}][{j}] is not a finite {dtype} number "
                           f"(got {rows[i][j]!r})", column=features[j])
    return x


def _instance_row(i: int, inst: Any, features: list[str]) -> list[Any]:
    if isinstance(inst, list):
        if len(inst) != len(features):
            raise FeatureError(f"instances[{i}] has {len(inst)} values, expected {len(features)} "
                               f"({_names(features)})")
        where: list[Any] = list(range(len(inst)))
        values = inst
    elif isinstance(inst, dict):
        missing = next((f for f in features if f not in inst), None)
        if missing is not None:
            raise FeatureError(f'instances[{i}] is missing column "{missing}"', column=missing)
        where = [f'"{f}"' for f in features]
        values = [inst[f] for f in features]
    else:
        raise FeatureError(f"instances[{i}] must be a list of {len(features)} numbers or an "
                           "object keyed by column name")
    for j, v in enumerate(values):
        if type(v) not in _NUMBER_TYPES:
            raise FeatureError(f"instances[{i}][{where[j]}] is not a number (got {_show(v)})",
                               column=features[j])
    return values


def _names(names: list[str], limit: int = 20) -> str:
    return ", ".join(names[:limit]) + (", …" if len(names) > limit else "")


def _show(v: Any) -> str:
    text = "null" if v is None else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _too_large(rows: list[list[Any]], dtype: str) -> FeatureError:
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            try:
                float(v)
            except OverflowError:
                return FeatureError(f"instances[{i}][{j}] is too large for {dtype}")
    return FeatureError(f"a value in instances is too large for {dtype}")


# ------------------------------------------------------------------------------ images, texts


def images(entry: Loaded, instances: list[Any], limits: Limits) -> np.ndarray:
    """Decode {"b64": …} instances (or raw bytes from a multipart upload) as at training.

    Every header is read first and the request's pixels summed against its budget, so a
    request over it is refused before a single image is decoded.
    """
    if not instances:
        raise field_error("instances", "is empty; send at least one image")
    raws = _image_headers(instances, limits)
    s = entry.schema
    out = np.empty((len(raws), s["height"], s["width"], s["channels"]), dtype=np.uint8)
    for i, raw in enumerate(raws):
        try:
            img = decode_image(raw, height=s["height"], width=s["width"], channels=s["channels"],
                               max_pixels=limits.max_image_pixels)
        except ImageError as exc:
            raise field_error(f"instances[{i}]", str(exc)) from exc
        out[i] = img.reshape(out.shape[1:])
    return out


def _image_headers(instances: list[Any], limits: Limits) -> list[bytes]:
    """The images' bytes, once their headers are read and their pixels are within budget."""
    raws, total, budget = [], 0, limits.max_request_pixels
    for i, item in enumerate(instances):
        try:
            raw = _image_bytes(item)
            height, width = image_size(raw, max_pixels=limits.max_image_pixels)
        except ImageError as exc:
            raise field_error(f"instances[{i}]", str(exc)) from exc
        raws.append(raw)
        total += height * width
        if total > budget:
            raise TooLarge(f"the images of this call have more than {budget} pixels in all "
                           f"(past instances[{i}]); the budget is {budget} "
                           "(PRETRAINER_MAX_REQUEST_PIXELS): send fewer or smaller images per "
                           "call", errors=[{"field": "instances", "message": "too many pixels"}])
    return raws


def _image_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, dict) and isinstance(item.get("b64"), str):
        return decode_b64(item["b64"])
    raise ImageError('each image instance is {"b64": "<base64 PNG or JPEG>"}')


def texts(instances: list[Any]) -> np.ndarray:
    """Text instances: strings, or {"text": "..."} objects."""
    if not instances:
        raise field_error("instances", "is empty; send at least one text")
    out = np.empty(len(instances), dtype=object)
    for i, item in enumerate(instances):
        if isinstance(item, dict) and set(item) == {"text"}:
            item = item["text"]
        if not isinstance(item, str):
            raise field_error(f"instances[{i}]", 'a text model takes strings, or {"text": "..."}')
        out[i] = item
    return out


# ------------------------------------------------------------------------ .npy and Arrow bodies


def from_binary(raw: bytes, media: str, entry: Loaded, limits: Limits) -> np.ndarray:
    """The rows of an .npy or Arrow body, checked against the model's features and budgets."""
    arr = decode(raw, media, entry.features)
    if arr.size > limits.max_request_cells:
        raise TooLarge(f"the array has {arr.size} values; the budget is "
                       f"{limits.max_request_cells} per call (PRETRAINER_MAX_REQUEST_CELLS)",
                       errors=[{"field": "body", "message": "too many values"}])
    return array_rows(arr, entry.features, entry.dtype, limits.max_instances)


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
