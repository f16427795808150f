"""Per-project quotas through the API, each at its edges: limit-1 and limit pass, limit+1 is a
429 (413 for bytes) naming the quota, its limit and its use, and leaves nothing behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.db.migrate import upgrade
from app.db.session import session_scope
from app.main import create_app
from app.ml.unsupervised.kmeans import KMeansModel
from app.runner import run_job
from app.services import quotas
from tests.conftest import blobs, to_csv
from tests.integration.conftest import fresh_postgres

KEYS = "alpha:key-alpha-0123456789,beta:key-beta-0123456789"
A = {"Authorization": "Bearer key-alpha-0123456789"}
B = {"Authorization": "Bearer key-beta-0123456789"}


@contextmanager
def api(tmp_path: Path, **settings: object) -> Iterator[tuple[TestClient, Settings]]:
    s = Settings(data_dir=tmp_path / "d", api_keys=KEYS, quota_recheck_seconds=0, **settings)
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        yield c, s


def _set(s: Settings, project: str, **values: int | None) -> None:
    with session_scope(s.resolved_database_url) as session:
        quotas.set_(session=session, project=project, values=values)


def _upload(c: TestClient, headers: dict[str, str], content: bytes | None = None):
    return c.post("/v1/datasets", files={"file": ("b.csv", content or to_csv(blobs(60)))},
                  headers=headers)


def _refused(r, status: int, quota: str, limit: int, used: int) -> None:
    body = r.json()
    assert r.status_code == status, body
    assert r.headers["content-type"].startswith("application/problem+json")
    assert body["quota"] == {"name": quota, "limit": limit, "used": used}, body
    assert body["errors"][0]["field"] == f"quota.{quota}"
    assert quota in body["detail"] and f"PRETRAINER_QUOTA_{quota.upper()}" in body["detail"]
    assert body["type"].endswith("/too-large" if status == 413 else "/too-many-requests")


def _me(c: TestClient, headers: dict[str, str]) -> dict:
    r = c.get("/v1/projects/me", headers=headers)
    assert r.status_code == 200, r.json()
    return r.json()


def _files(s: Settings) -> list[Path]:
    return sorted(p for p in s.blob_dir.rglob("*") if p.is_file())


def test_datasets_quota_edges(tmp_path):
    with api(tmp_path, quota_datasets=2) as (c, s):
        assert _upload(c, A).status_code == 201  # limit - 1
        assert _upload(c, A).status_code == 201  # limit
        files = _files(s)
        _refused(_upload(c, A), 429, "datasets", 2, 2)  # limit + 1
        assert c.get("/v1/datasets", headers=A).json()["total"] == 2 and _files(s) == files
        assert _me(c, A)["quotas"]["datasets"] == {
            "limit": 2, "used": 2, "source": "settings", "description": "datasets"}
        assert _upload(c, B).status_code == 201  # another project has its own
        # The project's own quota wins over the setting, both ways.
        _set(s, "alpha", datasets=3)
        assert _upload(c, A).status_code == 201
        _refused(_upload(c, A), 429, "datasets", 3, 3)
        assert _me(c, A)["quotas"]["datasets"]["source"] == "project"


def test_stored_bytes_quota_edges_leave_nothing_behind(tmp_path):
    one, two = to_csv(blobs(40, seed=1)), to_csv(blobs(40, seed=2))
    with api(tmp_path) as (c, s):
        _set(s, "alpha", stored_bytes=len(one) + len(two))
        assert _upload(c, A, one).status_code == 201  # under the limit
        assert _upload(c, A, two).status_code == 201  # exactly at the limit
        files = _files(s)
        _refused(_upload(c, A, b"a\n1\n"), 413, "stored_bytes", len(one) + len(two),
                 len(one) + len(two))  # one byte-sized file past it
        # A big body without a Content-Length is refused while it streams: the bytes it sent
        # are not staged anywhere, and no row is written.
        big = [b"--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.csv\"\r\n\r\n",
               *(b"1,2,3,4\n" * 8192 for _ in range(64)), b"\r\n--xx--\r\n"]
        r = c.post("/v1/datasets", content=iter(big), headers={
            **A, "content-type": "multipart/form-data; boundary=xx"})
        assert r.status_code == 413 and r.json()["quota"]["name"] == "stored_bytes"
        assert c.get("/v1/datasets", headers=A).json()["total"] == 2
        assert _files(s) == files
        assert _me(c, A)["quotas"]["stored_bytes"]["used"] == len(one) + len(two)
        # Deleting a dataset frees its bytes.
        first = c.get("/v1/datasets", headers=A).json()["items"][-1]["id"]
        assert c.delete(f"/v1/datasets/{first}", headers=A).status_code == 204
        assert _upload(c, A, one).status_code == 201


def _job(c: TestClient, ds: str, headers: dict[str, str] = A):
    return c.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "kmeans",
                                    "params": {"n_clusters": 2}}, headers=headers)


def test_queued_jobs_quota_edges(tmp_path):
    with api(tmp_path, quota_queued_jobs=2) as (c, _):
        ds = _upload(c, A).json()["id"]
        assert _job(c, ds).status_code == 202
        assert _job(c, ds).status_code == 202
        r = _job(c, ds)
        _refused(r, 429, "queued_jobs", 2, 2)
        assert int(r.headers["retry-after"]) > 0
        assert c.get("/v1/jobs", headers=A).json()["total"] == 2
        assert _me(c, A)["quotas"]["queued_jobs"]["used"] == 2


def test_the_former_max_active_jobs_setting_still_bounds_queued_jobs(tmp_path, monkeypatch):
    monkeypatch.setenv("PRETRAINER_MAX_ACTIVE_JOBS", "1")
    assert Settings().quota_queued_jobs == 1 and Settings().max_active_jobs == 1
    monkeypatch.setenv("PRETRAINER_QUOTA_QUEUED_JOBS", "5")
    assert Settings().quota_queued_jobs == 5


def test_models_quota_counts_models_and_the_jobs_that_will_make_them(tmp_path):
    with api(tmp_path, quota_models=3) as (c, s):
        ds = _upload(c, A).json()["id"]
        done = _job(c, ds).json()
        run_job(done["id"], settings=s, worker="test")  # one model
        assert _job(c, ds).status_code == 202  # limit - 1 ... one queued job: 2 in use
        assert _job(c, ds).status_code == 202  # limit: 3 in use
        _refused(_job(c, ds), 429, "models", 3, 3)
        me = _me(c, A)["quotas"]
        assert me["models"]["used"] == 3 and me["queued_jobs"]["used"] == 2


def test_serving_requests_quota_edges(tmp_path, monkeypatch):
    with api(tmp_path, inline_instances=0) as (c, s):
        ds = _upload(c, A).json()["id"]
        job = _job(c, ds).json()
        run_job(job["id"], settings=s, worker="test")
        model = c.get(f"/v1/jobs/{job['id']}", headers=A).json()["model_id"]
        url, body = f"/v1/models/{model}/predict", {"instances": [[0, 0, 0, 0]]}
        assert c.post(url, json=body, headers=A).status_code == 200
        _set(s, "alpha", serving_requests=2)

        gate, entered = threading.Event(), threading.Semaphore(0)
        embed = KMeansModel.embed

        # An embed that waits until the test lets it finish. Embed, not predict: concurrent
        # label predicts share one estimator call (micro-batching), embeds run one call each.
        def held(self, x):
            entered.release()
            gate.wait(30)
            return embed(self, x)

        monkeypatch.setattr(KMeansModel, "embed", held)
        held_url = f"/v1/models/{model}/embed"
        with ThreadPoolExecutor(2) as pool:
            calls = [pool.submit(c.post, held_url, json=body, headers=A) for _ in range(2)]
            for _ in range(2):  # limit - 1, then limit, both in flight
                assert entered.acquire(timeout=30)
            _refused(c.post(url, json=body, headers=A), 429, "serving_requests", 2, 2)
            _refused(c.post(f"/v1/models/{model}/embed", json=body, headers=A), 429,
                     "serving_requests", 2, 2)
            assert _me(c, A)["quotas"]["serving_requests"] == {
                "limit": 2, "used": 2, "source": "project",
                "description": "predict, embed and generate calls in flight"}
            assert c.post(url, json=body, headers=B).status_code == 404  # beta's own slots
            gate.set()
            assert [f.result(timeout=30).status_code for f in calls] == [200, 200]
        assert _me(c, A)["quotas"]["serving_requests"]["used"] == 0
        assert c.post(url, json=body, headers=A).status_code == 200


def test_a_refused_serving_call_gives_its_slot_back(tmp_path):
    with api(tmp_path, quota_serving_requests=1) as (c, _):
        for _ in range(3):  # each fails (no such model) and must not keep its slot
            assert c.post("/v1/models/mdl_x/predict", json={"instances": [[0]]},
                          headers=A).status_code == 404
            assert c.post("/v1/models/mdl_x/generate", json={"n": 1},
                          headers=A).status_code == 404
        assert _me(c, A)["quotas"]["serving_requests"]["used"] == 0


def test_projects_me_shows_every_quota_of_the_callers_project(tmp_path):
    with api(tmp_path, quota_running_jobs=4) as (c, s):
        _set(s, "beta", queued_jobs=7)
        me = _me(c, A)
        assert me["project"] == "alpha" and me["key_id"].startswith("key_")
        assert list(me["quotas"]) == ["stored_bytes", "datasets", "models", "running_jobs",
                                      "queued_jobs", "serving_requests"]
        assert me["quotas"]["running_jobs"]["limit"] == 4
        assert me["quotas"]["queued_jobs"] == {"limit": 100, "used": 0, "source": "settings",
                                               "description": "jobs waiting for a worker"}
        assert _me(c, B)["quotas"]["queued_jobs"]["limit"] == 7
        assert c.get("/v1/projects/me").status_code == 401


def test_quotas_cli_sets_and_clears_a_projects_quota(tmp_path, monkeypatch, capsys):
    from app.cli import main

    data = tmp_path / "cli"
    monkeypatch.setenv("PRETRAINER_DATA_DIR", str(data))
    assert main(["quotas", "set", "alpha", "--datasets", "5", "--stored-bytes", "1000",
                 "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "alpha  datasets  limit 5  used 0  (project)" in out
    assert "alpha  models  limit 10000  used 0  (settings)" in out
    assert main(["quotas", "set", "alpha", "--datasets", "default", "--data-dir", str(data)]) == 0
    assert "alpha  datasets  limit 10000  used 0  (settings)" in capsys.readouterr().out
    assert main(["quotas", "show", "--data-dir", str(data)]) == 0
    assert "alpha  stored_bytes  limit 1000" in capsys.readouterr().out
    assert main(["quotas", "set", "no way", "--models", "1", "--data-dir", str(data)]) == 2
    with pytest.raises(SystemExit):
        main(["quotas", "set", "alpha", "--models", "-1", "--data-dir", str(data)])


def test_running_jobs_quota_edges_at_claim(tmp_path):
    from app.errors import QuotaExceeded
    from app.services import leases

    with api(tmp_path, quota_running_jobs=2) as (c, s):
        ds = _upload(c, A).json()["id"]
        ids = [_job(c, ds).json()["id"] for _ in range(3)]
        other = _job(c, _upload(c, B).json()["id"], B).json()["id"]

        def claim(job_id: str):
            with session_scope(s.resolved_database_url) as session:
                return leases.claim(session=session, job_id=job_id, worker="w", stale_after=60,
                                    max_attempts=3, quota_defaults=s.quota_defaults)

        assert claim(ids[0]) is not None  # limit - 1
        assert claim(ids[1]) is not None  # limit
        with pytest.raises(QuotaExceeded) as refused:  # limit + 1: stays queued
            claim(ids[2])
        assert (refused.value.quota, refused.value.limit, refused.value.used) == (
            "running_jobs", 2, 2)
        assert c.get(f"/v1/jobs/{ids[2]}", headers=A).json()["status"] == "queued"
        assert claim(other) is not None  # another project's running jobs are its own
        me = _me(c, A)["quotas"]
        assert me["running_jobs"]["used"] == 2 and me["queued_jobs"]["used"] == 1
        c.post(f"/v1/jobs/{ids[0]}/cancel", headers=A)  # flagged; its worker ends it
        with session_scope(s.resolved_database_url) as session:
            lease = leases.Lease(ids[0], 1, "w")
            assert leases.end(session=session, lease=lease, status="cancelled", error=None)
        assert claim(ids[2]) is not None  # a place came free


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request) -> Iterator[dict[str, str]]:
    """Settings of the database: the embedded SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield {}
    else:
        yield from ({"database_url": url} for url in fresh_postgres("pretrainer_quota"))


def test_requests_racing_for_the_last_places_get_exactly_the_limit(tmp_path, database):
    with api(tmp_path, quota_queued_jobs=3, quota_datasets=4, **database) as (c, _):
        ds = _upload(c, A).json()["id"]
        with ThreadPoolExecutor(8) as pool:
            jobs_ = sorted(r.status_code for r in pool.map(lambda _: _job(c, ds), range(8)))
            uploads = sorted(r.status_code for r in pool.map(lambda _: _upload(c, A), range(6)))
        assert jobs_ == [202] * 3 + [429] * 5
        assert uploads == [201] * 3 + [429] * 3
        assert c.get("/v1/jobs", headers=A).json()["total"] == 3
        assert c.get("/v1/datasets", headers=A).json()["total"] == 4
