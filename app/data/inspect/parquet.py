"""Parquet inspection: the schema and row count from the footer, nulls from row-group
statistics (reading a column only where they are missing), infinities by row group."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from app.data.formats import IngestError
from app.data.inspect._common import (
    Ranges,
    check_names,
    check_width,
    first_infinite,
    infinite,
)
from app.data.schema import Column, DatasetInfo


def inspect_parquet(path: Path, max_columns: int) -> DatasetInfo:
    """A Parquet file's schema, row count and nulls; refused where a column cannot be used."""
    try:
        with pq.ParquetFile(path) as pf:
            check_width(len(pf.schema_arrow), max_columns)  # before a statistic per column
            return _parquet_info(pf)
    except (pa.ArrowException, OSError) as exc:
        raise IngestError(f"this is not a valid Parquet file: {exc}") from exc


def _parquet_info(pf: pq.ParquetFile) -> DatasetInfo:
    schema = pf.schema_arrow
    fields = [f for f in schema if not _is_pandas_index(f.name)]
    if not fields:
        raise IngestError("the Parquet file has no columns")
    check_names([f.name for f in fields], "Parquet schema")
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
    dtypes = [_arrow_dtype(f.type) for f in fields]
    ranges = _parquet_ranges(pf, [f.name for f in fields], dtypes)
    columns = [Column(f.name, dtype, n, **ranges.of(i, dtype))
               for i, (f, dtype, n) in enumerate(zip(fields, dtypes, nulls))]
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
            at = first_infinite(col)
            if at is not None:
                raise infinite(name, start + at + 1)
        start += group.num_rows


def _parquet_ranges(pf: pq.ParquetFile, names: list[str], dtypes: list[str]) -> Ranges:
    """Each numeric column's range, read column by column in batches (bounded memory)."""
    ranges = Ranges(len(names))
    for i, (name, dtype) in enumerate(zip(names, dtypes, strict=True)):
        if dtype in ("string", "bool"):
            continue
        for batch in pf.iter_batches(batch_size=1 << 16, columns=[name]):
            ranges.add_array(i, batch.column(0))
    return ranges


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
