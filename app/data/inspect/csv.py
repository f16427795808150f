"""CSV inspection: a header row, then every row streamed through pyarrow in small blocks.

Column types are pyarrow's guess from the first block, checked against every later block; a
column whose later blocks disagree is read again as text and typed by casting each batch.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from app.data.formats import ACCEPTED, MAX_BLOCK_SIZE, IngestError
from app.data.inspect._common import Ranges, check_names, first_infinite, infinite
from app.data.schema import Column, DatasetInfo

# Delimiters a file named .csv is often written with instead of a comma (spreadsheets in
# locales whose decimal mark is a comma write semicolons), with the word a message uses.
_OTHER_DELIMITERS = {"\t": "tabs", ";": "semicolons", "|": "pipes"}
_SNIFF_LINES = 20
_SNIFF_CHARS = 1 << 16
_MAX_CSV_PASSES = 10
_HEADER_LIMIT = 1 << 20
# The words pyarrow's CSV reader takes as booleans (a list: building an Array at import time
# would import pandas, which the API's start-up does not need).
_BOOL_WORDS = ["1", "True", "TRUE", "true", "0", "False", "FALSE", "false"]


@dataclass
class _CsvPlan:
    """How to read the CSV in the next pass."""

    names: list[str]
    block_size: int
    # Columns read as text and typed by casting each batch: pyarrow typed them from the first
    # block and a later block disagreed, so the first block's guess cannot be trusted.
    inferred: set[str] = field(default_factory=set)
    retypes: int = 0
    schema: pa.Schema | None = None


def inspect_csv(path: Path, block_size: int) -> DatasetInfo:
    """A CSV's schema and counts, read in passes until the column types settle."""
    with open(path, "rb") as fh:
        _refuse_binary(fh.read(max(block_size, 1 << 16)))
    names = _csv_header(path)
    _refuse_other_delimiter(path, len(names))
    plan = _CsvPlan(names=names, block_size=block_size)
    for _ in range(_MAX_CSV_PASSES):
        try:
            return _csv_pass(path, plan)
        except pa.ArrowException as exc:
            _replan(path, plan, str(exc))
    raise IngestError("could not settle the column types of this CSV; "
                      "check that each column holds one kind of value")


def _refuse_binary(head: bytes) -> None:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise IngestError("the file is UTF-16 text; save it as UTF-8 and upload it again")
    nul = head.find(b"\x00")
    if nul >= 0:
        raise IngestError(f"this is not a CSV file: it holds binary data (a NUL byte at byte "
                          f"offset {nul}); accepted formats are {ACCEPTED}", kind="unsupported")


def _csv_header(path: Path) -> list[str]:
    # Read at most _HEADER_LIMIT characters: a file without newlines must not become a
    # header of millions of names.
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        text = fh.read(_HEADER_LIMIT)
    if len(text) == _HEADER_LIMIT and "\n" not in text and "\r" not in text:
        raise IngestError("line 1 (the header) is longer than 1 MiB; this is not a CSV with a "
                          "header row")
    try:
        header = next(csv.reader(io.StringIO(text, newline="")), [])
    except csv.Error as exc:
        raise IngestError(f"line 1 is not a CSV header row: {exc}") from exc
    if not header:
        raise IngestError("line 1 is empty; a CSV must start with a header row naming the columns")
    if any(_has_surrogates(name) for name in header):
        raise IngestError("the header (line 1) is not valid UTF-8 text; save the file as UTF-8")
    check_names(header, "header")
    if all(_is_number(name) for name in header):
        raise IngestError(f"line 1 holds only numbers ({', '.join(header[:5])}), not column "
                          "names; a CSV must start with a header row naming the columns")
    return header


