"""The reaper: running jobs whose heartbeat stopped go back to their queue, or fail when poisoned."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from app.db.session import session_scope
from app.db.tables import Job, utcnow
from app.reaper import reap_once
from tests.conftest import upload


def _running(settings, job_id: str, *, age: float, attempts: int) -> None:
    with session_scope(settings.resolved_database_url) as s:
        s.execute(update(Job).where(Job.id == job_id).values(
            status="running", attempts=attempts, worker="elsewhere:1", lease_epoch=attempts,
            heartbeat_at=utcnow() - timedelta(seconds=age), started_at=utcnow()))


def _messages(settings) -> int:
    return len(list((settings.broker_dir / "queue").iterdir()))


def test_a_stale_running_job_is_requeued_and_fenced(client, settings, blobs_csv):
    ds = upload(client, blobs_csv)["body"]["id"]
    job = client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "kmeans"}).json()
    fresh = client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "kmeans"}).json()
    _running(settings, job["id"], age=60, attempts=1)
    _running(settings, fresh["id"], age=0, attempts=1)
    before = _messages(settings)
    assert reap_once(settings) == [job["id"]]
    after = client.get(f"/v1/jobs/{job['id']}").json()
    assert after["status"] == "queued" and _messages(settings) == before + 1
    assert client.get(f"/v1/jobs/{fresh['id']}").json()["status"] == "running"
    with session_scope(settings.resolved_database_url) as s:
        assert s.get(Job, job["id"]).lease_epoch == 2  # the vanished worker's lease is void


def test_a_job_lost_on_every_attempt_fails_with_the_reason(client, settings, blobs_csv):
    ds = upload(client, blobs_csv)["body"]["id"]
    job = client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "kmeans"}).json()
    _running(settings, job["id"], age=60, attempts=settings.max_attempts)
    assert reap_once(settings) == []
    after = client.get(f"/v1/jobs/{job['id']}").json()
    assert after["status"] == "failed" and after["error"]["type"] == "WorkerLost"
    assert "attempts" in after["error"]["message"] and after["finished_at"]


def test_a_queued_job_whose_message_was_lost_is_sent_again(client, settings, blobs_csv):
    ds = upload(client, blobs_csv)["body"]["id"]
    lost = client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "kmeans"}).json()
    young = client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "kmeans"}).json()
    for message in (settings.broker_dir / "queue").iterdir():
        message.unlink()  # the broker forgot both (a restart without persistence)
    with session_scope(settings.resolved_database_url) as s:
        s.execute(update(Job).where(Job.id == lost["id"]).values(
            enqueued_at=utcnow() - timedelta(seconds=settings.requeue_seconds + 1)))
    assert reap_once(settings) == [lost["id"]]
    assert _messages(settings) == 1 and reap_once(settings) == []  # sent once per interval
    assert client.get(f"/v1/jobs/{lost['id']}").json()["status"] == "queued"
    assert young["status"] == "queued"
