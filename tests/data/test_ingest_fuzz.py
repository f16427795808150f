"""Property tests of the ingest parsers: any bytes in, a dataset or a 4xx out, never a crash."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.data.formats import IngestError
from app.data.inspect import inspect_file
from app.data.inspect.archive import ZipLimits
from app.data.schema import DatasetInfo
from tests.data.test_images import png

FUZZ = settings(max_examples=int(os.environ.get("PRETRAINER_FUZZ_EXAMPLES", "150")), deadline=None,
                derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
NAMES = ["d.csv", "d.jsonl", "d.zip", "d.npy", "d.parquet", "d.tsv", None]
LIMITS = ZipLimits(max_members=50, max_uncompressed_bytes=1 << 20, max_ratio=50,
                   max_image_pixels=10_000)


def ingest(content: bytes, filename: str | None) -> DatasetInfo | IngestError:
    """inspect_file on content; an IngestError is returned, anything else propagates."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        path = folder / "upload"
        path.write_bytes(content)
        derived = folder / "derived"
        derived.mkdir()
        try:
            info = inspect_file(path, filename, derived_dir=derived, zip_limits=LIMITS,
                                block_size=1 << 12)
        except IngestError as exc:
            assert exc.reason, exc
            return exc
        assert info.n_rows >= 0 and info.kind in ("tabular", "image", "text")
        assert all(c.dtype and c.name is not None for c in info.columns)
        return info
    finally:
        shutil.rmtree(folder)


@FUZZ
@given(content=st.binary(max_size=2048), filename=st.sampled_from(NAMES))
def test_any_bytes_under_any_name(content, filename):
    ingest(content, filename)


CSV_CELL = st.one_of(st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
                     st.sampled_from(["", "1", "-2.5", "nan", "1e308", "1e999", '"', '""', ",",
                                      "\r", "\n", "true", "9" * 30, "\x00", "\ufeff"]),
                     st.floats(allow_nan=True).map(repr), st.integers().map(str))


@FUZZ
@given(rows=st.lists(st.lists(CSV_CELL, min_size=1, max_size=5), min_size=1, max_size=12),
       sep=st.sampled_from([",", ";", "\t"]), newline=st.sampled_from(["\n", "\r\n", "\r"]))
def test_csv_like_text(rows, sep, newline):
    text = newline.join(sep.join(row) for row in rows)
    result = ingest(text.encode("utf-8", "surrogatepass"), "d.csv")
    if isinstance(result, DatasetInfo):
        assert result.format == "csv"  # (quotes and CRs in cells make rows of their own)


JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=4),
    max_leaves=10)


@FUZZ
@given(lines=st.lists(JSON_VALUE, min_size=1, max_size=10),
       junk=st.sampled_from(["", "{", "\n\n", "]"]))
def test_jsonl_like_lines(lines, junk):
    text = "\n".join(json.dumps(v) for v in lines) + junk
    result = ingest(text.encode(), "d.jsonl")
    if isinstance(result, DatasetInfo):
        assert result.format == "jsonl" and result.n_rows <= len(lines)


MEMBER_NAME = st.one_of(st.sampled_from(["a.png", "cat/a.png", "dog/b.png", "../x.png", "/abs.png",
                                         "a/../../b.png", "x.txt", "dir/", "c/d/e.png", "é.png"]),
                        # zipfile itself cuts a name at NUL and then cannot write it
                        st.text(min_size=1, max_size=12).filter(lambda n: "\0" not in n))
MEMBER_BODY = st.one_of(st.binary(max_size=256),
                        st.integers(1, 40).map(lambda n: png(np.full((n, n), n, np.uint8))),
                        st.just(b"\0" * 200_000))


@FUZZ
@given(members=st.lists(st.tuples(MEMBER_NAME, MEMBER_BODY), max_size=6),
       method=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
def test_zip_archives(members, method):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are part of the test
        for name, body in members:
            zf.writestr(name, body)
    result = ingest(buf.getvalue(), "d.zip")
    if isinstance(result, DatasetInfo):
        assert result.kind == "image" and result.n_rows >= 1


@FUZZ
@given(content=st.binary(min_size=1, max_size=512))
def test_npy_headers_with_garbage_after_them(content):
    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype=np.float64).reshape(3, 2))
    raw = buf.getvalue()
    ingest(raw[:len(raw) // 2] + content, "d.npy")  # a real header, then anything
