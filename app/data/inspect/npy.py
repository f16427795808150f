"""NPY inspection: a 1-D or 2-D numeric array, its NaNs counted and infinities refused in
chunks read with plain reads (never pickled, never held whole)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.data.formats import IngestError
from app.data.inspect._common import Ranges, check_width, infinite
from app.data.schema import Column, DatasetInfo

_NPY_CHUNK_BYTES = 8 << 20


def inspect_npy(path: Path, max_columns: int) -> DatasetInfo:
    """A .npy array as columns x0, x1, … with their NaN counts."""
    arr = _open_npy(path)
    _check_npy_array(arr)
    check_width(1 if arr.ndim == 1 else arr.shape[1], max_columns)  # before a count per column
    n_rows = arr.shape[0]
    width = 1 if arr.ndim == 1 else arr.shape[1]
    nulls = _npy_nans(path, arr) if arr.dtype.kind == "f" else [0] * width
    dtype = _npy_dtype(arr.dtype)
    ranges = _npy_ranges(path, arr)
    columns = [Column(f"x{i}", dtype, nulls[i], **ranges.of(i, dtype)) for i in range(width)]
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
            hits = np.flatnonzero(np.isinf(chunk))
            if hits.size:
                at = int(hits[0]) + start
                row, col = (at % n, at // n) if fortran else (at // width, at % width)
                raise infinite(f"x{col}", row + 1)
            flat = np.flatnonzero(np.isnan(chunk)) + start
            cols = flat // n if fortran else flat % width
            counts += np.bincount(cols, minlength=width)
    return [int(c) for c in counts]


def _npy_ranges(path: Path, arr: np.ndarray) -> Ranges:
    """Each column's range, in chunks of whole rows (whole columns, Fortran order) read with
    plain reads, like _npy_nans."""
    n, width = arr.shape[0], (1 if arr.ndim == 1 else arr.shape[1])
    ranges = Ranges(width)
    if arr.dtype.kind == "b":
        return ranges
    fortran = arr.ndim == 2 and arr.flags.f_contiguous and not arr.flags.c_contiguous
    line = n if fortran else width  # values of one row (one column, Fortran) on disk
    step = max(1, _NPY_CHUNK_BYTES // (arr.dtype.itemsize * line)) * line
    with open(path, "rb") as fh:
        fh.seek(arr.offset)  # type: ignore[attr-defined]
        for start in range(0, arr.size, step):
            chunk = np.fromfile(fh, dtype=arr.dtype, count=min(step, arr.size - start))
            lines = chunk.reshape(-1, line)
            if fortran:  # each line is a whole column: columns start // n onwards
                first = start // n
                for j, values in enumerate(lines):
                    _widen(ranges, first + j, values)
            else:
                for j in range(width):
                    _widen(ranges, j, lines[:, j])
    return ranges


def _widen(ranges: Ranges, i: int, values: np.ndarray) -> None:
    if values.dtype.kind == "f":
        values = values[~np.isnan(values)]
    if values.size:
        ranges.add(i, float(values.min()), float(values.max()))
