"""A job's progress, as GET /v1/jobs/{id} and its events show it, never goes backwards."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.config import Settings
from app.db.migrate import upgrade
from app.db.session import session_scope
from app.db.tables import Job, utcnow
from app.main import create_app
from app.reaper import reap_once
from app.services import leases
from tests.conftest import upload


@pytest.fixture(params=["sqlite", "postgresql"])
def wiring(request, tmp_path: Path) -> Iterator[tuple[Settings, TestClient]]:
    """The API on SQLite, and on PostgreSQL where one is reachable (the UPDATE is SQL)."""
    if request.param == "sqlite":
        url = None
        urls: Iterator[str | None] = iter([None])
    else:
        from tests.integration.conftest import fresh_postgres

        urls = fresh_postgres("pretrainer_progress")
        url = next(urls)
    s = Settings(data_dir=tmp_path / "data", database_url=url or "")
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    try:
        with TestClient(create_app(s), raise_server_exceptions=False) as c:
            yield s, c
    finally:
        next(urls, None)  # drops the PostgreSQL database


def _claim(settings, job_id: str, worker: str) -> leases.Lease:
    with session_scope(settings.resolved_database_url) as s:
        lease = leases.claim(session=s, job_id=job_id, worker=worker, stale_after=30, max_attempts=5)
    assert lease is not None
    return lease


def _beat(settings, lease: leases.Lease, progress: float) -> None:
    with session_scope(settings.resolved_database_url) as s:
        owned, _ = leases.heartbeat(session=s, lease=lease, progress=progress)
    assert owned


def _progress(client, job_id: str) -> float:
    return client.get(f"/v1/jobs/{job_id}").json()["progress"]


def test_progress_never_goes_backwards_within_a_try_or_on_resume(wiring, blobs_csv):
    settings, client = wiring
    ds = upload(client, blobs_csv)["body"]["id"]
    job = client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "kmeans"}).json()
    first = _claim(settings, job["id"], "w1:1")
    _beat(settings, first, 0.6)
    _beat(settings, first, 0.3)  # a late or reordered report
    assert _progress(client, job["id"]) == 0.6
    # The worker vanishes; the reaper requeues the job and a second try starts from its start.
    with session_scope(settings.resolved_database_url) as s:
        s.execute(update(Job).where(Job.id == job["id"]).values(
            heartbeat_at=utcnow() - timedelta(seconds=600)))
    assert reap_once(settings) == [job["id"]]
    assert _progress(client, job["id"]) == 0.6
    second = _claim(settings, job["id"], "w2:1")
    _beat(settings, second, 0.01)
    assert _progress(client, job["id"]) == 0.6
    _beat(settings, second, 0.8)
    assert _progress(client, job["id"]) == 0.8
