"""app.data.loaders: feature checks, matrices equal to pandas/numpy reads."""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.data.features import FeatureError, check_features, left_out, numeric_columns
from app.data.formats import IngestError
from app.data.inspect import inspect_file
from app.data.loaders import load_column, load_matrix

COLUMNS = [
    {"name": "x", "dtype": "float64", "nulls": 0},
    {"name": "n", "dtype": "int64", "nulls": 0},
    {"name": "label", "dtype": "string", "nulls": 0},
    {"name": "flag", "dtype": "bool", "nulls": 0},
    {"name": "gappy", "dtype": "float32", "nulls": 3},
    {"name": "y", "dtype": "int32", "nulls": 0},
]


def stored(path: Path) -> list[dict]:
    """The columns as the API stores them after inspection."""
    return [asdict(c) for c in inspect_file(path, path.name).columns]


def feature_error(*args, **kw) -> FeatureError:
    with pytest.raises(FeatureError) as info:
        check_features(*args, **kw)
    return info.value


# ------------------------------------------------------------------------------------ features


def test_numeric_columns_include_bools_in_order():
    assert numeric_columns(COLUMNS) == ["x", "n", "flag", "gappy", "y"]


def test_no_features_means_every_clean_numeric_column_but_the_target():
    cols = [c for c in COLUMNS if c["name"] != "gappy"]
    assert check_features(cols, None, exclude=["flag"]) == ["x", "n"]


def test_no_features_leaves_out_columns_named_like_a_label_or_an_id():
    cols = [c for c in COLUMNS if c["name"] != "gappy"]
    assert check_features(cols, None) == ["x", "n", "flag"]
    assert left_out(cols, None) == ["y"] and left_out(cols, ["x"]) == []
    assert check_features(cols, ["x", "y"]) == ["x", "y"]


def test_explicit_features_keep_their_order():
    assert check_features(COLUMNS, ["y", "x", "flag"]) == ["y", "x", "flag"]


def test_unknown_feature_names_it_and_lists_the_columns():
    err = feature_error(COLUMNS, ["x", "zz"])
    assert err.column == "zz"
    assert err.message == 'unknown column "zz"; available: x, n, label, flag, gappy, y'


def test_string_feature_names_the_column_and_dtype():
    err = feature_error(COLUMNS, ["x", "label"])
    assert err.column == "label" and '"label" is string' in err.message


def test_feature_with_nulls_names_the_count():
    err = feature_error(COLUMNS, ["gappy"])
    assert err.column == "gappy" and '"gappy" has 3 missing values' in err.message
    # Without a feature list the same column is still refused, not silently dropped.
    assert feature_error(COLUMNS, None).column == "gappy"


@pytest.mark.parametrize("features, exclude, words", [
    ([], (), ["features is empty"]),
    (["x", "x"], (), ['"x" is listed twice']),
    (["x", "y"], ["y"], ['"y" is the target']),
])
def test_other_feature_list_errors(features, exclude, words):
    err = feature_error(COLUMNS, features, exclude=exclude)
    for word in words:
        assert word in err.message


def test_no_numeric_columns_at_all():
    err = feature_error([{"name": "s", "dtype": "string", "nulls": 0}], None)
    assert err.column is None
    assert "no numeric columns" in err.message and "s (string)" in err.message


# ---------------------------------------------------------------------------------- load_matrix


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "a": rng.normal(size=500), "b": rng.integers(-5, 5, size=500),
        "label": [f"s{i % 7}" for i in range(500)], "c": rng.normal(size=500),
        "flag": rng.integers(0, 2, size=500).astype(bool),
    })


def test_csv_matrix_equals_pandas(tmp_path, frame):
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    features = check_features(stored(path), None)
    assert features == ["a", "b", "c", "flag"]
    x = load_matrix(path, "csv", features, stored(path))
    assert x.dtype == np.float64 and x.flags.c_contiguous and x.shape == (500, 4)
    np.testing.assert_array_equal(x, pd.read_csv(path)[features].to_numpy(dtype=np.float64))
    sub = load_matrix(path, "csv", ["c", "a"], stored(path))
    np.testing.assert_array_equal(sub, frame[["c", "a"]].to_numpy())


def test_csv_matrix_after_a_late_type_change(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i}\n" for i in range(100_000)) + "0.5,1\n")
    cols = stored(path)
    assert [c["dtype"] for c in cols] == ["float64", "int64"]
    x = load_matrix(path, "csv", ["a", "b"], cols)
    np.testing.assert_array_equal(x, pd.read_csv(path).to_numpy(dtype=np.float64))


def test_parquet_matrix_keeps_float32(tmp_path, frame):
    path = tmp_path / "d.parquet"
    table = pa.table({"p": frame["a"].astype(np.float32), "q": frame["c"].astype(np.float32),
                      "i": frame["b"].astype(np.int32), "label": frame["label"]})
    pq.write_table(table, path, row_group_size=64)
    x = load_matrix(path, "parquet", ["p", "q"], stored(path))
    assert x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x, pd.read_parquet(path)[["p", "q"]].to_numpy())
    mixed = load_matrix(path, "parquet", ["q", "i"], stored(path))
    assert mixed.dtype == np.float64
    np.testing.assert_array_equal(mixed, pd.read_parquet(path)[["q", "i"]].to_numpy(np.float64))


