"""app.serving.inputs: predict instances as the matrix a model takes, exactly as at training."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from app.data.features import check_features
from app.data.inspect import inspect_file
from app.data.loaders import load_matrix
from app.errors import Invalid
from app.serving.inputs import instances_to_matrix


def stored(path: Path) -> list[dict]:
    """The columns as the API stores them after inspection."""
    return [asdict(c) for c in inspect_file(path, path.name).columns]


FEATURES = ["x0", "x1", "x2", "x3"]


def instance_error(instances, features=FEATURES) -> str:
    with pytest.raises(Invalid) as info:
        instances_to_matrix(instances, features, "float64")
    assert info.value.errors == [{"field": "instances", "message": info.value.detail}]
    return info.value.detail


def test_instances_as_lists_and_objects():
    x = instances_to_matrix([[1, 2, 3, 4], [0.5, True, -1, 2]], FEATURES, "float32")
    assert x.dtype == np.float32 and x.shape == (2, 4)
    np.testing.assert_array_equal(x, [[1, 2, 3, 4], [0.5, 1, -1, 2]])
    rows = [{"b": 2, "a": 1, "extra": "ignored"}, {"a": 3, "b": 4}]
    x = instances_to_matrix(rows, ["a", "b"], "float64")
    np.testing.assert_array_equal(x, [[1, 2], [3, 4]])


@pytest.mark.parametrize("instances, message", [
    ([], "instances is empty; send at least one instance"),
    ([[1, 2, 3, 4]] * 3 + [[1, 2, 3, 4, 5]],
     "instances[3] has 5 values, expected 4 (x0, x1, x2, x3)"),
    ([{"x0": 1, "x1": 1, "x2": 1, "x3": 1}] * 2 + [{"x0": 1, "x2": 1, "x3": 1}],
     'instances[2] is missing column "x1"'),
    ([[1, "2", 3, 4]], "instances[0][1] is not a number (got '2')"),
    ([[1, None, 3, 4]], "instances[0][1] is not a number (got null)"),
    ([[1, 2, 3, [4]]], "instances[0][3] is not a number (got [4])"),
    ([{"x0": 1, "x1": 1, "x2": "a", "x3": 1}], "instances[0][\"x2\"] is not a number (got 'a')"),
    ([[1, 2, 3, 4], 5],
     "instances[1] must be a list of 4 numbers or an object keyed by column name"),
    ([[1, 2, float("nan"), 4]], "instances[0][2] is not a finite float64 number (got nan)"),
    ([[1, 2, 3, 10**400]], "instances[0][3] is too large for float64"),
])
def test_instance_errors_are_precise(instances, message):
    assert instance_error(instances) == message


def test_instances_out_of_float32_range():
    with pytest.raises(Invalid) as info:
        instances_to_matrix([[1e39]], ["a"], "float32")
    assert info.value.detail.startswith("instances[0][0] is not a finite float32 number")


def test_a_predict_request_round_trip(tmp_path):
    """Columns from ingest -> features -> a predict request that must match the training matrix."""
    path = tmp_path / "d.npy"
    arr = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    np.save(path, arr)
    cols = stored(path)
    feats = check_features(cols, None)
    train = load_matrix(path, "npy", feats, cols)
    served = instances_to_matrix(arr.tolist(), feats, str(train.dtype))
    np.testing.assert_array_equal(served, train)


def test_float_strings_in_instances_are_not_silently_parsed():
    assert "not a number" in instance_error([["1.5", 2, 3, 4]])


