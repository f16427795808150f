"""app.data.inspect: every format's happy path and every way an upload can be refused."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.data.formats import IngestError
from app.data.inspect import detect_format, inspect_file
from app.data.inspect import npy as npy_inspect
from app.data.schema import DatasetInfo

ROOT = Path(__file__).resolve().parents[2]


def put(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def schema(info: DatasetInfo) -> list[tuple[str, str, int]]:
    return [(c.name, c.dtype, c.nulls) for c in info.columns]


def refused(tmp_path: Path, name: str, data: bytes, kind: str = "invalid", **kw: int) -> str:
    """Inspect bytes that must be refused; return the detail (lower case) after checking it."""
    with pytest.raises(IngestError) as info:
        inspect_file(put(tmp_path, name, data), name, **kw)
    err = info.value
    assert err.kind == kind, err.reason
    assert err.field == "file"
    return err.reason.lower()


def npy_bytes(arr: np.ndarray, **kw: bool) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


def parquet_bytes(table: pa.Table, **kw: object) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **kw)
    return buf.getvalue()


# ------------------------------------------------------------------------------ format sniffing


@pytest.mark.parametrize("filename, fmt", [
    ("d.csv", "csv"), ("D.CSV", "csv"), ("d.parquet", "parquet"), ("d.pq", "parquet"),
    ("d.npy", "npy"), ("d.jsonl", "jsonl"), ("d.ndjson", "jsonl"),
])
def test_format_by_extension(tmp_path, filename, fmt):
    assert detect_format(put(tmp_path, "f", b"whatever"), filename) == fmt


def test_format_by_magic_bytes_when_the_name_says_nothing(tmp_path):
    pq_path = put(tmp_path, "a", parquet_bytes(pa.table({"a": [1]})))
    assert detect_format(pq_path, None) == "parquet"
    assert detect_format(put(tmp_path, "b", npy_bytes(np.zeros(3))), "upload.bin") == "npy"


@pytest.mark.parametrize("filename", ["doc.pdf", "d.tsv", None])
def test_unknown_format_is_415_listing_the_accepted_ones(tmp_path, filename):
    with pytest.raises(IngestError) as info:
        detect_format(put(tmp_path, "f", b"%PDF-1.4"), filename)
    assert info.value.kind == "unsupported"
    assert "csv" in info.value.reason.lower() and "parquet" in info.value.reason.lower()


@pytest.mark.parametrize("data", [b"", b"   \n\n\t \r\n"])
@pytest.mark.parametrize("name", ["d.csv", "d.jsonl", "d.npy", "d.parquet"])
def test_empty_file_is_422(tmp_path, name, data):
    assert "empty" in refused(tmp_path, name, data)


# ---------------------------------------------------------------------------------------- CSV


def test_csv_schema_dtypes_and_nulls(tmp_path):
    data = (b"x,y,label,flag,empty\n"
            b"1.5,2,a,true,\n"
            b"3.0,,b,false,\n"
            b",4,,true,\n")
    info = inspect_file(put(tmp_path, "d.csv", data), "d.csv")
    assert (info.kind, info.format, info.n_rows) == ("tabular", "csv", 3)
    assert schema(info) == [("x", "float64", 1), ("y", "int64", 1), ("label", "string", 1),
                            ("flag", "bool", 0), ("empty", "string", 3)]


def test_csv_string_columns_stay_strings(tmp_path):
    info = inspect_file(put(tmp_path, "d.csv", b"x,y,label\n1.5,2,a\n3.0,4,b\n"), "d.csv")
    assert schema(info) == [("x", "float64", 0), ("y", "int64", 0), ("label", "string", 0)]


@pytest.mark.parametrize("data", [
    b'\xef\xbb\xbfa,text\r\n1,"two\r\nlines"\r\n\r\n2,"x, y"\r\n',
    b'a,text\r1,"two\rlines"\r2,"x, y"',
])
def test_csv_bom_line_endings_blank_lines_and_quoted_newlines(tmp_path, data):
    info = inspect_file(put(tmp_path, "d.csv", data), "d.csv")
    assert info.n_rows == 2 and schema(info) == [("a", "int64", 0), ("text", "string", 0)]


@pytest.mark.parametrize("data, words", [
    (b"a,b\n", ["no data rows"]),
    (b"a,b\n\n\n", ["no data rows"]),
    (b"a,a\n1,2\n", ['"a"', "twice"]),
    (b"a,,c\n1,2,3\n", ["column 2", "no name"]),
    (b"1.5,2\n3,4\n", ["line 1", "header"]),
    (b"\na,b\n1,2\n", ["line 1", "header"]),
])
def test_csv_header_problems(tmp_path, data, words):
    detail = refused(tmp_path, "d.csv", data)
    for word in words:
        assert word in detail, detail


@pytest.mark.parametrize("data, row, line, found", [
    (b"a,b\n1,2\n3,4,5\n6,7\n", 2, 3, 3),
    (b"a,b\n1,2\n3,4\n\n6\n", 3, 5, 1),
    (b'a,b\n1,"x\ny"\n3,4,5\n', 2, 4, 3),
])
def test_ragged_row_is_named(tmp_path, data, row, line, found):
    with pytest.raises(IngestError) as info:
        inspect_file(put(tmp_path, "d.csv", data), "d.csv")
    err = info.value
    assert err.kind == "invalid" and err.row == row
    assert err.reason.startswith(f"row {row} (line {line} of the file")
    assert f"has {found} fields; the header has 2" in err.reason


def test_ragged_row_in_a_late_block_is_named(tmp_path):
    rows = [f"{i},{i * 2}" for i in range(5000)]
    rows[4321] += ",9"
    data = ("a,b\n" + "\n".join(rows) + "\n").encode()
    detail = refused(tmp_path, "d.csv", data, block_size=4096)
    assert detail.startswith("row 4322 (line 4323 ")


@pytest.mark.parametrize("data, line, offset", [
    (b"a,b\n1,2\n3,\xff\xfe\n", 3, 10),
    (b"a,b\n1,x\n3,\xff\xfe\n", 3, 10),
    (b"a,b\n" + b"1,x\n" * 3000 + b"2,caf\xe9\n", 3002, 4 + 4 * 3000 + 5),
])
def test_undecodable_text_names_line_and_offset(tmp_path, data, line, offset):
    detail = refused(tmp_path, "d.csv", data, block_size=4096)
    assert "utf-8" in detail and f"offset {offset} on line {line}" in detail, detail


def test_undecodable_header_is_422(tmp_path):
    assert "utf-8" in refused(tmp_path, "d.csv", b"caf\xe9,b\n1,2\n")


@pytest.mark.parametrize("data, kind", [
    (bytes(range(256)) * 50, "unsupported"),
    (b"a,b\n1,2\x00\n", "unsupported"),
    ("a,b\n1,2\n".encode("utf-16"), "invalid"),
])
def test_binary_junk_is_not_a_csv(tmp_path, data, kind):
    detail = refused(tmp_path, "junk.csv", data, kind=kind)
    assert "not a csv" in detail or "utf-16" in detail


def test_late_block_type_changes_widen_the_column(tmp_path):
    # The first 4 KiB say int / float / bool / nothing; later rows disagree.
    head = "".join(f"{i},{i}.5,true,,{i}\n" for i in range(1000))
    tail = "7.25,oops,maybe,12,13.5\n,x,,3.5,\n"
    data = ("i,f,b,late,j\n" + head + tail).encode()
    info = inspect_file(put(tmp_path, "d.csv", data), "d.csv", block_size=4096)
    assert info.n_rows == 1002
    assert schema(info) == [("i", "float64", 1), ("f", "string", 0), ("b", "string", 1),
                            ("late", "float64", 1000), ("j", "float64", 1)]


def test_column_empty_in_the_first_block_is_typed_from_later_ones(tmp_path):
    data = ("a,b\n" + "1,\n" * 2000 + "2,3\n2,\n4,5\n").encode()
    info = inspect_file(put(tmp_path, "d.csv", data), "d.csv", block_size=2048)
    assert schema(info) == [("a", "int64", 0), ("b", "int64", 2001)]


def test_rows_longer_than_a_block_are_read(tmp_path):
    data = ("a,text\n1,short\n2," + "x" * 20_000 + "\n3,end\n").encode()
    info = inspect_file(put(tmp_path, "d.csv", data), "d.csv", block_size=4096)
    assert info.n_rows == 3 and schema(info)[1] == ("text", "string", 0)


def test_csv_inspection_streams_in_bounded_memory(tmp_path):
    # ~40 MB: more blocks than pyarrow's read-ahead queue holds. Measured in a fresh process:
    # pyarrow's allocations are invisible to tracemalloc and its peak counter never resets.
    rng = np.random.default_rng(0)
    chunk = io.StringIO()
    np.savetxt(chunk, rng.normal(size=(20_000, 8)), delimiter=",", fmt="%.9g")
    path = tmp_path / "big.csv"
    with open(path, "w") as fh:
        fh.write(",".join(f"c{i}" for i in range(8)) + "\n")
        fh.writelines(chunk.getvalue() for _ in range(25))
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(path)], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    got = json.loads(out)
    assert got["rows"] == 500_000
    assert got["arrow"] < 64 << 20, got
    assert got["py"] < 16 << 20, got
    if got["rss"] is not None:  # Linux only
        assert got["rss"] < 128 << 20, got


# ru_maxrss survives exec, so a child of a big pytest process would report the parent's peak;
# on Linux the peak (VmHWM) can be reset through clear_refs instead.
_MEMORY_PROBE = """
import json, sys, tracemalloc
import pyarrow as pa
from app.data.inspect import inspect_file