def _refuse_other_delimiter(path: Path, width: int) -> None:
    """A file separated by tabs or semicolons under a .csv name is refused, naming the delimiter.

    Said, not guessed around: the delimiter is decided at upload by the comma every reader of
    the dataset uses, and a wrong guess would train on silently shifted columns.
    """
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        head = fh.read(_SNIFF_CHARS)
    lines = head.splitlines(keepends=True)
    if len(head) == _SNIFF_CHARS and len(lines) > 1:
        lines.pop()  # cut short by the read
    lines = [line for line in lines[:_SNIFF_LINES + 1] if line.strip()]
    for delimiter, word in _OTHER_DELIMITERS.items():
        widths = {len(r) for r in csv.reader(lines, delimiter=delimiter)}
        found = widths.pop() if len(widths) == 1 else 0
        if found > width:
            shown = "\\t" if delimiter == "\t" else delimiter
            raise IngestError(
                f"the file is separated by {word} ('{shown}'), not commas: the first lines have "
                f"{found} fields split at '{shown}' but the header has {width} split at ','; "
                "save it as comma-separated CSV (with '.' as the decimal mark) and upload it "
                "again")


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_pass(path: Path, plan: _CsvPlan) -> DatasetInfo:
    """One streaming pass: count rows and nulls, and type the columns read as text."""
    types = {name: pa.string() for name in plan.inferred}
    convert = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
    read = pacsv.ReadOptions(block_size=plan.block_size, use_threads=False)
    with pacsv.open_csv(path, read_options=read, parse_options=_PARSE,
                        convert_options=convert) as reader:
        plan.schema = reader.schema
        check_names(reader.schema.names, "header")
        if any(pa.types.is_binary(t) or pa.types.is_large_binary(t) for t in reader.schema.types):
            raise _bad_utf8(path)  # pyarrow types text that is not UTF-8 as binary
        stats = _CsvStats(reader.schema, plan.inferred)
        for batch in reader:
            stats.add(batch)
    return stats.info()


# Quoted fields may hold newlines (text columns will); it costs nothing measurable.
_PARSE = pacsv.ParseOptions(newlines_in_values=True)


class _CsvStats:
    """Row count, per-column nulls and, for columns read as text, the narrowest type that fits."""

    def __init__(self, schema: pa.Schema, inferred: set[str]) -> None:
        self.schema = schema
        self.rows = 0
        self.nulls = [0] * len(schema)
        self.kinds = {i: "null" for i, name in enumerate(schema.names) if name in inferred}
        # The first row (1-based) holding an infinity, per column: refused only if the column
        # ends up numeric ("inf" in a text column is text).
        self.infinite: dict[int, int] = {}
        self.ranges = Ranges(len(schema))

    def add(self, batch: pa.RecordBatch) -> None:
        for i, col in enumerate(batch.columns):
            self.nulls[i] += col.null_count
            self.ranges.add_array(i, col)
            if i in self.kinds:
                self.kinds[i] = _narrowest(col, self.kinds[i])
            if i not in self.infinite:
                at = first_infinite(col)
                if at is not None:
                    self.infinite[i] = self.rows + at + 1
        self.rows += batch.num_rows

    def info(self) -> DatasetInfo:
        if self.rows == 0:
            raise IngestError("the CSV has a header but no data rows")
        columns = []
        for i, f in enumerate(self.schema):
            dtype = _text_dtype(self.kinds[i]) if i in self.kinds else _csv_dtype(f.type)
            if dtype == "float64" and i in self.infinite:
                raise infinite(f.name, self.infinite[i])
            columns.append(Column(f.name, dtype, self.nulls[i], **self.ranges.of(i, dtype)))
        return DatasetInfo("tabular", "csv", self.rows, columns)


# Which types a text column may still be, given the type its earlier batches fitted.
_LADDER = {"null": ("int64", "float64", "bool"), "int64": ("int64", "float64"),
           "float64": ("float64",), "bool": ("bool",), "string": ()}


def _narrowest(col: pa.Array, kind: str) -> str:
    if kind == "string" or col.null_count == len(col):
        return kind
    values = col.drop_null()
    for candidate in _LADDER[kind]:
        if _fits(values, candidate):
            return candidate
    return "string"


def _fits(values: pa.Array, kind: str) -> bool:
    if kind == "bool":
        return bool(pc.all(pc.is_in(values, value_set=pa.array(_BOOL_WORDS))).as_py())
    # The CSV reader ignores padding around numbers; a cast does not. An int64 column must
    # also read as float64 ("0x1f" does not), so that widening it later stays true of the
    # batches already seen.
    trimmed = pc.utf8_trim_whitespace(values)
    try:
        for target in ((pa.int64(), pa.float64()) if kind == "int64" else (pa.float64(),)):
            trimmed.cast(target)
    except pa.ArrowInvalid:
        return False
    return True


