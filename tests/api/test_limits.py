"""Bounds: request bodies, active jobs per project, serving calls per key, job wall clock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from app.config import Settings
from app.db.migrate import upgrade
from app.main import create_app
from app.runner import run_job
from tests.conftest import blobs, to_csv

KEYS = "alpha:key-alpha-0123456789,beta:key-beta-0123456789"
A = {"Authorization": "Bearer key-alpha-0123456789"}
B = {"Authorization": "Bearer key-beta-0123456789"}


@contextmanager
def api(tmp_path: Path, **bounds: object) -> Iterator[tuple[TestClient, Settings]]:
    s = Settings(data_dir=tmp_path / "d", api_keys=KEYS, **bounds)
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        yield c, s


def _dataset(c: TestClient, headers: dict[str, str], rows: np.ndarray | None = None) -> str:
    content = to_csv(blobs(60) if rows is None else rows)
    return c.post("/v1/datasets", files={"file": ("b.csv", content)}, headers=headers).json()["id"]


def test_a_body_past_the_bound_is_413_naming_it(tmp_path):
    with api(tmp_path, max_body_bytes=2048) as (c, _):
        big = {"instances": [[0.0] * 100] * 10}
        r = c.post("/v1/models/mdl_x/predict", json=big, headers=A)
        assert r.status_code == 413 and "PRETRAINER_MAX_BODY_BYTES" in r.json()["detail"]
        assert r.headers["content-type"] == "application/problem+json"
        # No Content-Length (chunked): counted while it arrives.
        r = c.post("/v1/jobs", content=iter([b'{"dataset_id": "', b"x" * 4096, b'"}']),
                   headers={**A, "content-type": "application/json"})
        assert r.status_code == 413 and "PRETRAINER_MAX_BODY_BYTES" in r.json()["detail"]
        # Uploads have their own, larger bound.
        assert c.post("/v1/datasets", files={"file": ("b.csv", to_csv(blobs(300)))},
                      headers=A).status_code == 201


def test_active_jobs_per_project_are_bounded_with_429(tmp_path):
    with api(tmp_path, max_active_jobs=2) as (c, _):
        ds = _dataset(c, A)
        body = {"dataset_id": ds, "algorithm": "kmeans"}
        first, second = (c.post("/v1/jobs", json=body, headers=A).json() for _ in range(2))
        r = c.post("/v1/jobs", json=body, headers=A)
        assert r.status_code == 429 and "PRETRAINER_MAX_ACTIVE_JOBS" in r.json()["detail"]
        assert r.headers["retry-after"] and c.get("/v1/jobs", headers=A).json()["total"] == 2
        # Another project has its own budget; an ended job frees a place.
        assert c.post("/v1/jobs", json={**body, "dataset_id": _dataset(c, B)},
                      headers=B).status_code == 202
        c.post(f"/v1/jobs/{first['id']}/cancel", headers=A)
        assert c.post("/v1/jobs", json=body, headers=A).status_code == 202
        assert second["status"] == "queued"


def test_serving_calls_are_rate_limited_per_key(tmp_path):
    with api(tmp_path, predict_rate=0.5, predict_burst=3) as (c, s):
        ds = _dataset(c, A)
        job = c.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "kmeans",
                                       "params": {"n_clusters": 2}}, headers=A).json()
        run_job(job["id"], settings=s, worker="test")
        model = c.get(f"/v1/jobs/{job['id']}", headers=A).json()["model_id"]
        url, body = f"/v1/models/{model}/predict", {"instances": [[0, 0, 0, 0]]}
        assert [c.post(url, json=body, headers=A).status_code for _ in range(3)] == [200] * 3
        r = c.post(f"/v1/models/{model}/embed", json=body, headers=A)
        assert r.status_code == 429 and "PRETRAINER_PREDICT_RATE" in r.json()["detail"]
        assert int(r.headers["retry-after"]) >= 1
        # Another key's bucket is its own (and sees a 404 for alpha's model, not a 429).
        assert c.post(url, json=body, headers=B).status_code == 404


def test_a_job_past_its_wall_clock_bound_fails_naming_it(tmp_path):
    with api(tmp_path, max_job_seconds=1.0) as (c, s):
        rows = np.random.default_rng(0).normal(size=(200, 4))
        job = c.post("/v1/jobs", headers=A, json={
            "dataset_id": _dataset(c, A, rows), "algorithm": "autoencoder",
            "params": {"epochs": 10000, "batch_size": 8, "early_stopping_patience": 0}}).json()
        run_job(job["id"], settings=s, worker="test")
        done = c.get(f"/v1/jobs/{job['id']}", headers=A).json()
        assert done["status"] == "failed" and done["error"]["type"] == "JobTimeout"
        assert "PRETRAINER_MAX_JOB_SECONDS" in done["error"]["message"]
        assert done["model_id"] is None
        assert not (s.blob_dir / "jobs" / job["id"] / "checkpoint.pt").exists()
