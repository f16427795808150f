"""JSON Lines inspection: one row per line, all arrays or all objects with the same keys;
columns typed by the JSON values they hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.data.formats import IngestError, iter_jsonl
from app.data.inspect._common import Ranges, check_names
from app.data.schema import Column, DatasetInfo


class _JsonlSchema:
    """Columns learned from the first line, checked and typed line by line."""

    def __init__(self, first: Any, line: int) -> None:
        if isinstance(first, list):
            if not first:
                raise IngestError(f"line {line} is an empty array; rows need at least one value")
            self.names = [f"x{i}" for i in range(len(first))]
            self.arrays = True
        elif isinstance(first, dict):
            self.names = list(first)
            check_names(self.names, f"object on line {line}")
            self.arrays = False
        else:
            raise IngestError(f"line {line} is not a JSON array or object; each line must be "
                              "one row: [1.0, 2.0] or {\"a\": 1.0, \"b\": 2.0}")
        self.first_line = line
        self.rows = 0
        self.nulls = [0] * len(self.names)
        self.kinds: list[set[str]] = [set() for _ in self.names]
        self.ranges = Ranges(len(self.names))

    def add(self, value: Any, line: int) -> None:
        values = self._row(value, line)
        for i, v in enumerate(values):
            kind = _json_kind(v)
            if kind is None:
                self.nulls[i] += 1
                continue
            if kind == "nested" or (self.arrays and kind not in ("int", "float")):
                raise self._bad_value(v, i, line)
            self.kinds[i].add(kind)
            if kind in ("int", "float"):
                self.ranges.add(i, float(v), float(v))
        self.rows += 1

    def _row(self, value: Any, line: int) -> list[Any]:
        if self.arrays:
            if not isinstance(value, list):
                raise IngestError(f"line {line} is not a JSON array, but line {self.first_line} "
                                  "is; all lines must be arrays or all objects", row=line)
            if len(value) != len(self.names):
                raise IngestError(f"line {line} has {len(value)} values, expected "
                                  f"{len(self.names)} (like line {self.first_line})", row=line)
            return value
        if not isinstance(value, dict):
            raise IngestError(f"line {line} is not a JSON object, but line {self.first_line} "
                              "is; all lines must be arrays or all objects", row=line)
        if len(value) != len(self.names) or any(k not in value for k in self.names):
            raise self._bad_keys(value, line)
        return [value[k] for k in self.names]

    def _bad_keys(self, value: dict[str, Any], line: int) -> IngestError:
        missing = [k for k in self.names if k not in value]
        if missing:
            return IngestError(f'line {line} is missing key "{missing[0]}" (the keys of line '
                               f"{self.first_line} are {', '.join(self.names)})",
                               row=line, column=missing[0])
        extra = next(k for k in value if k not in self.names)
        return IngestError(f'line {line} has key "{extra}", which line {self.first_line} does '
                           f"not have (its keys are {', '.join(self.names)})",
                           row=line, column=extra)

    def _bad_value(self, v: Any, i: int, line: int) -> IngestError:
        name = self.names[i]
        if isinstance(v, (list, dict)):
            why = "a nested value; only scalars (numbers, booleans, strings, null) are supported"
        else:
            why = f"{v!r} (a {type(v).__name__}); arrays must hold numbers or null only"
        where = f"value {i + 1}" if self.arrays else f'key "{name}"'
        return IngestError(f"line {line}, {where}: {why}", row=line, column=name)

    def info(self) -> DatasetInfo:
        if self.rows == 0:
            raise IngestError("the file has no data rows")
        dtypes = [_json_dtype(kinds) for kinds in self.kinds]
        columns = [Column(name, dtype, nulls, **self.ranges.of(i, dtype)) for i, (name, dtype, nulls)
                   in enumerate(zip(self.names, dtypes, self.nulls))]
        return DatasetInfo("tabular", "jsonl", self.rows, columns)


def _json_kind(v: Any) -> str | None:
    t = type(v)
    if v is None:
        return None
    if t is bool:
        return "bool"
    if t is int:  # beyond int64 a column can only be held as float
        return "int" if -(1 << 63) <= v < (1 << 63) else "float"
    if t is float:
        return "float"
    if t is str:
        return "str"
    return "nested"


def _json_dtype(kinds: set[str]) -> str:
    if kinds == {"int"}:
        return "int64"
    if kinds and kinds <= {"int", "float"}:
        return "float64"
    if kinds == {"bool"}:
        return "bool"
    return "string"


def inspect_jsonl(path: Path) -> DatasetInfo:
    """A JSON Lines file's schema, learned from its first line and checked on every other."""
    schema: _JsonlSchema | None = None
    for line, value in iter_jsonl(path):
        if schema is None:
            schema = _JsonlSchema(value, line)
        schema.add(value, line)
    if schema is None:
        raise IngestError("the file is empty")
    return schema.info()