@pytest.mark.parametrize("arr", [
    np.arange(30, dtype=np.float32).reshape(10, 3),
    np.asfortranarray(np.arange(30, dtype=np.float64).reshape(10, 3)),
    np.arange(10, dtype=np.int64),
])
def test_npy_matrix_selects_columns(tmp_path, arr):
    path = tmp_path / "d.npy"
    np.save(path, arr)
    cols = stored(path)
    names = [c["name"] for c in cols]
    full = load_matrix(path, "npy", names, cols)
    assert full.flags.c_contiguous and full.ndim == 2
    expected = np.load(path).reshape(10, -1)
    np.testing.assert_array_equal(full, expected)
    assert full.dtype == (np.float32 if arr.dtype == np.float32 else np.float64)
    if len(names) == 3:
        np.testing.assert_array_equal(load_matrix(path, "npy", ["x2", "x0"], cols),
                                      expected[:, [2, 0]])


def test_jsonl_matrix_arrays_and_objects(tmp_path, frame):
    arrays = tmp_path / "a.jsonl"
    arrays.write_text("".join(json.dumps([a, int(b)]) + "\n" for a, b in zip(frame.a, frame.b)))
    x = load_matrix(arrays, "jsonl", ["x1", "x0"], stored(arrays))
    np.testing.assert_array_equal(x, frame[["b", "a"]].to_numpy(np.float64))
    objects = _records(tmp_path, frame)
    x = load_matrix(objects, "jsonl", ["a", "flag", "b"], stored(objects))
    np.testing.assert_array_equal(x, frame[["a", "flag", "b"]].to_numpy(np.float64))


def _records(tmp_path: Path, frame: pd.DataFrame) -> Path:
    # json.dumps writes floats that read back exactly (pandas' to_json rounds to 10 digits).
    path = tmp_path / "o.jsonl"
    rows = frame.astype(object).to_dict(orient="records")
    path.write_text("".join(json.dumps({k: _plain(v) for k, v in r.items()}) + "\n" for r in rows))
    return path


def _plain(v: object) -> object:
    return v.item() if isinstance(v, np.generic) else v


def test_load_column(tmp_path, frame):
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    labels = load_column(path, "csv", "label")
    assert labels.dtype == object and list(labels[:3]) == ["s0", "s1", "s2"]
    np.testing.assert_array_equal(load_column(path, "csv", "b", dtype="int64"), frame.b)
    objects = _records(tmp_path, frame)
    assert list(load_column(objects, "jsonl", "label")) == list(frame.label)
    np.testing.assert_array_equal(load_column(objects, "jsonl", "b"), frame.b)
    npy = tmp_path / "d.npy"
    np.save(npy, np.arange(6).reshape(3, 2))
    np.testing.assert_array_equal(load_column(npy, "npy", "x1"), [1, 3, 5])
    with pytest.raises(FeatureError):
        load_column(npy, "npy", "x2")


# --------------------------------------------------------------- inspection and loading agree


_CELLS = ["1", "-2", "3.5", "1e3", "", "NA", "nan", "true", "false", "x", " 4 ", "0x1f", "+3",
          "1_0", "2020-01-01", '"q,uoted"', '"multi\nline"', "inf", "-0", "TRUE", "0",
          "99999999999999999999"]


def _random_csv(rng: random.Random) -> bytes:
    # Mostly-uniform columns with rare odd cells: late type changes across small blocks.
    ncol = rng.randint(1, 5)
    base = [rng.choice(_CELLS) for _ in range(ncol)]
    lines = [",".join(f"h{i}" for i in range(ncol))]
    for _ in range(rng.randint(1, 300)):
        lines.append(",".join(b if rng.random() < 0.97 else rng.choice(_CELLS) for b in base))
    return ("\n".join(lines) + "\n").encode()


def test_every_numeric_column_inspection_reports_loads_with_its_null_count(tmp_path):
    """Property: the stored schema is true of the whole file, whatever its first block said."""
    rng = random.Random(7)
    path = tmp_path / "d.csv"
    for _ in range(150):
        path.write_bytes(_random_csv(rng))
        try:
            info = inspect_file(path, "d.csv", block_size=rng.choice([64, 256, 1 << 20]))
        except IngestError as exc:  # "inf" in a column that is numbers otherwise
            assert "infinite number" in exc.reason
            continue
        cols = [asdict(c) for c in info.columns]
        names = numeric_columns(cols)
        if not names:
            continue
        x = load_matrix(path, "csv", names, cols)
        assert x.shape == (info.n_rows, len(names))
        nulls = {c["name"]: c["nulls"] for c in cols}
        assert [int(n) for n in np.isnan(x).sum(axis=0)] == [nulls[n] for n in names]


def test_hex_ints_that_later_meet_floats_become_strings(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n" + "1,1\n" * 500 + "0x1f,1\n" + "1,1\n" * 500 + "3.5,1\n")
    cols = stored_with_block(path, 256)
    assert [c["dtype"] for c in cols] == ["string", "int64"]


def stored_with_block(path: Path, block_size: int) -> list[dict]:
    return [asdict(c) for c in inspect_file(path, path.name, block_size=block_size).columns]


def test_csv_numeric_cache_gives_the_same_matrix_and_survives_damage(tmp_path):
    from app.data.inspect import inspect_file
    from app.data.loaders import CSV_CACHE

    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 3))
    path = tmp_path / "data.csv"
    path.write_text("a,b,label,c\n" + "".join(
        f"{float(r[0])!r},{float(r[1])!r},k{i % 3},{float(r[2])!r}\n" for i, r in enumerate(x)))
    columns = [vars(c) for c in inspect_file(path, "data.csv").columns]
    first = load_matrix(path, "csv", ["a", "c"], columns)
    assert (tmp_path / CSV_CACHE).is_file()
    np.testing.assert_array_equal(first, x[:, [0, 2]])
    np.testing.assert_array_equal(load_matrix(path, "csv", ["c", "b"], columns), x[:, [2, 1]])
    (tmp_path / CSV_CACHE).write_bytes(b"not arrow at all")
    np.testing.assert_array_equal(load_matrix(path, "csv", ["a", "c"], columns), first)
