"""Request bodies as model input: JSON instances, .npy and Arrow arrays, images and texts.

Everything here is bounded by Limits: a body is refused (413) as soon as it streams past a
limit, before it is held whole or parsed; binary bodies are never unpickled and must be a 2-D
numeric array; images are summed against the pixel budget from their headers before any is
decoded. The functions that parse or decode are plain calls: the service decides which run on
the event loop and which in the serving pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from app.data.images import ImageError, decode_b64, decode_image, image_size
from app.errors import Problem, field_error
from app.schemas import InstancesIn
from app.serving.limits import Limits

NPY = "application/x-npy"
ARROW = "application/vnd.apache.arrow.stream"
JSON = "application/json"
MULTIPART = "multipart/form-data"
BINARY = (NPY, ARROW)
# On a 413 for too many rows: the most one call takes, for clients that split (the CLI does).
MAX_INSTANCES_HEADER = "X-Max-Instances"
_NUMBER_TYPES = frozenset({int, float, bool})


@dataclass(frozen=True)
class InputSpec:
    """What a model takes, as decoding needs it: small and picklable, it travels to the
    decode processes with the body."""

    kind: str  # tabular, image or text
    features: list[str]
    dtype: str
    height: int = 0
    width: int = 0
    channels: int = 0

    @classmethod
    def of(cls, schema: dict[str, Any]) -> InputSpec:
        """The spec of a model's stored input schema."""
        return cls(kind=str(schema.get("kind", "tabular")),
                   features=[f["name"] for f in schema.get("features", [])],
                   dtype=str(schema.get("dtype", "float64")), height=int(schema.get("height", 0)),
                   width=int(schema.get("width", 0)), channels=int(schema.get("channels", 0)))


@dataclass
class Body:
    """A predict/embed request body as it arrives: its media type, its bytes as they stream,
    and (for multipart) a reader of at most n file parts."""

    media: str
    chunks: AsyncIterator[bytes]
    files: Callable[[int], Awaitable[list[bytes]]]


# ------------------------------------------------------------------------------ reading bodies


def _body_too_large(limit: int) -> Problem:
    return field_error(
        "body", "too large", status=413,
        detail=f"the body is larger than {limit} bytes (PRETRAINER_MAX_BODY_BYTES)")


async def read_body(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes limit bytes."""
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _body_too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


# A JSON body is counted on the loop, while it streams, only past this size: below it holding
# it whole costs little, and the decode process that parses it counts it first (the same 413),
# off the loop. Past it, an over-limit body is refused before more of it is read.
COUNT_ON_LOOP_BYTES = 2 * 1024**2


async def read_json_body(chunks: AsyncIterator[bytes], limits: Limits) -> tuple[bytes, bool]:
    """The body, and whether it was counted while it streamed (past COUNT_ON_LOOP_BYTES)."""
    limit = limits.max_body_bytes
    parts: list[bytes] = []
    size, counter = 0, None
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _body_too_large(limit)
        parts.append(chunk)
        if size > COUNT_ON_LOOP_BYTES:
            if counter is None:  # the chunks before this one were not counted yet
                counter = InstanceCount(limits.max_instances, limits.max_request_cells)
                for earlier in parts[:-1]:
                    counter.feed(earlier)
            counter.feed(chunk)
    return b"".join(parts) if len(parts) != 1 else parts[0], counter is not None


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
            raise field_error(
                "instances", "too many", status=413,
                detail=f"more than {self.max_instances} instances in one call; the limit is "
                       f"{self.max_instances} (PRETRAINER_MAX_INSTANCES): split them into "
                       "calls of at most that many",
                headers={MAX_INSTANCES_HEADER: str(self.max_instances)})
        if self.cells > self.max_cells:
            raise field_error(
                "instances", "too many values", status=413,
                detail=f"more than {self.max_cells} values in one call's instances; the "
                       f"budget is {self.max_cells} (PRETRAINER_MAX_REQUEST_CELLS): send "
                       "fewer instances per call")


# ---------------------------------------------------------------------------- JSON instances


class NotInstances(Exception):
    """A JSON body that is not `{"instances": [...]}`, with pydantic's errors (the API answers
    them as it answers any body it validated itself). Plain, so that it pickles."""

    def __init__(self, errors: list[Any]) -> None:
        super().__init__(errors)
        self.errors = errors


def parse(raw: bytes) -> list[Any]:
    """The instances of a JSON body."""
    try:
        return InstancesIn.model_validate_json(raw).instances
    except ValidationError as exc:
        raise NotInstances(exc.errors()) from exc


def from_json(spec: InputSpec, raw: bytes, limits: Limits, counted: bool) -> np.ndarray:
    """Count (unless already counted), parse a JSON body and build the model's input from it."""
    if not counted:
        InstanceCount(limits.max_instances, limits.max_request_cells).feed(raw)
    return matrix(spec, parse(raw), limits)


