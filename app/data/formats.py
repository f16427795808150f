"""What every format shares: the formats accepted, the block sizes that bound reading, the
error that refuses an upload, and JSON Lines reading (inspection and the loaders read alike)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import orjson

FORMATS = ("csv", "parquet", "npy", "jsonl", "zip")
ACCEPTED = ("CSV with a header row (.csv), Parquet (.parquet, .pq), NumPy arrays (.npy), "
            "JSON Lines (.jsonl, .ndjson) or a ZIP of PNG/JPEG images (.zip)")
# pyarrow's streaming CSV reader queues up to 32 blocks ahead of the consumer (its background
# reader's queue), so peak memory is ~32 x block_size: 1 MiB keeps it near 40 MB and is as
# fast as 4 MiB (~190 MB/s on one core either way), where 4 MiB peaks near 120 MB.
DEFAULT_BLOCK_SIZE = 1 << 20
# A row longer than a block must be read with bigger blocks; past this a row is refused.
MAX_BLOCK_SIZE = 8 << 20
_MAX_JSONL_LINE = 16 << 20

# What is wrong with a refused upload; the HTTP layer decides which status says so.
Kind = Literal["invalid", "too_large", "unsupported", "bad_request"]


class IngestError(Exception):
    """A refused upload: why (naming row and column where it can), which request field it
    concerns, and its kind: invalid content, too large, an unsupported format, a bad request."""

    def __init__(self, reason: str, *, field: str = "file", kind: Kind = "invalid",
                 row: int | None = None, column: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.kind: Kind = kind
        self.row = row
        self.column = column


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based line number, parsed value) for each non-blank line; IngestError on bad JSON."""
    for line, raw in _jsonl_lines(path):
        yield line, _parse_json_line(raw, line)


def _jsonl_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, bytes) of each non-blank line, each at most _MAX_JSONL_LINE long."""
    with open(path, "rb") as fh:
        line = 0
        while raw := fh.readline(_MAX_JSONL_LINE + 1):
            line += 1
            if len(raw) > _MAX_JSONL_LINE:
                raise IngestError(f"line {line} is longer than {_MAX_JSONL_LINE >> 20} MiB",
                                  row=line)
            if line == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if raw.strip():
                yield line, raw


def _parse_json_line(raw: bytes, line: int) -> Any:
    try:
        return orjson.loads(raw)
    except (ValueError, RecursionError) as exc:  # orjson.JSONDecodeError is a ValueError
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise IngestError(f"line {line} is not valid UTF-8 text; save the file as UTF-8",
                              row=line) from exc
        infinite = _infinite_json_value(raw, line) if "infinity" in str(exc).lower() else None
        if infinite is not None:
            raise infinite from exc
        # The parser's own position counts from this line's start, not the file's.
        why, pos = getattr(exc, "msg", str(exc)), getattr(exc, "pos", None)
        at = f" at character {pos + 1}" if isinstance(pos, int) else ""
        raise IngestError(f"line {line} is not valid JSON: {why}{at}", row=line) from exc


def _infinite_json_value(raw: bytes, line: int) -> IngestError | None:
    """The error naming the column of a number too large for a float (1e999), or None."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    items = value.items() if isinstance(value, dict) else (
        (f"x{i}", v) for i, v in enumerate(value)) if isinstance(value, list) else ()
    for name, v in items:
        if isinstance(v, float) and math.isinf(v):
            return IngestError(f'line {line}: column "{name}" holds an infinite number (a number '
                               "too large for a float); infinities cannot be trained on: replace "
                               "it with a finite value or null", row=line, column=str(name))
    return None
