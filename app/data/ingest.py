"""Dataset ingest: sniff an upload's format, validate it while streaming, infer its schema.

Inspection reads every byte (a bad row at the end must fail the upload, not the training job),
but never holds the file in memory: CSV goes through pyarrow's streaming reader in small blocks,
Parquet through its footer, NPY through chunked reads, JSONL line by line. A ZIP of images is
decoded member by member into arrays written next to the upload (see app.data.images).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.data.images import ImageError, ZipLimits, ingest_zip

try:  # orjson is a dependency, but ingest must not break where it is missing
    import orjson

    _json_loads: Any = orjson.loads
    _JSONError: type[Exception] = orjson.JSONDecodeError
except ImportError:  # pragma: no cover
    _json_loads = json.loads
    _JSONError = ValueError

FORMATS = ("csv", "parquet", "npy", "jsonl", "zip")
ACCEPTED = ("CSV with a header row (.csv), Parquet (.parquet, .pq), NumPy arrays (.npy), "
            "JSON Lines (.jsonl, .ndjson) or a ZIP of PNG/JPEG images (.zip)")
DTYPES = ("float64", "float32", "int64", "int32", "bool", "string")

_EXTENSIONS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npy": "npy",
               ".jsonl": "jsonl", ".ndjson": "jsonl", ".zip": "zip"}
# Local file header, and the end record alone (an empty archive): refused later with a reason.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# An .xls workbook is an OLE2 compound file; an .xlsx is a ZIP holding xl/workbook.xml.
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# An .xlsx is found by its member's name in the central directory at the end of the file, read
# as bytes: parsing the directory with zipfile would come before the ZIP's member-count limit.
_XLSX_MEMBER = b"xl/workbook.xml"
_XLSX_TAIL = 1 << 20
EXCEL = ("Excel is not supported; export CSV: this is an Excel workbook{named}. Save the sheet "
         "as CSV (comma-separated, UTF-8) and upload that file")
# Delimiters a file named .csv is often written with instead of a comma (spreadsheets in
# locales whose decimal mark is a comma write semicolons), with the word a message uses.
_OTHER_DELIMITERS = {"\t": "tabs", ";": "semicolons", "|": "pipes"}
_SNIFF_LINES = 20
_SNIFF_CHARS = 1 << 16
# pyarrow's streaming CSV reader queues up to 32 blocks ahead of the consumer (its background
# reader's queue), so peak memory is ~32 x block_size: 1 MiB keeps it near 40 MB and is as
# fast as 4 MiB (~190 MB/s on one core either way), where 4 MiB peaks near 120 MB.
DEFAULT_BLOCK_SIZE = 1 << 20
# A row longer than a block must be read with bigger blocks; past this a row is refused.
MAX_BLOCK_SIZE = 8 << 20
_MAX_CSV_PASSES = 10
_HEADER_LIMIT = 1 << 20
_MAX_JSONL_LINE = 16 << 20
_NPY_CHUNK_BYTES = 8 << 20
# The words pyarrow's CSV reader takes as booleans (a list: building an Array at import time
# would import pandas, which the API's start-up does not need).
_BOOL_WORDS = ["1", "True", "TRUE", "true", "0", "False", "FALSE", "false"]


class IngestError(Exception):
    """Bad upload: an HTTP status (400/413/415/422), a human detail and where the problem is."""

    def __init__(self, detail: str, *, status: int = 422, row: int | None = None,
                 column: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.row = row
        self.column = column
        # What app/api/errors.py's map reads (the shared contract): reason, field and kind.
        self.reason, self.field = detail, "file"
        self.kind = {400: "bad_request", 413: "too_large", 415: "unsupported"}.get(status, "invalid")

    def errors(self) -> list[dict[str, Any]]:
        """Field errors for the problem response; the message already names row and column."""
        return [{"field": "file", "message": self.detail}]


@dataclass
class Column:
    """One column of an inferred schema."""

    name: str
    dtype: str  # one of DTYPES
    nulls: int


@dataclass
class DatasetInfo:
    """What inspection learned about an upload."""

    kind: str  # "tabular", "image" or "text"
    format: str  # one of FORMATS
    n_rows: int
    columns: list[Column]  # empty for images
    # Kind-specific facts for the dataset row (images: see ImageSetInfo.details).
    details: dict[str, Any] = field(default_factory=dict)


def detect_format(path: Path, filename: str | None) -> str:
    """The file's format: by extension first, then by magic bytes; 415 when neither says."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    _refuse_excel(path, head, filename)
    suffix = Path(filename).suffix.lower() if filename else ""
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    named = f" ({filename!r})" if filename else ""
    raise IngestError(f"unsupported file format{named}: accepted formats are {ACCEPTED}",
                      status=415)


