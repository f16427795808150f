"""A job's rows read in blocks, in dataset order, never the whole file at once: what a batch
job streams through a model.

The same rows as app.data.training.load gives (the same columns, types and null rules), cut
into blocks of at most `rows` rows: tabular blocks are 2-D float arrays, image blocks uint8
NHWC arrays, text blocks object arrays of str.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.data.formats import DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE
from app.data.images import IMAGES_FILE
from app.data.loaders import _ARROW_TYPES, _npy_indices, fill_columns, jsonl_rows
from app.data.text import as_texts
from app.data.training import JobData


def iter_blocks(data: JobData, path: Callable[[str], Path], rows: int) -> Iterator[Any]:
    """The job's inputs, `rows` at a time, in dataset order.

    path: the local file of a blob key (the blob store's `path`).
    """
    if data.kind == "image":  # the decoded images sit beside the ZIP
        yield from npy_blocks(path(data.folder_key) / IMAGES_FILE, rows)
        return
    file = path(data.blob_key)
    if data.kind == "text":
        yield from _text_blocks(file, data, rows)
        return
    names = list(data.features)
    by_name = {c["name"]: c for c in data.columns}
    dtype = np.dtype(np.float32 if all(by_name[f]["dtype"] == "float32" for f in names)
                     else np.float64)
    if data.format == "npy":
        for block in npy_blocks(file, rows):
            block = block.reshape(-1, 1) if block.ndim == 1 else block
            yield np.ascontiguousarray(block[:, _npy_indices(names)], dtype=dtype)
    elif data.format == "jsonl":
        for values in _jsonl_blocks(file, names, rows):
            yield np.array(values, dtype=dtype).reshape(-1, len(names))
    else:
        for table in _tables(file, data.format, names, by_name, rows):
            yield _rows(table, names, dtype)


def _rows(table: pa.Table, names: list[str], dtype: np.dtype) -> np.ndarray:
    """The named columns as a C-contiguous 2-D array, filled in place (a block is small: no
    column-major staging copy as the whole-file loader makes)."""
    return fill_columns(np.empty((table.num_rows, len(names)), dtype=dtype), table, names)


def npy_blocks(file: Path, rows: int) -> Iterator[np.ndarray]:
    """The rows of a .npy file, `rows` at a time, read from the file (not mapped: the pages a
    mapping touched would stay in the process's memory until it ends)."""
    with open(file, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = _NPY_HEADERS.get(version)
        shape, fortran, dtype = read_header(fh) if read_header else ((), True, np.dtype("O"))
        if dtype.hasobject or fortran or len(shape) < 1:
            # Column-major (a block of rows is not contiguous in the file) or a header this
            # reader does not know: numpy's own loader, which also refuses object arrays.
            arr = np.load(file, mmap_mode="r", allow_pickle=False)
            for start in range(0, len(arr), rows):
                yield np.array(arr[start:start + rows])
            return
        per_row = int(np.prod(shape[1:], dtype=np.int64))
        for start in range(0, shape[0], rows):
            count = min(rows, shape[0] - start)
            block = np.fromfile(fh, dtype=dtype, count=count * per_row)
            if block.size != count * per_row:
                raise ValueError(f"{file.name} ends early: its header says {shape[0]} rows")
            yield block.reshape((count, *shape[1:]))


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}


def _text_blocks(file: Path, data: JobData, rows: int) -> Iterator[np.ndarray]:
    column = data.features[0]
    done = 0
    if data.format == "jsonl":
        values: Iterator[list[Any]] = _jsonl_blocks(file, [column], rows)
        blocks = ([row[0] for row in block] for block in values)
    else:
        by_name = {column: {"name": column, "dtype": "string"}}
        blocks = (t.column(0).to_pylist() for t in _tables(file, data.format, [column], by_name,
                                                            rows))
    for block in blocks:
        yield np.array(as_texts(block, column, first_row=done), dtype=object)
        done += len(block)


def _jsonl_blocks(file: Path, names: list[str], rows: int) -> Iterator[list[list[Any]]]:
    block: list[list[Any]] = []
    for row in jsonl_rows(file, names):
        block.append(row)
        if len(block) == rows:
            yield block
            block = []
    if block:
        yield block


def _tables(file: Path, fmt: str, names: list[str], by_name: dict[str, dict[str, Any]],
            rows: int) -> Iterator[pa.Table]:
    """Blocks of at most `rows` rows of the named columns of a CSV or Parquet file."""
    if fmt == "parquet":
        # Not pre-buffered: pyarrow would otherwise hold the whole file's column chunks.
        for batch in pq.ParquetFile(file, pre_buffer=False).iter_batches(batch_size=rows,
                                                                         columns=names):
            yield pa.Table.from_batches([batch])
        return
    if fmt != "csv":
        raise ValueError(f"unknown dataset format {fmt!r}")
    for batch in _csv_batches(file, {n: _ARROW_TYPES[by_name[n]["dtype"]] for n in names}):
        for start in range(0, batch.num_rows, rows):
            yield pa.Table.from_batches([batch.slice(start, rows)])


def _csv_batches(file: Path, types: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
    """The CSV's record batches, parsed with the same rules as inspection and the loaders.

    Small blocks keep the reader's read-ahead near 40 MB (see DEFAULT_BLOCK_SIZE); a row longer
    than a block needs big ones: the file is then read again with those, skipping the rows
    already given.
    """
    done = 0
    try:
        for batch in _csv_reader(file, types, DEFAULT_BLOCK_SIZE):
            done += batch.num_rows
            yield batch
        return
    except pa.ArrowInvalid as exc:
        if "straddling" not in str(exc) and "block size" not in str(exc):
            raise
    for batch in _csv_reader(file, types, MAX_BLOCK_SIZE):
        skip, done = min(done, batch.num_rows), done - min(done, batch.num_rows)
        if skip < batch.num_rows:
            yield batch.slice(skip)


def _csv_reader(file: Path, types: dict[str, pa.DataType], block_size: int) -> Any:
    return pacsv.open_csv(
        file,
        read_options=pacsv.ReadOptions(block_size=block_size),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(include_columns=list(types), column_types=types,
                                             strings_can_be_null=True),
    )