def matrix(spec: InputSpec, instances: list[Any], limits: Limits) -> np.ndarray:
    """The model's input from parsed instances: images, texts or numeric rows by its kind."""
    limit = limits.max_instances
    if len(instances) > limit:
        raise field_error(
            "instances", "too many", status=413,
            detail=f"{len(instances)} instances in one call; the limit is {limit} "
                   "(PRETRAINER_MAX_INSTANCES): split them into calls of at most that many",
            headers={MAX_INSTANCES_HEADER: str(limit)})
    if spec.kind == "image":
        return images(spec, instances, limits)
    if spec.kind == "text":
        return texts(instances)
    return instances_to_matrix(instances, spec.features, spec.dtype)


def _bad(message: str) -> Problem:
    """A 422 naming the instances: what the rows of a request do wrong."""
    return field_error("instances", message, detail=message)


def instances_to_matrix(instances: list[Any], features: list[str], dtype: str) -> np.ndarray:
    """Predict-request instances (lists in feature order, or objects by column) as a 2-D array."""
    if not isinstance(instances, list) or not instances:
        raise _bad("instances is empty; send at least one instance")
    rows = [_instance_row(i, inst, features) for i, inst in enumerate(instances)]
    try:
        with np.errstate(over="ignore"):  # overflow to inf is reported below, by position
            x = np.array(rows, dtype=dtype)
    except OverflowError:
        raise _too_large(rows, dtype) from None
    if not np.isfinite(x).all():
        i, j = (int(k) for k in np.argwhere(~np.isfinite(x))[0])
        raise _bad(f"instances[{i}][{j}] is not a finite {dtype} number (got {rows[i][j]!r})")
    return x


def _instance_row(i: int, inst: Any, features: list[str]) -> list[Any]:
    if isinstance(inst, list):
        if len(inst) != len(features):
            raise _bad(f"instances[{i}] has {len(inst)} values, expected {len(features)} "
                       f"({_names(features)})")
        where: list[Any] = list(range(len(inst)))
        values = inst
    elif isinstance(inst, dict):
        missing = next((f for f in features if f not in inst), None)
        if missing is not None:
            raise _bad(f'instances[{i}] is missing column "{missing}"')
        where = [f'"{f}"' for f in features]
        values = [inst[f] for f in features]
    else:
        raise _bad(f"instances[{i}] must be a list of {len(features)} numbers or an object "
                   "keyed by column name")
    for j, v in enumerate(values):
        if type(v) not in _NUMBER_TYPES:
            raise _bad(f"instances[{i}][{where[j]}] is not a number (got {_show(v)})")
    return values


def _names(names: list[str], limit: int = 20) -> str:
    return ", ".join(names[:limit]) + (", …" if len(names) > limit else "")


def _show(v: Any) -> str:
    text = "null" if v is None else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _too_large(rows: list[list[Any]], dtype: str) -> Problem:
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            try:
                float(v)
            except OverflowError:
                return _bad(f"instances[{i}][{j}] is too large for {dtype}")
    return _bad(f"a value in instances is too large for {dtype}")


# ------------------------------------------------------------------------------ images, texts


def images(spec: InputSpec, instances: list[Any], limits: Limits) -> np.ndarray:
    """Decode {"b64": …} instances (or raw bytes from a multipart upload) as at training.

    Every header is read first and the request's pixels summed against its budget, so a
    request over it is refused before a single image is decoded.
    """
    if not instances:
        raise field_error("instances", "is empty; send at least one image")
    raws = _image_headers(instances, limits)
    out = np.empty((len(raws), spec.height, spec.width, spec.channels), dtype=np.uint8)
    for i, raw in enumerate(raws):
        try:
            img = decode_image(raw, height=spec.height, width=spec.width,
                               channels=spec.channels, max_pixels=limits.max_image_pixels)
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
            raise field_error(
                "instances", "too many pixels", status=413,
                detail=f"the images of this call have more than {budget} pixels in all "
                       f"(past instances[{i}]); the budget is {budget} "
                       "(PRETRAINER_MAX_REQUEST_PIXELS): send fewer or smaller images per "
                       "call")
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