def _refuse_excel(path: Path, head: bytes, filename: str | None) -> None:
    """An Excel workbook, whatever its name, is a 415 that says to export CSV."""
    named = f" ({filename!r})" if filename else ""
    if head.startswith(_OLE2_MAGIC):
        raise IngestError(EXCEL.format(named=named), status=415)
    if head.startswith(_ZIP_MAGIC) and _XLSX_MEMBER in _tail(path, _XLSX_TAIL):
        raise IngestError(EXCEL.format(named=named), status=415)


def _tail(path: Path, size: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - size))
        return fh.read()


def inspect_file(path: Path, filename: str | None, *, block_size: int = DEFAULT_BLOCK_SIZE,
                 derived_dir: Path | None = None, zip_limits: ZipLimits | None = None,
                 max_columns: int = 10_000) -> DatasetInfo:
    """Validate an upload and infer its schema; a ZIP's arrays are written into derived_dir."""
    path = Path(path)
    if _is_blank(path):
        raise IngestError("the file is empty")
    fmt = detect_format(path, filename)
    if fmt == "zip":
        if derived_dir is None:
            raise ValueError("a ZIP of images needs derived_dir for its arrays")
        return _inspect_zip(path, Path(derived_dir), zip_limits or ZipLimits())
    if fmt == "csv":
        info = _with_text(path, _inspect_csv(path, block_size))
    elif fmt == "parquet":
        info = _with_text(path, _inspect_parquet(path, max_columns))
    elif fmt == "npy":
        info = _inspect_npy(path, max_columns)
    else:
        info = _with_text(path, _inspect_jsonl(path))
    _check_width(len(info.columns), max_columns)
    return info


def _check_width(n_columns: int, limit: int) -> None:
    """A schema entry per column lives on the dataset's row and in every answer about it."""
    if n_columns > limit:
        raise IngestError(f"the data has {n_columns} columns, more than the limit of {limit} "
                          "(PRETRAINER_MAX_DATASET_COLUMNS); a wide array is usually meant "
                          "transposed (rows x columns)", status=413)


def _with_text(path: Path, info: DatasetInfo) -> DatasetInfo:
    """A table with a string column named `text` is a text dataset, with its facts."""
    from dataclasses import asdict

    from app.data import text  # it reads columns through the loaders, which import this module

    facts = text.details(path, info.format, [asdict(c) for c in info.columns])
    if facts is not None:
        info.kind = "text"
        info.details = {**info.details, **facts}
    return info


def _is_blank(path: Path) -> bool:
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 16):
            if chunk.strip():
                return False
    return True


def _check_names(names: list[str], where: str) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names, 1):
        if not name.strip():
            raise IngestError(f"column {i} of the {where} has no name; every column needs a "
                              "unique, non-empty name")
        if name in seen:
            raise IngestError(f'the {where} names column "{name}" twice (columns {seen[name]} '
                              f"and {i}); column names must be unique", column=name)
        seen[name] = i


# ---------------------------------------------------------------------------------------- CSV


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


def _inspect_csv(path: Path, block_size: int) -> DatasetInfo:
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
                          f"offset {nul}); accepted formats are {ACCEPTED}", status=415)


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
    _check_names(header, "header")
    if all(_is_number(name) for name in header):
        raise IngestError(f"line 1 holds only numbers ({', '.join(header[:5])}), not column "
                          "names; a CSV must start with a header row naming the columns")
    return header


def _refuse_other_delimiter(path: Path, width: int) -> None:
    """A file separated by tabs or semicolons under a .csv name is a 422 naming the delimiter.

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
        _check_names(reader.schema.names, "header")
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

    def add(self, batch: pa.RecordBatch) -> None:
        for i, col in enumerate(batch.columns):
            self.nulls[i] += col.null_count
            if i in self.kinds:
                self.kinds[i] = _narrowest(col, self.kinds[i])
            if i not in self.infinite:
                at = _first_infinite(col)
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
                raise _infinite(f.name, self.infinite[i])
            columns.append(Column(f.name, dtype, self.nulls[i]))
        return DatasetInfo("tabular", "csv", self.rows, columns)


def _first_infinite(col: pa.Array) -> int | None:
    """The 0-based index of the first infinite number in a column, text or float; else None."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        try:
            col = pc.utf8_trim_whitespace(col).cast(pa.float64())
        except pa.ArrowInvalid:
            return None  # not all numbers: a text column, where "inf" is a word
    if not pa.types.is_floating(col.type):
        return None
    hits = pc.is_inf(col)
    if not pc.any(hits).as_py():
        return None
    return int(pc.index(hits, True).as_py())


def _infinite(column: str, row: int) -> IngestError:
    return IngestError(f'column "{column}" holds an infinite number in row {row} (data rows '
                       "counted from 1, the header not counted); infinities cannot be trained "
                       "on: replace them with a finite value or leave the cell empty",
                       row=row, column=column)


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


