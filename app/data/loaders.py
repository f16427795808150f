"""Loaders: a stored dataset as the numeric arrays that models take."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.data.features import FeatureError, listed, numeric_columns
from app.data.formats import DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, iter_jsonl
from app.data.images import IMAGES_FILE, INDEX_FILE, LABELS_FILE

_ARROW_TYPES = {"float64": pa.float64(), "float32": pa.float32(), "int64": pa.int64(),
                "int32": pa.int32(), "bool": pa.bool_(), "string": pa.string()}
_JSONL_BLOCK_ROWS = 1 << 16


# ------------------------------------------------------------------------------------ loading


def load_matrix(path: Path, format: str, features: list[str],
                columns: list[dict[str, Any]]) -> np.ndarray:
    """The chosen columns as a C-contiguous 2-D array: float32 if all are float32, else float64."""
    by_name = {c["name"]: c for c in columns}
    for name in features:
        if name not in by_name:
            raise FeatureError(f'unknown column "{name}"; available: {listed(list(by_name))}',
                               column=name)
    all32 = all(by_name[f]["dtype"] == "float32" for f in features)
    dtype = np.dtype(np.float32 if all32 else np.float64)
    path = Path(path)
    if format == "csv":
        return _table_matrix(_csv_numeric(path, features, columns), features, dtype)
    if format == "parquet":
        return _table_matrix(pq.read_table(path, columns=features), features, dtype)
    if format == "npy":
        arr = _npy_2d(path)
        return np.ascontiguousarray(arr[:, _npy_indices(features)], dtype=dtype)
    if format == "jsonl":
        return _jsonl_matrix(path, features, dtype)
    raise ValueError(f"unknown dataset format {format!r}")


# Parsing text is most of a CSV job's load time; the first job on a dataset keeps its numeric
# columns beside it in Arrow IPC (memory-mapped, no parsing), and later jobs read those.
CSV_CACHE = "numeric.arrow"


def _csv_numeric(path: Path, features: list[str], columns: list[dict[str, Any]]) -> pa.Table:
    cache = path.parent / CSV_CACHE
    stat = path.stat()
    source = f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    if cache.exists():
        try:
            with pa.memory_map(str(cache)) as mapped:
                table = pa.ipc.open_file(mapped).read_all()
            meta = table.schema.metadata or {}
            if meta.get(b"source") == source and all(f in table.column_names for f in features):
                return table.select(features)
        except (OSError, pa.ArrowInvalid):  # a damaged cache is rebuilt, never trusted
            pass
    by_name = {c["name"]: c for c in columns}
    wanted = list(dict.fromkeys([*numeric_columns(columns), *features]))
    table = _read_csv(path, wanted, {f: _ARROW_TYPES[by_name[f]["dtype"]] for f in wanted})
    _write_cache(table.replace_schema_metadata({"source": source}), cache)
    return table.select(features)


def _write_cache(table: pa.Table, cache: Path) -> None:
    staged = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    try:
        with pa.OSFile(str(staged), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(staged, cache)  # atomic: concurrent jobs see a whole cache or none
    except OSError:
        pass  # the cache only saves time; a read-only or full disk must not fail the job
    finally:
        staged.unlink(missing_ok=True)


def load_column(path: Path, format: str, name: str, *, dtype: str | None = None) -> np.ndarray:
    """One column as a numpy array (strings as an object array); `dtype` pins a CSV's type."""
    path = Path(path)
    if format == "csv":
        return _csv_column(path, name, dtype)
    if format == "parquet":
        column: np.ndarray = pq.read_table(path, columns=[name]).column(0).to_numpy()
        return column
    if format == "npy":
        arr = _npy_2d(path)
        index = int(name[1:]) if name[:1] == "x" and name[1:].isdigit() else -1
        if not 0 <= index < arr.shape[1]:
            raise FeatureError(f'unknown column "{name}"; the array has columns '
                               f"x0..x{arr.shape[1] - 1}", column=name)
        return np.array(arr[:, index])
    if format == "jsonl":
        return _jsonl_column(path, name)
    raise ValueError(f"unknown dataset format {format!r}")


def _read_csv(path: Path, names: list[str], types: dict[str, pa.DataType] | None) -> pa.Table:
    # Small blocks parse twice as fast with quoted newlines allowed; only rows longer than a
    # block need the big one (inspection accepted rows up to MAX_BLOCK_SIZE).
    try:
        return _read_csv_blocks(path, names, types, DEFAULT_BLOCK_SIZE)
    except pa.ArrowInvalid as exc:
        if "straddling" not in str(exc) and "block size" not in str(exc):
            raise
        return _read_csv_blocks(path, names, types, MAX_BLOCK_SIZE)


