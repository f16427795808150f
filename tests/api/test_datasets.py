"""POST/GET/DELETE /v1/datasets through the HTTP layer: happy paths and every error path."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from app.storage import OWNER_KEY
from tests.conftest import blobs, to_csv, upload


def _blob_files(settings) -> list:
    root = settings.blob_dir
    return [p for p in root.rglob("*") if p.is_file() and p.name != OWNER_KEY]


def assert_problem(res: dict, status: int, *words: str) -> None:
    assert res["status"] == status, res
    assert res["headers"]["content-type"].startswith("application/problem+json")
    body = res["body"]
    assert body["status"] == status and body["title"] and body["type"]
    for word in words:
        assert word in body["detail"], (word, body["detail"])


def test_csv_upload_infers_schema_and_hash(client, blobs_csv):
    res = upload(client, blobs_csv, name="blobs")
    assert res["status"] == 201, res
    ds = res["body"]
    assert ds["name"] == "blobs" and ds["kind"] == "tabular" and ds["format"] == "csv"
    assert ds["n_rows"] == 300
    assert [c["name"] for c in ds["columns"]] == ["a", "b", "c", "d"]
    assert {c["dtype"] for c in ds["columns"]} == {"float64"}
    assert ds["size_bytes"] == len(blobs_csv)
    assert ds["sha256"] == hashlib.sha256(blobs_csv).hexdigest()
    assert client.get(f"/v1/datasets/{ds['id']}").json() == ds
    listed = client.get("/v1/datasets").json()
    assert [d["id"] for d in listed["items"]] == [ds["id"]] and listed["total"] == 1


def test_name_defaults_to_file_name(client, blobs_csv):
    assert upload(client, blobs_csv, filename="points.csv")["body"]["name"] == "points.csv"


def test_string_columns_are_kept_with_their_dtype(client):
    content = b"x,y,label\n1.5,2,a\n3.0,4,b\n"
    ds = upload(client, content)["body"]
    assert [(c["name"], c["dtype"]) for c in ds["columns"]] == [
        ("x", "float64"), ("y", "int64"), ("label", "string")]


def test_parquet_npy_jsonl(client):
    x = blobs(50, 3).astype(np.float32)
    buf = io.BytesIO()
    pq.write_table(pa.table({"p": x[:, 0], "q": x[:, 1]}), buf)
    pqds = upload(client, buf.getvalue(), filename="d.parquet")["body"]
    assert pqds["format"] == "parquet" and pqds["n_rows"] == 50
    assert [c["dtype"] for c in pqds["columns"]] == ["float32", "float32"]
    buf = io.BytesIO()
    np.save(buf, x)
    npy = upload(client, buf.getvalue(), filename="d.npy")["body"]
    assert npy["format"] == "npy" and npy["n_rows"] == 50 and len(npy["columns"]) == 3
    lines = b"\n".join(b"[%f, %f]" % (a, b) for a, b in x[:, :2]) + b"\n"
    jl = upload(client, lines, filename="d.jsonl")["body"]
    assert jl["format"] == "jsonl" and jl["n_rows"] == 50 and len(jl["columns"]) == 2


def test_empty_file_is_422_and_leaves_nothing(client, settings):
    assert_problem(upload(client, b""), 422, "empty")
    assert _blob_files(settings) == []
    assert client.get("/v1/datasets").json()["total"] == 0


def test_ragged_csv_names_the_row(client, settings):
    res = upload(client, b"a,b\n1,2\n3,4,5\n6,7\n")
    assert_problem(res, 422, "3")
    assert res["body"]["errors"][0]["field"] == "file"
    assert _blob_files(settings) == []


def test_binary_junk_is_refused(client, settings):
    junk = bytes(range(256)) * 50
    res = upload(client, junk, filename="junk.csv")
    assert res["status"] in (415, 422), res
    assert res["headers"]["content-type"].startswith("application/problem+json")
    assert _blob_files(settings) == []


def test_undecodable_text_names_the_row(client):
    res = upload(client, b"a,b\n1,2\n3,\xff\xfe\n")
    assert_problem(res, 422)
    detail = res["body"]["detail"].lower()
    assert "utf-8" in detail and ("row" in detail or "line" in detail), detail


def test_unknown_format_is_415(client):
    res = upload(client, b"%PDF-1.4 not a dataset", filename="doc.pdf")
    assert_problem(res, 415)


def test_upload_over_the_limit_is_413_and_leaves_nothing(tmp_path):
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.db.migrate import upgrade
    from app.main import create_app

    s = Settings(data_dir=tmp_path / "d", max_upload_bytes=1000)
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    with TestClient(create_app(s)) as c:
        res = upload(c, to_csv(blobs(200)))
        assert_problem(res, 413, "1000")
        assert [p for p in s.blob_dir.rglob("*") if p.is_file() and p.name != OWNER_KEY] == []


def test_not_multipart_is_415(client):
    r = client.post("/v1/datasets", content=b"a,b\n1,2\n", headers={"content-type": "text/csv"})
    assert r.status_code == 415 and "multipart" in r.json()["detail"]


def test_missing_file_part_is_422(client):
    r = client.post("/v1/datasets", data={"name": "x"}, files={"other": ("x.csv", b"a\n1\n")})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "file"


def test_delete_removes_row_and_bytes(client, settings, blobs_csv):
    ds = upload(client, blobs_csv)["body"]
    assert _blob_files(settings)
    assert client.delete(f"/v1/datasets/{ds['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{ds['id']}").status_code == 404
    assert _blob_files(settings) == []
    assert client.delete(f"/v1/datasets/{ds['id']}").status_code == 404


def test_delete_while_a_job_is_queued_is_409(client, blobs_csv):
    ds = upload(client, blobs_csv)["body"]
    job = client.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "kmeans",
                                        "params": {"n_clusters": 3}}).json()
    r = client.delete(f"/v1/datasets/{ds['id']}")
    assert r.status_code == 409 and job["id"] in r.json()["detail"]
    assert client.get(f"/v1/datasets/{ds['id']}").status_code == 200


def test_unknown_dataset_is_404_problem(client):
    r = client.get("/v1/datasets/ds_nope")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "ds_nope" in r.json()["detail"]


def test_pagination(client, blobs_csv):
    ids = [upload(client, blobs_csv)["body"]["id"] for _ in range(3)]
    page = client.get("/v1/datasets", params={"limit": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 2 and page["next"] == 2
    rest = client.get("/v1/datasets", params={"limit": 2, "offset": 2}).json()
    assert rest["next"] is None
    assert sorted(d["id"] for d in page["items"] + rest["items"]) == sorted(ids)