# ---------------------------------------------------------------------------------------- ZIP


def _inspect_zip(path: Path, derived_dir: Path, limits: ZipLimits) -> DatasetInfo:
    try:
        found = ingest_zip(path, derived_dir, limits)
    except ImageError as exc:
        raise IngestError(exc.message, status=exc.status) from exc
    return DatasetInfo("image", "zip", found.n_images, [], details=found.details())


# ------------------------------------------------------------------------------------ Parquet


def _inspect_parquet(path: Path, max_columns: int) -> DatasetInfo:
    try:
        with pq.ParquetFile(path) as pf:
            _check_width(len(pf.schema_arrow), max_columns)  # before a statistic per column
            return _parquet_info(pf)
    except (pa.ArrowException, OSError) as exc:
        raise IngestError(f"this is not a valid Parquet file: {exc}") from exc


def _parquet_info(pf: pq.ParquetFile) -> DatasetInfo:
    schema = pf.schema_arrow
    fields = [f for f in schema if not _is_pandas_index(f.name)]
    if not fields:
        raise IngestError("the Parquet file has no columns")
    _check_names([f.name for f in fields], "Parquet schema")
    for f in fields:
        if pa.types.is_nested(f.type):
            raise IngestError(f'column "{f.name}" is nested ({f.type}); only flat columns of '
                              "numbers, booleans and strings are supported", column=f.name)
    n_rows = pf.metadata.num_rows
    if n_rows == 0:
        raise IngestError("the Parquet file has no data rows")
    nulls = _parquet_nulls(pf, [f.name for f in fields])
    floats = [f.name for f in fields if pa.types.is_floating(f.type)]  # decimals are finite
    _refuse_parquet_infinities(pf, floats)
    columns = [Column(f.name, _arrow_dtype(f.type), n) for f, n in zip(fields, nulls)]
    return DatasetInfo("tabular", "parquet", n_rows, columns)


def _is_pandas_index(name: str) -> bool:
    # pandas writes a non-range index as an extra column; it is not data to train on.
    return re.fullmatch(r"__index_level_\d+__", name) is not None


def _parquet_nulls(pf: pq.ParquetFile, names: list[str]) -> list[int]:
    """Nulls per column from row-group statistics; columns without them are counted by reading."""
    md = pf.metadata
    leaf = {md.schema.column(i).path: i for i in range(md.num_columns)}
    counts, unknown = [0] * len(names), set()
    for g in range(md.num_row_groups):
        group = md.row_group(g)
        for j, name in enumerate(names):
            stats = group.column(leaf[name]).statistics
            if stats is not None and stats.has_null_count:
                counts[j] += stats.null_count
            else:
                unknown.add(j)
    for j in sorted(unknown):
        counts[j] = _count_nulls(pf, names[j])
    return counts


def _refuse_parquet_infinities(pf: pq.ParquetFile, names: list[str]) -> None:
    """Refuse an infinity in a float column; row groups whose statistics are finite are skipped."""
    md = pf.metadata
    leaf = {md.schema.column(i).path: i for i in range(md.num_columns)}
    start = 0
    for g in range(md.num_row_groups):
        group = md.row_group(g)
        for name in names:
            stats = group.column(leaf[name]).statistics
            finite = stats is not None and stats.has_min_max and bool(
                np.isfinite([stats.min, stats.max]).all())
            if finite:
                continue
            col = pf.read_row_group(g, columns=[name]).column(0).combine_chunks()
            at = _first_infinite(col)
            if at is not None:
                raise _infinite(name, start + at + 1)
        start += group.num_rows


def _count_nulls(pf: pq.ParquetFile, name: str) -> int:
    # One column, batch by batch: bounded memory even without statistics.
    return sum(b.column(0).null_count for b in pf.iter_batches(batch_size=1 << 16, columns=[name]))


