"""Tabular datasets exported as CSV, safe to open in a spreadsheet (no formula injection)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.data.loaders import jsonl_rows

# A cell starting with one of these is run as a formula by Excel, LibreOffice and Sheets.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_ROWS_PER_CHUNK = 4096


def escape_cell(value: Any) -> Any:
    """A string that a spreadsheet would run as a formula gets a leading `'` (OWASP's advice).

    Numbers stay numbers: "-1.5" is data, "-2+3" or "=HYPERLINK(…)" is not.
    """
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _NUMBER.match(value):
        return "'" + value
    return value


def csv_chunks(path: Path, fmt: str, names: list[str]) -> Iterator[bytes]:
    """The dataset's rows as CSV with a header, in chunks (a large file is never held whole)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([escape_cell(n) for n in names])
    for n, row in enumerate(_rows(path, fmt, names), 1):
        writer.writerow([escape_cell(_plain(v)) for v in row])
        if n % _ROWS_PER_CHUNK == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _rows(path: Path, fmt: str, names: list[str]) -> Iterable[list[Any]]:
    if fmt == "csv":
        # Every column as text: the export echoes the cells as uploaded, escaped.
        reader = pacsv.open_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, include_columns=names))
        for batch in reader:
            yield from _batch_rows(batch, names)
    elif fmt == "parquet":
        for batch in pq.ParquetFile(path).iter_batches(columns=names, batch_size=_ROWS_PER_CHUNK):
            yield from _batch_rows(batch, names)
    elif fmt == "npy":
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        arr = arr.reshape(-1, 1) if arr.ndim == 1 else arr
        for start in range(0, arr.shape[0], _ROWS_PER_CHUNK):
            yield from np.asarray(arr[start:start + _ROWS_PER_CHUNK]).tolist()
    else:
        yield from jsonl_rows(path, names)


def _batch_rows(batch: pa.RecordBatch, names: list[str]) -> Iterable[list[Any]]:
    columns = [batch.column(batch.schema.get_field_index(n)).to_pylist() for n in names]
    return (list(row) for row in zip(*columns, strict=True))
