"""Dataset inspection: sniff an upload's format, validate it while streaming, infer its schema.

Inspection reads every byte (a bad row at the end must fail the upload, not the training job),
but never holds the file in memory: CSV goes through pyarrow's streaming reader in small blocks,
Parquet through its footer, NPY through chunked reads, JSONL line by line. A ZIP of images is
decoded member by member into arrays written next to the upload (see app.data.images). One
module per format; this one picks the module.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from app.data import text
from app.data.formats import ACCEPTED, DEFAULT_BLOCK_SIZE, IngestError
from app.data.inspect._common import check_width
from app.data.inspect.archive import ZipLimits, inspect_zip
from app.data.inspect.csv import inspect_csv
from app.data.inspect.jsonl import inspect_jsonl
from app.data.inspect.npy import inspect_npy
from app.data.inspect.parquet import inspect_parquet
from app.data.schema import DatasetInfo

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


def detect_format(path: Path, filename: str | None) -> str:
    """The file's format: by extension first, then by magic bytes; unsupported when neither
    says."""
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
                      kind="unsupported")


def _refuse_excel(path: Path, head: bytes, filename: str | None) -> None:
    """An Excel workbook, whatever its name, is refused with a word to export CSV."""
    named = f" ({filename!r})" if filename else ""
    if head.startswith(_OLE2_MAGIC):
        raise IngestError(EXCEL.format(named=named), kind="unsupported")
    if head.startswith(_ZIP_MAGIC) and _XLSX_MEMBER in _tail(path, _XLSX_TAIL):
        raise IngestError(EXCEL.format(named=named), kind="unsupported")


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
        return inspect_zip(path, Path(derived_dir), zip_limits or ZipLimits())
    if fmt == "csv":
        info = _with_text(path, inspect_csv(path, block_size))
    elif fmt == "parquet":
        info = _with_text(path, inspect_parquet(path, max_columns))
    elif fmt == "npy":
        info = inspect_npy(path, max_columns)
    else:
        info = _with_text(path, inspect_jsonl(path))
    check_width(len(info.columns), max_columns)
    return info


def _with_text(path: Path, info: DatasetInfo) -> DatasetInfo:
    """A table with a string column named `text` is a text dataset, with its facts."""
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

