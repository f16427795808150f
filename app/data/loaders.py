"""Loaders: a stored dataset as the numeric arrays that models take."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.data.images import IMAGES_FILE, INDEX_FILE, LABELS_FILE
from app.data.ingest import DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, iter_jsonl

NUMERIC_DTYPES = ("float64", "float32", "int64", "int32", "bool")  # bool counts as 0/1
_ARROW_TYPES = {"float64": pa.float64(), "float32": pa.float32(), "int64": pa.int64(),
                "int32": pa.int32(), "bool": pa.bool_(), "string": pa.string()}
_JSONL_BLOCK_ROWS = 1 << 16


class FeatureError(Exception):
    """Features that do not fit the data: the API answers 422 naming the column."""

    def __init__(self, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


def numeric_columns(columns: list[dict[str, Any]]) -> list[str]:
    """Names of the columns a model can take as numbers (floats, ints and bools), in order."""
    return [c["name"] for c in columns if c["dtype"] in NUMERIC_DTYPES]


# Column names (compared case-insensitively) that hold a label or a row id, not a measurement:
# a job that names no features leaves them out, since clustering on a label or an id is a
# silent mistake; naming them in features trains on them. (Which column a text dataset takes
# its labels from is another question, answered by app.data.text.LABEL_COLUMNS.)
LABEL_LIKE = ("target", "label", "y", "id")


def left_out(columns: list[dict[str, Any]], features: list[str] | None,
             exclude: Sequence[str] = ()) -> list[str]:
    """Numeric columns named like a label or an id, which a job without features leaves out."""
    if features is not None:
        return []
    return [name for name in numeric_columns(columns)
            if name not in exclude and name.lower() in LABEL_LIKE]


def check_features(columns: list[dict[str, Any]], features: list[str] | None,
                   exclude: Sequence[str] = ()) -> list[str]:
    """Resolve a job's feature list: all numeric columns but `exclude` and the label-like ones
    when None; else check it."""
    by_name = {c["name"]: c for c in columns}
    if features is None:
        skipped = left_out(columns, None, exclude)
        chosen = [name for name in numeric_columns(columns)
                  if name not in exclude and name not in skipped]
        if not chosen and skipped:
            quoted = ", ".join(f'"{n}"' for n in skipped)
            raise FeatureError(f"the dataset's only numeric columns ({', '.join(skipped)}) are "
                               "named like a label or an id, so they are not used unless asked "
                               f"for: name them in features, e.g. features: [{quoted}]")
        if not chosen:
            raise FeatureError("the dataset has no numeric columns to use as features "
                               f"(its columns: {_describe(columns)})")
    else:
        chosen = _checked_names(features, by_name, exclude)
    for name in chosen:
        _check_usable(by_name[name], implicit=features is None)
    return chosen


def _checked_names(features: list[str], by_name: dict[str, dict[str, Any]],
                   exclude: Sequence[str]) -> list[str]:
    if not features:
        raise FeatureError("features is empty; name at least one column, or leave features out "
                           "to use every numeric column")
    seen: set[str] = set()
    for name in features:
        if name not in by_name:
            raise FeatureError(f'unknown column "{name}"; available: {_names(list(by_name))}',
                               column=name)
        if name in exclude:
            raise FeatureError(f'column "{name}" is the target; it cannot also be a feature',
                               column=name)
        if name in seen:
            raise FeatureError(f'column "{name}" is listed twice in features', column=name)
        seen.add(name)
    return list(features)


def _check_usable(column: dict[str, Any], *, implicit: bool) -> None:
    name, dtype, nulls = column["name"], column["dtype"], column.get("nulls", 0)
    if dtype not in NUMERIC_DTYPES:
        raise FeatureError(f'column "{name}" is {dtype}; features must be numeric '
                           "(float, int or bool)", column=name)
    if nulls:
        fix = "pass features without it" if implicit else "leave it out of features"
        raise FeatureError(f'column "{name}" has {nulls} missing values; fill them in the data '
                           f"or {fix}", column=name)


def _describe(columns: list[dict[str, Any]]) -> str:
    return ", ".join(f"{c['name']} ({c['dtype']})" for c in columns[:20]) + (
        ", …" if len(columns) > 20 else "")


def _names(names: list[str], limit: int = 20) -> str:
    return ", ".join(names[:limit]) + (", …" if len(names) > limit else "")


# ------------------------------------------------------------------------------------ loading


def load_matrix(path: Path, format: str, features: list[str],
                columns: list[dict[str, Any]]) -> np.ndarray:
    """The chosen columns as a C-contiguous 2-D array: float32 if all are float32, else float64."""
    by_name = {c["name"]: c for c in columns}
    for name in features:
        if name not in by_name:
            raise FeatureError(f'unknown column "{name}"; available: {_names(list(by_name))}',
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
        return pq.read_table(path, columns=[name]).column(0).to_numpy()
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
    return table.column(0).to_numpy()


def _table_matrix(table: pa.Table, features: list[str], dtype: np.dtype) -> np.ndarray:
    # Column-major while filling (each column is one contiguous write), row-major at the end.
    out = np.empty((table.num_rows, len(features)), dtype=dtype, order="F")
    for j, name in enumerate(features):
        start = 0
        for chunk in table.column(name).chunks:
            if chunk.null_count:  # NaN stands for missing; ints and bools cannot hold it
                chunk = chunk.cast(pa.float64())
            out[start:start + len(chunk), j] = chunk.to_numpy(zero_copy_only=False)
            start += len(chunk)
    return np.ascontiguousarray(out)


def _npy_2d(path: Path) -> np.ndarray:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
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
