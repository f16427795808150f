"""Strict bodies and honest problems: unknown fields and loose types refused with a 422 naming
the field, a problem's `type` matching its status, and no internal text in any answer."""

from __future__ import annotations

import struct

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.db.migrate import upgrade
from app.main import create_app
from app.runner import run_job
from tests.conftest import blobs, to_csv, upload

TYPE_BASE = "https://pretrainer.dev/problems/"
STATUSES = {413: ("Content too large", "too-large"), 415: ("Unsupported media type",
            "unsupported-media-type"), 422: ("Unprocessable content", "validation-error")}


def _assert_problem(r, status: int) -> dict:
    """r is a problem+json whose type and title are those of its status."""
    body = r.json()
    assert r.status_code == status, body
    assert r.headers["content-type"].startswith("application/problem+json")
    title, slug = STATUSES[status]
    assert body["type"] == TYPE_BASE + slug and body["title"] == title, body
    return body


@pytest.fixture
def kmeans(client, settings) -> str:
    """A trained k-means model on 4 columns."""
    ds = upload(client, to_csv(blobs(90)))["body"]["id"]
    job = client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "kmeans",
                                        "params": {"n_clusters": 3}}).json()
    run_job(job["id"], settings=settings, worker="test")
    return client.get(f"/v1/jobs/{job['id']}").json()["model_id"]


@pytest.mark.parametrize("op", ["predict", "embed"])
def test_serving_bodies_refuse_unknown_fields(client, kmeans, op):
    url = f"/v1/models/{kmeans}/{op}"
    assert client.post(url, json={"instances": [[0, 0, 0, 0]]}).status_code == 200
    r = client.post(url, json={"instances": [[0, 0, 0, 0]], "instance": [[1, 1, 1, 1]]})
    body = _assert_problem(r, 422)
    assert [e["field"] for e in body["errors"]] == ["instance"], body


@pytest.fixture
def dataset(client) -> str:
    return upload(client, to_csv(blobs(90)))["body"]["id"]


@pytest.mark.parametrize("value", ["3", True, 3.0, "three"])
def test_integer_params_are_strict(client, dataset, value):
    r = client.post("/v1/jobs", json={"dataset_id": dataset, "algorithm": "kmeans",
                                      "params": {"n_clusters": value}})
    body = _assert_problem(r, 422)
    assert [e["field"] for e in body["errors"]] == ["params.n_clusters"], body
    assert client.get("/v1/jobs").json()["total"] == 0  # nothing was queued


def test_a_json_integer_is_still_a_number_for_float_params(client, dataset):
    job = {"dataset_id": dataset, "algorithm": "dbscan", "params": {"eps": 3, "min_samples": 4}}
    r = client.post("/v1/jobs", json=job)
    assert r.status_code == 202, r.json()
    assert r.json()["params"]["eps"] == 3.0
    r = client.post("/v1/jobs", json={**job, "params": {"eps": "3"}})
    assert _assert_problem(r, 422)["errors"][0]["field"] == "params.eps"
    r = client.post("/v1/jobs", json={**job, "params": {"eps": True}})
    assert _assert_problem(r, 422)["errors"][0]["field"] == "params.eps"


def test_generate_counts_are_strict(client):
    for n in ("5", True, 5.5):
        body = _assert_problem(client.post("/v1/models/mdl_x/generate", json={"n": n}), 422)
        assert body["errors"][0]["field"] == "n", body


@pytest.mark.parametrize(("content", "filename", "status"), [
    (b"", "empty.csv", 422),                          # nothing to read
    (b"\x00\x01binary", "data.bin", 415),             # a format it does not read
    (to_csv(blobs(50)), "ok.csv", 413),              # over PRETRAINER_MAX_UPLOAD_BYTES
])
def test_ingest_problems_carry_the_type_of_their_status(tmp_path, content, filename, status):
    s = Settings(data_dir=tmp_path / "d", max_upload_bytes=1000)
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        r = c.post("/v1/datasets", files={"file": (filename, content)})
        _assert_problem(r, status)
        assert c.get("/v1/datasets").json()["total"] == 0


def _npy(header: str) -> bytes:
    raw = header.encode("latin1")
    raw += b" " * (64 - (10 + len(raw) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw + b"\x00" * 64


def test_a_refused_npy_header_does_not_echo_python_internals(client):
    # numpy parses the header with ast.literal_eval; a call in it comes back as the repr of
    # an AST node, memory address included.
    bad = _npy("{'descr': ('<f8', frozenset()), 'fortran_order': False, 'shape': (2,), }")
    r = upload(client, bad, filename="x.npy")
    assert r["status"] == 422, r
    text = str(r["body"])
    assert "0x" not in text and "object at" not in text and "<ast" not in text, text
    assert "not a valid .npy file" in r["body"]["detail"]
    assert r["body"]["type"] == TYPE_BASE + "validation-error"


def test_readyz_names_the_failed_check_and_nothing_else(tmp_path):
    s = Settings(data_dir=tmp_path / "d", broker_url="redis://127.0.0.1:1/0")
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    with TestClient(create_app(s)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"] == {"database": "ok", "broker": "error", "store": "ok"}
        assert "127.0.0.1" not in r.text and "6379" not in r.text and "Error" not in r.text


def test_no_problem_carries_a_memory_address_whoever_quoted_it():
    import json

    from app.api.errors import problem

    r = problem(422, "Unprocessable content", "bad: <ast.Call object at 0x7f5294a3a080>",
                slug="validation-error", errors=[{"field": "file",
                                                  "message": "at 0x7f5294a3a080ff"}])
    body = json.loads(r.body)
    assert "0x7f" not in r.body.decode() and body["detail"] == "bad: <object>"
    assert body["errors"] == [{"field": "file", "message": "at <object>"}]