def _text_dtype(kind: str) -> str:
    return "string" if kind == "null" else kind


def _csv_dtype(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_floating(t):
        return "float64"
    if pa.types.is_boolean(t):
        return "bool"
    return "string"


_CONVERSION = re.compile(r"In CSV column #(\d+): .*CSV conversion error to (\w+)")


def _replan(path: Path, plan: _CsvPlan, message: str) -> None:
    """Change the plan after a pyarrow error, or raise the IngestError that explains it."""
    if "straddl" in message:
        if plan.block_size >= MAX_BLOCK_SIZE:
            raise IngestError(f"a row is longer than {MAX_BLOCK_SIZE >> 20} MiB; "
                              "rows that long are not supported")
        plan.block_size = min(plan.block_size * 4, MAX_BLOCK_SIZE)
        return
    match = _CONVERSION.search(message)
    if match is None or "utf8" in message.lower() or plan.schema is None:
        raise _diagnose(path, plan, message)
    name = plan.schema.names[int(match.group(1))]
    if name in plan.inferred:
        raise _diagnose(path, plan, message)
    plan.retypes += 1
    plan.inferred.add(name)
    # Columns that were empty in the first block were typed "null" from no evidence: re-type
    # them in the same pass rather than one pass each. After a few retries, re-type them all.
    plan.inferred.update(f.name for f in plan.schema if pa.types.is_null(f.type))
    if plan.retypes >= 3:
        plan.inferred.update(plan.schema.names)


def _diagnose(path: Path, plan: _CsvPlan, message: str) -> IngestError:
    """pyarrow does not say where a bad row is: find it with a second, slower pass."""
    if "utf8" in message.lower():
        return _bad_utf8(path)
    return (_find_ragged_row(path, len(plan.names)) or _utf8_error(path)
            or IngestError(f"the CSV cannot be parsed: {message}"))


# The diagnostic pass must take the fields pyarrow took (up to a block long). The limit is
# process-wide: raise it once here, as setting and restoring it per call would race.
csv.field_size_limit(max(csv.field_size_limit(), MAX_BLOCK_SIZE))


def _find_ragged_row(path: Path, width: int) -> IngestError | None:
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        return _scan_rows(csv.reader(fh), width)


def _scan_rows(reader: Any, width: int) -> IngestError | None:
    row, last_line = 0, 0
    try:
        next(reader, None)  # the header
        last_line = reader.line_num
        for record in reader:
            first_line, last_line = last_line + 1, reader.line_num
            if not record:  # blank lines are skipped, as pyarrow does
                continue
            row += 1
            if len(record) != width:
                return IngestError(
                    f"row {row} (line {first_line} of the file, counting the header as line 1) "
                    f"has {len(record)} fields; the header has {width}", row=row)
    except csv.Error as exc:
        return IngestError(f"the CSV cannot be parsed near line {reader.line_num} "
                           f"(counting the header as line 1): {exc}", row=row + 1)
    return None


def _bad_utf8(path: Path) -> IngestError:
    return _utf8_error(path) or IngestError("the file is not valid UTF-8 text; save it as UTF-8")


def _utf8_error(path: Path) -> IngestError | None:
    where = _find_bad_utf8(path)
    if where is None:
        return None
    offset, line = where
    return IngestError(f"the file is not valid UTF-8 text: the byte at offset {offset} on line "
                       f"{line} (counting the header as line 1) cannot be decoded; "
                       "save the file as UTF-8")


def _find_bad_utf8(path: Path) -> tuple[int, int] | None:
    """(byte offset, 1-based line) of the first byte that is not UTF-8, or None."""
    pending, base, newlines = b"", 0, 0
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            data = pending + chunk
            try:
                data.decode("utf-8")
                good = len(data)
            except UnicodeDecodeError as exc:
                if not (chunk and exc.reason == "unexpected end of data"):
                    return base + exc.start, newlines + data.count(b"\n", 0, exc.start) + 1
                good = exc.start  # a character split across two reads
            newlines += data.count(b"\n", 0, good)
            base += good
            pending = data[good:]
            if not chunk:
                return None
