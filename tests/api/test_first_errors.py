"""The data and errors a user meets first: label-like columns, delimiters, Excel, infinities,
bodies that are not JSON objects, and unknown names answered with "did you mean"."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import upload


def _job(client, **body):
    return client.post("/v1/jobs", json=body)


def _listed(client) -> int:
    return client.get("/v1/datasets").json()["total"]


# ------------------------------------------------------------------- label-like columns


@pytest.mark.parametrize("name", ["target", "Label", "y", "ID"])
def test_label_like_column_is_left_out_and_the_job_says_so(client, name):
    ds = upload(client, f"a,b,{name}\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n".encode())["body"]["id"]
    r = _job(client, dataset_id=ds, algorithm="kmeans", params={"n_clusters": 2})
    assert r.status_code == 202, r.json()
    job = r.json()
    assert job["features"] == ["a", "b"]
    assert job["metrics"] == {"left_out_columns": [name]}
    assert client.get(f"/v1/jobs/{job['id']}").json()["metrics"] == {"left_out_columns": [name]}


def test_label_like_column_named_in_features_is_trained_on(client):
    ds = upload(client, b"a,b,id\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")["body"]["id"]
    r = _job(client, dataset_id=ds, algorithm="kmeans", params={"n_clusters": 2},
             features=["a", "b", "id"])
    assert r.status_code == 202, r.json()
    assert r.json()["features"] == ["a", "b", "id"] and r.json()["metrics"] == {}


def test_a_column_that_only_contains_a_label_word_is_a_feature(client):
    ds = upload(client, b"a,ids,my_label\n1,2,0\n3,4,1\n5,6,0\n")["body"]["id"]
    r = _job(client, dataset_id=ds, algorithm="pca")
    assert r.status_code == 202 and r.json()["features"] == ["a", "ids", "my_label"]


def test_only_label_like_numeric_columns_is_422_saying_how_to_include_them(client):
    ds = upload(client, b"id,y\n1,2\n3,4\n5,6\n")["body"]["id"]
    r = _job(client, dataset_id=ds, algorithm="pca")
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "features"
    assert 'features: ["id", "y"]' in r.json()["detail"]
    assert client.get("/v1/jobs").json()["total"] == 0


def test_a_column_named_as_target_is_not_reported_as_left_out(client):
    ds = upload(client, b"a,b,label,id\n1,2,0,1\n3,4,1,2\n5,6,0,3\n7,8,1,4\n")["body"]["id"]
    r = _job(client, dataset_id=ds, algorithm="kmeans", params={"n_clusters": 2}, target="label")
    assert r.status_code == 202, r.json()
    assert r.json()["features"] == ["a", "b"]
    assert r.json()["metrics"] == {"left_out_columns": ["id"]}


# -------------------------------------------------------------------------- delimiters


@pytest.mark.parametrize(("content", "word"), [
    (b"a\tb\tc\n1\t2\t3\n4\t5\t6\n", "tabs"),
    (b"a;b;c\n1,5;2;3\n4;5,25;6\n", "semicolons"),
])
def test_csv_with_another_delimiter_is_422_naming_it(client, content, word):
    r = upload(client, content, "data.csv")
    assert r["status"] == 422, r["body"]
    assert f"separated by {word}" in r["body"]["detail"]
    assert r["body"]["errors"][0]["field"] == "file"
    assert _listed(client) == 0


def test_commas_with_semicolons_inside_text_stay_a_csv(client):
    r = upload(client, b'id2,text\n1,"hello; world"\n2,plain; words\n')
    assert r["status"] == 201, r["body"]
    assert [c["name"] for c in r["body"]["columns"]] == ["id2", "text"]


# ------------------------------------------------------------------------------- Excel


def _xlsx() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/workbook.xml", "<workbook/>")
        zf.writestr("xl/worksheets/sheet1.xml", "<worksheet/>")
    return buf.getvalue()


_XLS = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504


@pytest.mark.parametrize(("content", "filename"), [
    (_xlsx(), "book.xlsx"), (_xlsx(), "book.csv"), (_xlsx(), "book.zip"),
    (_XLS, "book.xls"), (_XLS, "book.csv"),
])
def test_excel_by_magic_bytes_says_export_csv(client, content, filename):
    r = upload(client, content, filename)
    assert r["status"] == 415, r["body"]
    assert r["body"]["detail"].startswith("Excel is not supported; export CSV")
    assert "member" not in r["body"]["detail"]
    assert _listed(client) == 0


# -------------------------------------------------------------------------- infinities


def test_csv_infinity_is_refused_naming_column_and_row(client):
    r = upload(client, b"a,b\n1,2\n3,4\n5,-inf\n")
    assert r["status"] == 422
    assert 'column "b"' in r["body"]["detail"] and "row 3" in r["body"]["detail"]
    assert _listed(client) == 0


def test_csv_infinity_in_a_later_block_is_found(client):
    # A column read as text first (its first block is empty) and an infinity far down.
    body = "a,b\n" + "".join(f"{i},\n" for i in range(30000)) + "1,Infinity\n"
    r = upload(client, body.encode())
    assert r["status"] == 422, r["body"]
    assert 'column "b"' in r["body"]["detail"] and "row 30001" in r["body"]["detail"]


def test_inf_in_a_text_column_is_text(client):
    r = upload(client, b"a,word\n1,inf\n2,cat\n")
    assert r["status"] == 201, r["body"]
    assert r["body"]["columns"][1]["dtype"] == "string"


def test_npy_infinity_is_refused_naming_column_and_row(client):
    x = np.zeros((5, 3))
    x[3, 2] = np.inf
    buf = io.BytesIO()
    np.save(buf, x)
    r = upload(client, buf.getvalue(), "x.npy")
    assert r["status"] == 422
    assert 'column "x2"' in r["body"]["detail"] and "row 4" in r["body"]["detail"]
    buf = io.BytesIO()
    np.save(buf, np.asfortranarray(x))
    r = upload(client, buf.getvalue(), "x.npy")
    assert 'column "x2"' in r["body"]["detail"] and "row 4" in r["body"]["detail"]


def test_parquet_infinity_is_refused_naming_column_and_row(client):
    table = pa.table({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 0.5, float("inf"), 1.0]})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=2)
    r = upload(client, buf.getvalue(), "t.parquet")
    assert r["status"] == 422, r["body"]
    assert 'column "b"' in r["body"]["detail"] and "row 3" in r["body"]["detail"]


def test_jsonl_infinity_is_refused_naming_the_line(client):
    r = upload(client, b'{"a": 1.0, "b": 2}\n{"a": 1.5, "b": -1e999}\n', "d.jsonl")
    assert r["status"] == 422
    assert "line 2" in r["body"]["detail"] and 'column "b"' in r["body"]["detail"]
    r = upload(client, b'[1.0, 2.0]\n[1e400, 2.0]\n', "d.jsonl")
    assert "line 2" in r["body"]["detail"] and 'column "x0"' in r["body"]["detail"]


# ------------------------------------------------------------------- bodies that are wrong


def test_malformed_json_is_422_saying_what_to_send(client):
    r = client.post("/v1/jobs", content=b'{"dataset_id": ',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    detail = r.json()["detail"]
    assert "not valid JSON" in detail and "dataset_id (required)" in detail
    assert r.json()["errors"][0]["field"] == "body"


@pytest.mark.parametrize("headers", [{}, {"content-type": "text/plain"},
                                     {"content-type": "application/x-www-form-urlencoded"}])
def test_body_not_sent_as_json_is_415_naming_the_header(client, headers):
    r = client.post("/v1/jobs", content=b'{"dataset_id": "ds_x", "algorithm": "kmeans"}',
                    headers=headers)
    assert r.status_code == 415, r.json()
    assert "Content-Type: application/json" in r.json()["detail"]
    assert r.json()["errors"][0]["field"] == "Content-Type"


@pytest.mark.parametrize(("body", "kind"), [([1, 2], "an array"), ("kmeans", "a string")])
def test_body_of_the_wrong_json_type_is_422_saying_an_object(client, body, kind):
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422
    assert r.json()["detail"].startswith(f"the request body is {kind}; send a JSON object with "
                                         "the fields dataset_id (required)")


# ---------------------------------------------------------------------- did you mean


def test_unknown_algorithm_says_did_you_mean(client, blobs_csv):
    ds = upload(client, blobs_csv)["body"]["id"]
    r = _job(client, dataset_id=ds, algorithm="kmean")
    assert r.status_code == 422
    message = r.json()["errors"][0]["message"]
    assert "did you mean 'kmeans'" in message and "valid names: agglomerative" in message
    r = client.get("/v1/algorithms/autoencodr")
    assert r.status_code == 404 and "did you mean 'autoencoder'" in r.json()["detail"]


def test_unknown_param_says_did_you_mean_and_lists_the_params(client, blobs_csv):
    ds = upload(client, blobs_csv)["body"]["id"]
    r = _job(client, dataset_id=ds, algorithm="kmeans", params={"n_cluster": 3})
    assert r.status_code == 422
    error = r.json()["errors"][0]
    assert error["field"] == "params.n_cluster"
    assert "did you mean 'n_clusters'?" in error["message"]
    assert "valid names: algorithm, init, max_iter, n_clusters" in error["message"]
    r = _job(client, dataset_id=ds, algorithm="kmeans", params={"zzz": 3})
    assert "did you mean" not in r.json()["errors"][0]["message"]
    assert "valid names:" in r.json()["errors"][0]["message"]


def test_predict_body_problems_say_to_send_instances(client, settings):
    from tests.api.test_models import train

    job = train(client, settings, "kmeans", {"n_clusters": 3})
    url = f"/v1/models/{job['model_id']}/predict"
    r = client.post(url, content=b'{"instances": [[1, 2',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    assert "instances (required)" in r.json()["detail"]
    r = client.post(url, json=[[1, 2, 3, 4]])
    assert r.status_code == 422
    assert r.json()["detail"].startswith("the request body is an array; send a JSON object with "
                                         "the fields instances (required)")


def test_left_out_columns_stay_in_the_metrics_of_a_finished_job(client, settings):
    from app.runner import run_job
    from tests.conftest import blobs

    x = blobs(n=90, d=2)
    rows = "".join(f"{a:.6f},{b:.6f},{i}\n" for i, (a, b) in enumerate(x))
    ds = upload(client, ("a,b,id\n" + rows).encode())["body"]["id"]
    job = _job(client, dataset_id=ds, algorithm="kmeans", params={"n_clusters": 3}).json()
    run_job(job["id"], settings=settings, worker="test")
    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done
    assert done["metrics"]["left_out_columns"] == ["id"] and "inertia" in done["metrics"]
    model = client.get(f"/v1/models/{done['model_id']}").json()
    assert [f["name"] for f in model["input_schema"]["features"]] == ["a", "b"]
