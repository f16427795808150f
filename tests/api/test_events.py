"""GET /v1/jobs/{id}/events: server-sent events that follow a job to its end."""

from __future__ import annotations

import threading
import time

from app.runner import run_job
from tests.conftest import read_events, upload


def test_events_follow_a_job_until_it_ends(client, settings, blobs_csv):
    ds = upload(client, blobs_csv)["body"]["id"]
    job = client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "kmeans",
                                        "params": {"n_clusters": 3}}).json()

    def later() -> None:
        time.sleep(0.6)  # the stream is open and has seen `queued` by now
        run_job(job["id"], settings=settings, worker="test")

    worker = threading.Thread(target=later)
    worker.start()
    events = read_events(client, job["id"])
    worker.join()
    names = [e for e, _ in events]
    assert names[0] == "status" and events[0][1]["status"] == "queued"
    assert names[-1] == "end" and events[-1][1]["status"] == "succeeded"
    assert events[-1][1]["model_id"]
    assert any(e == "progress" and d["progress"] == 1.0 for e, d in events)


def test_events_of_a_finished_job_end_at_once(client, blobs_csv):
    ds = upload(client, blobs_csv)["body"]["id"]
    job = client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "kmeans"}).json()
    client.post(f"/v1/jobs/{job['id']}/cancel")
    events = read_events(client, job["id"])
    assert [e for e, _ in events][-1] == "end" and events[-1][1]["status"] == "cancelled"


def test_events_of_an_unknown_job_is_404(client):
    r = client.get("/v1/jobs/job_nope/events")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
