"""A batch job's answers as table columns, and the writers that append them to a result file
block by block (Parquet, CSV or NPY), so the whole result is never held in memory.

Columns: predict gives `prediction` (or `prediction_0..` when each row's answer is a vector or
an image), `probability_<class>` for a classifier or a mixture, and any other per-row answer
under its own name (`reconstruction_error`, …); embed gives `e0..eK`. An NPY result is the
same columns as one 2-D array; a label that is not a number is stored there as the index of
its class in the model's classes.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.data.export import escape_cell

# The answer keys of predict and the names their columns take.
_NAMES = {"predictions": "prediction", "probabilities": "probability"}
# Quotes only where a cell needs them, as spreadsheets and csv.writer write (pyarrow quotes
# every name of its own header: the header is written by csv.writer).
_CSV = pacsv.WriteOptions(quoting_style="needed", include_header=False)


@dataclass(frozen=True)
class Block:
    """Answers for consecutive rows: column names, and one 1-D array per column."""

    names: list[str]
    columns: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0


def predict_block(answer: dict[str, Any], classes: list[str]) -> Block:
    """The columns of a predict answer; classes name the probability columns (their index
    when the model has no class names, as a mixture's components)."""
    names: list[str] = []
    columns: list[np.ndarray] = []
    for key, values in answer.items():
        arr = np.asarray(values)
        base = _NAMES.get(key, key)
        if arr.ndim == 1:
            names.append(base)
            columns.append(arr)
            continue
        flat = arr.reshape(len(arr), -1)
        labels = classes if key == "probabilities" and len(classes) == flat.shape[1] else None
        names += [f"{base}_{labels[j] if labels else j}" for j in range(flat.shape[1])]
        columns += [flat[:, j] for j in range(flat.shape[1])]
    return Block(names, columns)


def embed_block(vectors: np.ndarray) -> Block:
    """The columns e0..eK of an embedding."""
    flat = np.asarray(vectors).reshape(len(vectors), -1)
    return Block([f"e{j}" for j in range(flat.shape[1])], [flat[:, j] for j in range(flat.shape[1])])


class ResultWriter(Protocol):
    """Appends blocks to an open result file; close() ends the file (not the handle)."""

    def write(self, block: Block) -> None: ...

    def close(self) -> None: ...


def open_writer(fmt: str, sink: BinaryIO, class_values: list[Any]) -> ResultWriter:
    """A writer of the format onto sink; class_values: the model's labels, in class order (the
    NPY result stores a non-numeric label as its index there)."""
    if fmt == "parquet":
        return _ArrowWriter(sink, lambda schema: pq.ParquetWriter(sink, schema))
    if fmt == "csv":
        return _ArrowWriter(sink, lambda schema: _csv_writer(sink, schema), escape=True)
    if fmt == "npy":
        return _NpyWriter(sink, class_values)
    raise ValueError(f"unknown result format {fmt!r}")


def _csv_writer(sink: BinaryIO, schema: pa.Schema) -> pacsv.CSVWriter:
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow([escape_cell(n) for n in schema.names])
    sink.write(header.getvalue().encode())
    return pacsv.CSVWriter(sink, schema, write_options=_CSV)


class _ArrowWriter:
    """Parquet or CSV: the first block fixes the schema; the rest are cast to it."""

    def __init__(self, sink: BinaryIO, make: Any, *, escape: bool = False) -> None:
        self.sink, self.make, self.escape = sink, make, escape
        self.writer: Any = None
        self.schema: pa.Schema | None = None

    def write(self, block: Block) -> None:
        table = pa.table({n: self._cells(c) for n, c in zip(block.names, block.columns,
                                                             strict=True)})
        if self.writer is None:
            self.schema = table.schema
            self.writer = self.make(self.schema)
        self.writer.write_table(table if table.schema == self.schema else table.cast(self.schema))

    def _cells(self, column: np.ndarray) -> Any:
        # A label a spreadsheet would run as a formula is escaped, as the dataset export does.
        if self.escape and column.dtype.kind in "OUS":
            return [escape_cell(v) for v in column.tolist()]
        return column

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class _NpyWriter:
    """A 2-D array: the header is written first (room for any row count: numpy pads it), rows
    are appended, and the header is written again with the final count."""

    def __init__(self, sink: BinaryIO, class_values: list[Any]) -> None:
        self.sink = sink
        self.index = {str(v): i for i, v in enumerate(class_values)}
        self.dtype: np.dtype | None = None
        self.width = 0
        self.rows = 0
        self.header_bytes = 0

    def write(self, block: Block) -> None:
        matrix = np.column_stack([self._numbers(c) for c in block.columns])
        if self.dtype is None:
            self.dtype, self.width = matrix.dtype, matrix.shape[1]
            self.header_bytes = self._header(0)
        np.ascontiguousarray(matrix, dtype=self.dtype).tofile(self.sink)
        self.rows += len(matrix)

    def _numbers(self, column: np.ndarray) -> np.ndarray:
        if column.dtype.kind not in "OUS":
            return column
        return np.array([self.index[str(v)] for v in column.tolist()], dtype=np.int64)

    def _header(self, rows: int) -> int:
        assert self.dtype is not None
        start = self.sink.tell()
        np.lib.format.write_array_header_1_0(self.sink, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
            "shape": (rows, self.width)})
        return self.sink.tell() - start

    def close(self) -> None:
        if self.dtype is None:  # no rows at all: an empty 2-D array
            self.dtype = np.dtype(np.float64)
            self._header(0)
            return
        end = self.sink.tell()
        self.sink.seek(0)
        if self._header(self.rows) != self.header_bytes:
            raise RuntimeError("the NPY header changed size")  # numpy pads for growth: never
        self.sink.seek(end)
