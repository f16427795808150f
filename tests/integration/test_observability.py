"""Logs and metrics of the real processes: the worker's JSON log lines carry the request id."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import blobs, to_csv
from tests.integration.test_end_to_end import wait_job

pytestmark = pytest.mark.integration


def json_lines(svc) -> list[dict]:
    out = []
    for line in svc.log.read_bytes().decode("utf-8", "replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


@pytest.fixture(params=["embedded", "production"])
def service(request):
    return request.getfixturevalue(request.param)


def test_worker_log_lines_carry_request_and_job_id_and_metrics_show_the_job(service):
    http = service.http
    ds = http.post("/v1/datasets", files={"file": ("b.csv", to_csv(blobs()))}).json()["id"]
    rid = f"it-{uuid.uuid4().hex[:12]}"
    r = http.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "kmeans",
                                    "params": {"n_clusters": 3}}, headers={"X-Request-ID": rid})
    assert r.status_code == 202 and r.headers["x-request-id"] == rid
    job = wait_job(http, r.json()["id"], {"succeeded", "failed", "cancelled"}, timeout=120)
    assert job["status"] == "succeeded", job

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the worker writes its last line after the row
        mine = [ln for ln in json_lines(service) if ln.get("request_id") == rid]
        if any(ln["event"] == "job.succeeded" for ln in mine):
            break
        time.sleep(0.2)
    events = {ln["event"]: ln for ln in mine}
    assert {"job.enqueued", "job.started", "job.succeeded"} <= set(events), sorted(events)
    assert events["job.enqueued"]["logger"] == "pretrainer.api.jobs"  # the API's line
    assert events["job.started"]["logger"] == "pretrainer.runner"  # the worker's lines
    for name in ("job.started", "job.succeeded"):
        assert events[name]["job_id"] == job["id"] and events[name]["level"] == "info"
        assert events[name]["timestamp"].endswith("Z")
    assert events["job.succeeded"]["model_id"] == job["model_id"]

    scrape = http.get("/metrics")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(scrape.text) for s in fam.samples}
    assert samples[("pretrainer_jobs", (("queue", "cpu"), ("status", "succeeded")))] >= 1
    key = ("pretrainer_job_duration_seconds_count", (("queue", "cpu"), ("status", "succeeded")))
    assert samples[key] >= 1
    # Redis LLEN, or the filesystem broker's files: nothing waits once the worker took the job.
    assert samples[("pretrainer_queue_depth", (("queue", "cpu"),))] == 0
    assert ("pretrainer_queue_depth", (("queue", "gpu"),)) in samples