def _read_csv_blocks(path: Path, names: list[str], types: dict[str, pa.DataType] | None,
                     block_size: int) -> pa.Table:
    # Same parsing and null rules as inspection, so the stored schema holds here too.
    return pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=block_size),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(include_columns=names, column_types=types,
                                             strings_can_be_null=True),
    )


def _csv_column(path: Path, name: str, dtype: str | None) -> np.ndarray:
    if dtype is not None:
        table = _read_csv(path, [name], {name: _ARROW_TYPES[dtype]})
    else:
        try:
            table = _read_csv(path, [name], None)
        except pa.ArrowInvalid:  # the first block's type guess failed later on: keep the text
            table = _read_csv(path, [name], {name: pa.string()})
    column: np.ndarray = table.column(0).to_numpy()
    return column


def _table_matrix(table: pa.Table, features: list[str], dtype: np.dtype) -> np.ndarray:
    # Column-major while filling (each column is one contiguous write), row-major at the end.
    out = np.empty((table.num_rows, len(features)), dtype=dtype, order="F")
    return np.ascontiguousarray(fill_columns(out, table, features))


def fill_columns(out: np.ndarray, table: pa.Table, names: list[str]) -> np.ndarray:
    """Write the named columns of table into the columns of out (rows x names); returns out."""
    for j, name in enumerate(names):
        start = 0
        for chunk in table.column(name).chunks:
            if chunk.null_count:  # NaN stands for missing; ints and bools cannot hold it
                chunk = chunk.cast(pa.float64())
            out[start:start + len(chunk), j] = chunk.to_numpy(zero_copy_only=False)
            start += len(chunk)
    return out


def _npy_2d(path: Path) -> np.ndarray:
    arr: np.ndarray = np.load(path, mmap_mode="r", allow_pickle=False)
    return arr.reshape(-1, 1) if arr.ndim == 1 else arr


def _npy_indices(names: list[str]) -> list[int] | slice:
    indices = [int(name[1:]) for name in names]  # npy columns are named x0, x1, …
    if indices == list(range(len(indices))):
        return slice(0, len(indices))  # a view: no fancy-index copy of the whole array
    return indices


def jsonl_rows(path: Path, names: list[str]) -> Iterable[list[Any]]:
    indices = [int(name[1:]) if name[1:].isdigit() else -1 for name in names]
    for _, value in iter_jsonl(path):
        if isinstance(value, list):
            yield [value[i] for i in indices]
        else:
            yield [value[name] for name in names]


def _jsonl_matrix(path: Path, features: list[str], dtype: np.dtype) -> np.ndarray:
    # Convert in blocks: a list of Python floats for the whole file would be ~10x the array.
    blocks, rows = [], []
    for row in jsonl_rows(path, features):
        rows.append(row)
        if len(rows) == _JSONL_BLOCK_ROWS:
            blocks.append(np.array(rows, dtype=dtype))
            rows = []
    blocks.append(np.array(rows, dtype=dtype).reshape(-1, len(features)))
    return np.ascontiguousarray(np.concatenate(blocks))


def _jsonl_column(path: Path, name: str) -> np.ndarray:
    values = [row[0] for row in jsonl_rows(path, [name])]
    kinds = {type(v) for v in values if v is not None}
    if kinds == {bool} and None not in values:
        return np.array(values, dtype=bool)
    if kinds == {int} and None not in values:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:  # beyond int64: inspection typed the column float64 too
            return np.array(values, dtype=np.float64)
    if kinds and kinds <= {int, float}:
        return np.array(values, dtype=np.float64)
    return np.array(values, dtype=object)


# ------------------------------------------------------------------------------------- images


def load_images(dataset_dir: Path) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """An image dataset's folder as (uint8 NHWC images, int64 labels or None, class names)."""
    dataset_dir = Path(dataset_dir)
    index = json.loads((dataset_dir / INDEX_FILE).read_text(encoding="utf-8"))
    classes = [str(c) for c in index.get("classes", [])]
    # Memory-mapped and read-only: the pages are read as batches touch them.
    images = np.asarray(np.load(dataset_dir / IMAGES_FILE, mmap_mode="r", allow_pickle=False))
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{IMAGES_FILE} holds {images.dtype} {images.shape}, expected uint8 NHWC")
    if not classes:
        return images, None, []
    labels = np.asarray(np.load(dataset_dir / LABELS_FILE, allow_pickle=False))
    if labels.dtype != np.int64 or labels.shape != (images.shape[0],):
        raise ValueError(f"{LABELS_FILE} holds {labels.dtype} {labels.shape}, expected int64 "
                         f"({images.shape[0]},)")
    return images, labels, classes


def warm_up() -> None:
    """Spin up pyarrow's CSV reader once: its first call in a process costs as much as a read."""
    import io

    pacsv.read_csv(io.BytesIO(b"a,b\n1,2\n"),
                   parse_options=pacsv.ParseOptions(newlines_in_values=True))
