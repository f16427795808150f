"""app.data.training: what a job trains on is decided once, and a stored job reads it back."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from app.data import training
from app.data.training import JobDataError

COLUMNS = [
    {"name": "a", "dtype": "float64", "nulls": 0},
    {"name": "b", "dtype": "int64", "nulls": 0},
    {"name": "id", "dtype": "int64", "nulls": 0},
    {"name": "text", "dtype": "string", "nulls": 0},
    {"name": "label", "dtype": "string", "nulls": 0},
]
CSV = "a,b,id,text,label\n1.5,2,0,good day,pos\n-0.5,4,1,bad day,neg\n2.0,6,2,fine day,pos\n"


def dataset(path: Path | None = None, **over: object) -> SimpleNamespace:
    fields = {"id": "ds_1", "kind": "tabular", "format": "csv", "columns": COLUMNS,
              "blob_key": "datasets/ds_1/data.csv",
              "details": {"text": {"column": "text", "label_column": "label"}}}
    return SimpleNamespace(**{**fields, **over})


def refusal(ds: SimpleNamespace, **kw: object) -> JobDataError:
    with pytest.raises(JobDataError) as info:
        training.decide(ds, **{"features": None, "target": None, "labelled": False, **kw})
    return info.value


def test_a_job_without_features_takes_the_numeric_columns_and_says_what_it_left_out():
    data = training.decide(dataset(), features=None, target=None, labelled=False)
    assert (data.kind, data.features, data.n_features) == ("tabular", ("a", "b"), 2)
    assert data.notes() == {"left_out_columns": ["id"]}


def test_a_labelled_job_on_texts_takes_the_text_column_and_its_label_column():
    data = training.decide(dataset(), features=None, target=None, labelled=True)
    assert (data.kind, data.text_column, data.target, data.n_features) == (
        "text", "text", "label", 1)
    assert data.notes() == {}


@pytest.mark.parametrize("kw, field", [
    ({"target": "nope"}, "target"),
    ({"features": ["a", "nope"]}, "features"),
    ({"features": ["a"], "labelled": True}, "target"),  # transfer without labels
    ({"features": ["text"], "target": "text", "labelled": True}, "target"),
])
def test_a_spec_that_does_not_fit_names_its_field(kw, field):
    assert refusal(dataset(), **kw).field == field


def test_images_take_every_pixel_and_refuse_features():
    images = dataset(kind="image", format="zip", columns=[],
                     details={"labelled": False, "image": {"height": 4, "width": 3,
                                                           "channels": 1}})
    data = training.decide(images, features=None, target=None, labelled=False)
    assert (data.kind, data.features, data.n_features) == ("image", (), 12)
    assert refusal(images, features=["a"]).detail.startswith("features does not apply")
    assert refusal(images, labelled=True).field == "dataset_id"  # no class folders


def test_a_stored_job_reads_back_what_was_decided_and_loads_its_rows(tmp_path):
    (tmp_path / "data.csv").write_text(CSV)
    decided = training.decide(dataset(), features=["a", "b"], target="label", labelled=True)
    stored = training.of_job(dataset(), features=list(decided.features), target=decided.target)
    assert stored == decided
    loaded = training.load(stored, lambda key: tmp_path / Path(key).name)
    np.testing.assert_allclose(loaded.x, [[1.5, 2], [-0.5, 4], [2.0, 6]])
    assert loaded.classes == ["neg", "pos"] and list(loaded.y) == [1, 0, 1]
    assert loaded.input_schema["features"] == [{"name": "a", "dtype": "float64"},
                                               {"name": "b", "dtype": "int64"}]