def _arrow_dtype(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return _arrow_dtype(t.value_type)
    if pa.types.is_floating(t):
        return "float64" if t.bit_width == 64 else "float32"
    if pa.types.is_decimal(t):
        return "float64"
    if pa.types.is_integer(t):
        small = t.bit_width < 32 or (t.bit_width == 32 and pa.types.is_signed_integer(t))
        return "int32" if small else "int64"
    if pa.types.is_boolean(t):
        return "bool"
    return "string"


# ---------------------------------------------------------------------------------------- NPY


def _inspect_npy(path: Path, max_columns: int) -> DatasetInfo:
    arr = _open_npy(path)
    _check_npy_array(arr)
    _check_width(1 if arr.ndim == 1 else arr.shape[1], max_columns)  # before a count per column
    n_rows = arr.shape[0]
    width = 1 if arr.ndim == 1 else arr.shape[1]
    nulls = _npy_nans(path, arr) if arr.dtype.kind == "f" else [0] * width
    dtype = _npy_dtype(arr.dtype)
    columns = [Column(f"x{i}", dtype, nulls[i]) for i in range(width)]
    return DatasetInfo("tabular", "npy", n_rows, columns)


def _open_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "Python objects" in str(exc):
            raise IngestError("the array holds Python objects; only numeric arrays are "
                              "accepted") from exc
        raise IngestError(f"this is not a valid .npy file: {_npy_reason(exc)}") from exc
    except Exception as exc:  # numpy parses the header with ast/tokenize: anything can come out
        raise IngestError(f"this is not a valid .npy file: {_npy_reason(exc)}") from exc
    if not isinstance(arr, np.memmap):  # an .npz archive under a .npy name
        getattr(arr, "close", lambda: None)()
        raise IngestError("this is not a .npy file (an .npz archive?); upload one array as .npy")
    return arr


def _npy_reason(exc: Exception) -> str:
    """numpy's reason for refusing a header, unless it holds internals (reprs, addresses)."""
    text = str(exc)
    if isinstance(exc, ValueError) and "<" not in text and "0x" not in text and len(text) < 200:
        return text
    return "its header is not a dict of 'descr', 'fortran_order' and 'shape' literals"


def _check_npy_array(arr: np.ndarray) -> None:
    if arr.dtype.names is not None or arr.dtype.kind not in "biuf":
        raise IngestError(f"the array's dtype is {arr.dtype}; only numeric arrays (bool, int, "
                          "float) are accepted")
    if arr.ndim == 0 or arr.ndim > 2:
        raise IngestError(f"the array has {arr.ndim} dimensions {arr.shape}; tabular data is "
                          "1-D or 2-D (rows x columns); images are uploaded in another format")
    if arr.shape[0] == 0:
        raise IngestError(f"the array has no data rows (shape {arr.shape})")
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise IngestError(f"the array has no columns (shape {arr.shape})")


def _npy_dtype(dtype: np.dtype) -> str:
    if dtype.kind == "b":
        return "bool"
    if dtype.kind == "f":
        return "float32" if dtype.itemsize <= 4 else "float64"
    small = dtype.itemsize < 4 or (dtype.itemsize == 4 and dtype.kind == "i")
    return "int32" if small else "int64"


def _npy_nans(path: Path, arr: np.ndarray) -> list[int]:
    """NaNs per column, read in chunks with plain reads so that no page stays mapped.

    An infinity is refused here, naming its column and row, as the chunk is at hand.
    """
    n, width = arr.shape[0], (1 if arr.ndim == 1 else arr.shape[1])
    fortran = arr.ndim == 2 and arr.flags.f_contiguous and not arr.flags.c_contiguous
    counts = np.zeros(width, dtype=np.int64)
    step = max(1, _NPY_CHUNK_BYTES // arr.dtype.itemsize)
    with open(path, "rb") as fh:
        fh.seek(arr.offset)  # type: ignore[attr-defined]
        for start in range(0, arr.size, step):
            chunk = np.fromfile(fh, dtype=arr.dtype, count=min(step, arr.size - start))
            infinite = np.flatnonzero(np.isinf(chunk))
            if infinite.size:
                at = int(infinite[0]) + start
                row, col = (at % n, at // n) if fortran else (at // width, at % width)
                raise _infinite(f"x{col}", row + 1)
            flat = np.flatnonzero(np.isnan(chunk)) + start
            cols = flat // n if fortran else flat % width
            counts += np.bincount(cols, minlength=width)
    return [int(c) for c in counts]


# -------------------------------------------------------------------------------------- JSONL


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
            _check_names(self.names, f"object on line {line}")
            self.arrays = False
        else:
            raise IngestError(f"line {line} is not a JSON array or object; each line must be "
                              "one row: [1.0, 2.0] or {\"a\": 1.0, \"b\": 2.0}")
        self.first_line = line
        self.rows = 0
        self.nulls = [0] * len(self.names)
        self.kinds: list[set[str]] = [set() for _ in self.names]

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
        columns = [Column(name, _json_dtype(kinds), nulls)
                   for name, kinds, nulls in zip(self.names, self.kinds, self.nulls)]
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


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based line number, parsed value) for each non-blank line; IngestError on bad JSON."""
    for line, raw in _jsonl_lines(path):
        yield line, _parse_json_line(raw, line)


def _inspect_jsonl(path: Path) -> DatasetInfo:
    schema: _JsonlSchema | None = None
    for line, value in iter_jsonl(path):
        if schema is None:
            schema = _JsonlSchema(value, line)
        schema.add(value, line)
    if schema is None:
        raise IngestError("the file is empty")
    return schema.info()


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
        return _json_loads(raw)
    except (_JSONError, ValueError, RecursionError) as exc:
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