def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) << 10 for line in fh if line.startswith(key))

try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = status("VmRSS:")
except OSError:
    base = None
tracemalloc.start()
info = inspect_file(sys.argv[1], "big.csv")
print(json.dumps({"rows": info.n_rows, "py": tracemalloc.get_traced_memory()[1],
                  "arrow": pa.default_memory_pool().max_memory(),
                  "rss": None if base is None else status("VmHWM:") - base}))
"""


# ------------------------------------------------------------------------------------ Parquet


def _table() -> pa.Table:
    return pa.table({
        "f32": pa.array([1.0, None, 3.0, 4.0], pa.float32()),
        "f64": pa.array([1.0, 2.0, None, None], pa.float64()),
        "i32": pa.array([1, 2, 3, 4], pa.int32()),
        "i64": pa.array([1, None, 3, 4], pa.int64()),
        "flag": [True, False, None, True],
        "name": ["a", "b", None, "d"],
    })


_PARQUET_SCHEMA = [("f32", "float32", 1), ("f64", "float64", 2), ("i32", "int32", 0),
                   ("i64", "int64", 1), ("flag", "bool", 1), ("name", "string", 1)]


@pytest.mark.parametrize("kw", [{}, {"write_statistics": False}, {"row_group_size": 1}])
def test_parquet_schema_and_nulls_with_and_without_statistics(tmp_path, kw):
    info = inspect_file(put(tmp_path, "d.parquet", parquet_bytes(_table(), **kw)), "d.parquet")
    assert (info.format, info.n_rows) == ("parquet", 4)
    assert schema(info) == _PARQUET_SCHEMA


def test_parquet_drops_the_pandas_index_column(tmp_path):
    table = pa.table({"a": [1.0, 2.0], "__index_level_0__": [5, 7]})
    info = inspect_file(put(tmp_path, "d.parquet", parquet_bytes(table)), "d.parquet")
    assert [c.name for c in info.columns] == ["a"]


@pytest.mark.parametrize("data, words", [
    (b"PAR1 this is not parquet PAR1", ["not a valid parquet"]),
    (b"just text", ["not a valid parquet"]),
    (parquet_bytes(pa.table({"a": pa.array([], pa.float64())})), ["no data rows"]),
    (parquet_bytes(pa.table({"a": [[1.0, 2.0]], "b": [1]})), ['"a"', "nested"]),
])
def test_parquet_refusals(tmp_path, data, words):
    detail = refused(tmp_path, "d.parquet", data)
    for word in words:
        assert word in detail, detail


# ---------------------------------------------------------------------------------------- NPY


def test_npy_2d_float32_keeps_dtype_and_counts_nans(tmp_path, monkeypatch):
    monkeypatch.setattr(npy_inspect, "_NPY_CHUNK_BYTES", 40)  # NaN counting across many chunks
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    x[[0, 5, 19], 1] = np.nan
    x[7, 2] = np.nan
    for arr in (x, np.asfortranarray(x)):
        info = inspect_file(put(tmp_path, "d.npy", npy_bytes(arr)), "d.npy")
        assert (info.format, info.n_rows) == ("npy", 20)
        assert schema(info) == [("x0", "float32", 0), ("x1", "float32", 3), ("x2", "float32", 1)]


@pytest.mark.parametrize("arr, dtype", [
    (np.arange(5, dtype=np.int64), "int64"), (np.arange(5, dtype=np.int16), "int32"),
    (np.arange(5, dtype=np.uint32), "int64"), (np.ones(5, dtype=bool), "bool"),
    (np.ones(5, dtype=np.float16), "float32"),
])
def test_npy_1d_is_one_column(tmp_path, arr, dtype):
    info = inspect_file(put(tmp_path, "d.npy", npy_bytes(arr)), "d.npy")
    assert info.n_rows == 5 and schema(info) == [("x0", dtype, 0)]


_GOOD_NPY = npy_bytes(np.zeros((10, 3)))


@pytest.mark.parametrize("data, words", [
    (npy_bytes(np.array([1, "a"], dtype=object), allow_pickle=True), ["numeric"]),
    (npy_bytes(np.array(["a", "b"])), ["numeric"]),
    (npy_bytes(np.zeros(3, dtype=[("a", "f8"), ("b", "i4")])), ["numeric"]),
    (npy_bytes(np.zeros(3, dtype=complex)), ["numeric"]),
    (npy_bytes(np.zeros((2, 3, 4))), ["3 dimensions"]),
    (npy_bytes(np.float64(1.0)), ["0 dimensions"]),
    (npy_bytes(np.zeros((0, 3))), ["no data rows"]),
    (npy_bytes(np.zeros((4, 0))), ["no columns"]),
    (_GOOD_NPY[:30], ["not a valid .npy"]),
    (_GOOD_NPY[:150], ["not a valid .npy"]),
    (b"\x93NUMPY\x01\x00garbage", ["not a valid .npy"]),
])
def test_npy_refusals(tmp_path, data, words):
    detail = refused(tmp_path, "d.npy", data)
    for word in words:
        assert word in detail, detail


# -------------------------------------------------------------------------------------- JSONL


def test_jsonl_arrays(tmp_path):
    data = b"[1, 2.5, 3]\n\n[4, 5, null]\r\n[6, 7, 8]"
    info = inspect_file(put(tmp_path, "d.jsonl", data), "d.jsonl")
    assert (info.format, info.n_rows) == ("jsonl", 3)
    assert schema(info) == [("x0", "int64", 0), ("x1", "float64", 0), ("x2", "int64", 1)]


def test_jsonl_objects(tmp_path):
    lines = [{"a": 1, "b": 1.5, "c": True, "d": "x", "e": None},
             {"e": None, "d": "y", "c": False, "b": 2, "a": 3},
             {"a": None, "b": 2.5, "c": None, "d": None, "e": 9.5}]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    info = inspect_file(put(tmp_path, "d.ndjson", b"\xef\xbb\xbf" + data), "d.ndjson")
    assert info.n_rows == 3
    assert schema(info) == [("a", "int64", 1), ("b", "float64", 0), ("c", "bool", 1),
                            ("d", "string", 1), ("e", "float64", 2)]


@pytest.mark.parametrize("data, line, words", [
    (b'[1, 2]\n[3, 4\n', 2, ["not valid json"]),
    (b'[1, 2]\n\n{"a": 1}\n', 3, ["not a json array"]),
    (b'{"a": 1}\n[1]\n', 2, ["not a json object"]),
    (b'[1, 2]\n[3]\n', 2, ["has 1 values, expected 2"]),
    (b'[1, 2]\n[3, true]\n', 2, ["value 2", "numbers"]),
    (b'[1, "a"]\n', 1, ["value 2", "numbers"]),
    (b'{"a": 1, "b": 2}\n{"a": 1}\n', 2, ['missing key "b"']),
    (b'{"a": 1}\n{"a": 1, "z": 2}\n', 2, ['key "z"']),
    (b'{"a": 1}\n{"b": 1}\n', 2, ['missing key "a"']),
    (b'{"a": 1}\n{"a": {"x": 1}}\n', 2, ['key "a"', "nested"]),
    (b'[1]\n[[1]]\n', 2, ["nested"]),
    (b'{"a": 1}\n{"a": 2}\n{"a": "\xff"}\n', 3, ["utf-8"]),
    (b'"just a string"\n', 1, ["not a json array or object"]),
    (b'[]\n', 1, ["empty array"]),
    (b'{"": 1}\n', 1, ["no name"]),
])
def test_jsonl_refusals_name_the_line(tmp_path, data, line, words):
    detail = refused(tmp_path, "d.jsonl", data)
    assert f"line {line}" in detail, detail
    for word in words:
        assert word in detail, detail


# ---------------------------------------------------------------------------- fuzz (no crashes)


def _mutations(rng: random.Random, good: bytes, n: int) -> list[bytes]:
    out = []
    alphabet = b',"\n\r\x00\xff\xfe{}[]:.0123456789aeE-+ tn'
    for _ in range(n):
        if rng.random() < 0.3:
            out.append(bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 200))))
            continue
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randint(0, len(data))
            data[pos:pos + rng.randint(0, 3)] = bytes(rng.choice(alphabet)
                                                     for _ in range(rng.randint(0, 4)))
        out.append(bytes(data))
    return out + [rng.randbytes(rng.randint(0, 300)) for _ in range(n // 3)]


@pytest.mark.parametrize("name, good", [
    ("f.csv", b'a,b,c\n1,2.5,x\n3,,"y,z"\n5,6,true\n' * 3),
    ("f.jsonl", b'{"a": 1, "b": "x"}\n{"a": 2.5, "b": null}\n[1, 2]\n'),
])
def test_random_bytes_give_info_or_ingest_error(tmp_path, name, good):
    """Property: whatever the bytes, inspection answers a schema or an IngestError."""
    rng = random.Random(1234)
    for i, data in enumerate(_mutations(rng, good, 300)):
        path = put(tmp_path, name, data)
        try:
            info = inspect_file(path, name, block_size=64)
        except IngestError as exc:
            assert exc.kind in ("unsupported", "invalid") and exc.reason, data
        else:
            assert isinstance(info, DatasetInfo) and info.n_rows > 0, data


def test_ingest_imports_no_web_queue_or_torch_code():
    """House rule: app.data is pure Python data handling (and the API starts fast)."""
    script = ("import sys, app.data.inspect, app.data.loaders\n"
              "print(sorted({m.split('.')[0] for m in sys.modules}\n"
              "             & {'fastapi', 'starlette', 'celery', 'torch', 'pandas'}))")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "[]"
