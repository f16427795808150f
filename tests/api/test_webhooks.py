"""Webhooks against a real receiver this test starts (http.server on 127.0.0.1, so the tests
turn PRETRAINER_WEBHOOK_ALLOW_PRIVATE on): signed deliveries, retries, records, and the SSRF
refusals without the setting.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.db.migrate import upgrade
from app.db.session import session_scope
from app.db.tables import Job
from app.main import create_app
from app.services import webhooks
from app.webhook_sender import deliver_due
from tests.conftest import blobs, run_in_process, to_csv, upload


class Receiver:
    """An HTTP server that records each POST and answers the next code of `codes` (then 200)."""

    def __init__(self, codes: list[int] | None = None, delay: float = 0.0) -> None:
        self.codes, self.delay, self.got = list(codes or []), delay, []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.got.append((dict(self.headers), body))
                time.sleep(receiver.delay)
                code = receiver.codes.pop(0) if receiver.codes else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def make_api(tmp_path: Path, **overrides: object) -> tuple[TestClient, Settings]:
    values: dict[str, object] = {"webhook_allow_private": True, "webhook_poll_seconds": 0,
                                 "webhook_backoff_seconds": 0, **overrides}
    s = Settings(data_dir=tmp_path / "data", **values)  # type: ignore[arg-type]
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    return TestClient(create_app(s), raise_server_exceptions=False), s


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Settings]]:
    client, s = make_api(tmp_path)
    with client:
        yield client, s


def finish_a_job(client: TestClient, s: Settings) -> dict:
    ds = upload(client, to_csv(blobs(60)))["body"]["id"]
    return run_in_process(client, s, {"dataset_id": ds, "algorithm": "kmeans",
                                      "params": {"n_clusters": 3}})


def verify(secret: str, headers: dict[str, str], body: bytes) -> None:
    """What a receiver does: recompute the HMAC over "<t>.<body>" and compare."""
    parts = dict(p.split("=", 1) for p in headers["Pretrainer-Signature"].split(","))
    assert abs(int(parts["t"]) - time.time()) < 60  # timestamped against replay
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(parts["v1"], expected.hexdigest())


def test_a_job_end_is_delivered_signed_and_recorded(api, receiver):
    client, s = api
    made = client.post("/v1/webhooks", json={"url": receiver.url, "events": ["job.*"]})
    assert made.status_code == 201, made.json()
    hook = made.json()
    assert len(hook["secret"]) >= 32 and hook["events"] == ["job.*"]
    assert client.get(f"/v1/webhooks/{hook['id']}").json()["secret"] is None  # shown once
    job = finish_a_job(client, s)
    assert job["status"] == "succeeded"
    assert deliver_due(s) == 1
    (headers, body), = receiver.got
    verify(hook["secret"], headers, body)
    assert headers["Pretrainer-Event"] == "job.succeeded"
    envelope = json.loads(body)
    assert envelope["event"] == "job.succeeded" and envelope["id"] == headers["Pretrainer-Delivery"]
    assert envelope["data"]["job"]["id"] == job["id"]
    assert envelope["data"]["job"]["model_id"] == job["model_id"]
    assert envelope["data"]["job"]["metrics"]["inertia"] == job["metrics"]["inertia"]
    listed = client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()
    assert listed["total"] == 1
    d = listed["items"][0]
    assert (d["status"], d["attempts"], d["last_status_code"]) == ("delivered", 1, 200)
    assert d["id"] == envelope["id"] and d["delivered_at"] and d["next_attempt_at"] is None
    assert deliver_due(s) == 0  # delivered once, not again


def test_a_500_is_retried_with_backoff_then_delivered(tmp_path, receiver):
    receiver.codes = [500]
    client, s = make_api(tmp_path, webhook_backoff_seconds=0.3)
    with client:
        hook = client.post("/v1/webhooks", json={"url": receiver.url, "events": ["*"],
                                                 "secret": "s" * 20}).json()
        finish_a_job(client, s)
        assert deliver_due(s) == 1
        d = client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["items"][0]
        assert (d["status"], d["attempts"], d["last_status_code"]) == ("pending", 1, 500)
        assert d["last_error"] == "answered HTTP 500"
        assert deliver_due(s) == 0  # not due before the backoff
        time.sleep(0.35)
        assert deliver_due(s) == 1
        d = client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["items"][0]
        assert (d["status"], d["attempts"], d["last_status_code"]) == ("delivered", 2, 200)
        assert d["last_error"] is None
        assert [h["Pretrainer-Delivery"] for h, _ in receiver.got] == [d["id"], d["id"]]
        for headers, body in receiver.got:
            verify("s" * 20, headers, body)


def test_a_delivery_fails_after_max_attempts(tmp_path, receiver):
    receiver.codes = [503, 503]
    client, s = make_api(tmp_path, webhook_max_attempts=2)
    with client:
        hook = client.post("/v1/webhooks", json={"url": receiver.url, "events": ["job.failed",
                                                                                  "job.succeeded"]}).json()
        finish_a_job(client, s)
        deliver_due(s)
        deliver_due(s)
        d = client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["items"][0]
        assert (d["status"], d["attempts"], d["last_status_code"]) == ("failed", 2, 503)
        assert deliver_due(s) == 0


def test_a_down_or_slow_receiver_does_not_delay_the_job(tmp_path):
    slow = Receiver(delay=3.0)
    client, s = make_api(tmp_path, webhook_timeout_seconds=0.5)
    try:
        with client:
            hook = client.post("/v1/webhooks", json={"url": slow.url, "events": ["job.*"]}).json()
            start = time.monotonic()
            job = finish_a_job(client, s)
            assert job["status"] == "succeeded" and time.monotonic() - start < 2.5
            d = client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["items"][0]
            assert (d["status"], d["attempts"]) == ("pending", 0)  # written, not sent, by the job
            start = time.monotonic()
            deliver_due(s)
            assert time.monotonic() - start < 2.5  # the POST's timeout, not the receiver's pace
            d = client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["items"][0]
            assert d["attempts"] == 1 and d["last_error"] == "no answer within 0.5 s"
    finally:
        slow.close()


def test_the_api_process_sends_deliveries_in_the_background(tmp_path, receiver):
    client, s = make_api(tmp_path, webhook_poll_seconds=0.1)
    with client:
        hook = client.post("/v1/webhooks", json={"url": receiver.url, "events": ["job.*"]}).json()
        sent = client.post(f"/v1/webhooks/{hook['id']}/test")
        assert sent.status_code == 202 and sent.json()["event"] == "webhook.test"
        job = finish_a_job(client, s)
        deadline = time.monotonic() + 10
        while len(receiver.got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    events = sorted(h["Pretrainer-Event"] for h, _ in receiver.got)
    assert events == ["job.succeeded", "webhook.test"]
    assert any(json.loads(b)["data"].get("job", {}).get("id") == job["id"] for _, b in receiver.got)


def test_a_cancelled_queued_job_is_a_job_cancelled_event(api, receiver):
    client, s = api
    hook = client.post("/v1/webhooks", json={"url": receiver.url,
                                             "events": ["job.cancelled"]}).json()
    ds = upload(client, to_csv(blobs(60)))["body"]["id"]
    job = client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "kmeans",
                                        "params": {"n_clusters": 3}}).json()
    client.post(f"/v1/jobs/{job['id']}/cancel")
    deliver_due(s)
    assert [h["Pretrainer-Event"] for h, _ in receiver.got] == ["job.cancelled"]
    items = client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["items"]
    assert items[0]["body"]["data"]["job"]["status"] == "cancelled"


def test_events_by_job_kind_and_wildcards(api):
    client, s = api
    only_jobs = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/x",
                                                  "events": ["job.*"]}).json()
    batches = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/y",
                                                "events": ["batch.failed", "sweep.*"]}).json()
    with session_scope(s.resolved_database_url) as session:
        batch = Job(id="job_b", project="default", kind="batch", status="failed",
                    algorithm="kmeans", dataset_id="ds_x", metrics={}, created_at=None)
        webhooks.job_ended(session=session, job=batch)
        webhooks.emit(session=session, project="default", event="sweep.succeeded",
                      data={"sweep": {"id": "swp_1"}})
        webhooks.emit(session=session, project="other", event="sweep.failed", data={})
    got = {h: [d["event"] for d in client.get(f"/v1/webhooks/{h}/deliveries").json()["items"]]
           for h in (only_jobs["id"], batches["id"])}
    assert got[only_jobs["id"]] == []
    assert sorted(got[batches["id"]]) == ["batch.failed", "sweep.succeeded"]


def test_list_get_delete_and_other_projects(api):
    client, _ = api
    hook = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/x",
                                             "events": ["comparison.*"]}).json()
    listed = client.get("/v1/webhooks").json()
    assert listed["total"] == 1 and listed["items"][0]["secret"] is None
    assert client.delete(f"/v1/webhooks/{hook['id']}").status_code == 204
    assert client.get(f"/v1/webhooks/{hook['id']}").status_code == 404
    assert client.get(f"/v1/webhooks/{hook['id']}/deliveries").status_code == 404


def field_of(r) -> str:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return r.json()["errors"][0]["field"]


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/hook", "http://10.1.2.3/hook", "http://169.254.169.254/latest",
    "http://localhost/hook", "http://[::1]/hook", "http://0.0.0.0/hook", "http://192.168.1.5/",
    "http://[::ffff:127.0.0.1]/hook"])
def test_internal_urls_are_refused_without_the_setting(client, url):
    r = client.post("/v1/webhooks", json={"url": url, "events": ["job.*"]})
    assert field_of(r) == "url" and "internal address" in r.json()["detail"]
    assert client.get("/v1/webhooks").json()["total"] == 0


def test_bad_urls_and_events_are_422_naming_the_field(client):
    r = client.post("/v1/webhooks", json={"url": "ftp://example.com/x", "events": ["job.*"]})
    assert field_of(r) == "url"
    r = client.post("/v1/webhooks", json={"url": "http://no-such-host.invalid/", "events": ["job.*"]})
    assert field_of(r) == "url" and "does not resolve" in r.json()["detail"]


def test_unknown_events_are_422_naming_events_i(api):
    client, _ = api
    r = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/", "events": ["job.*", "job.done"]})
    assert field_of(r) == "events[1]" and "job.succeeded" in r.json()["detail"]
    r = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/", "events": ["nope.*"]})
    assert field_of(r) == "events[0]"
    r = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/", "events": []})
    assert field_of(r) == "events"
    r = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/", "events": ["*"],
                                          "secret": "short"})
    assert field_of(r) == "secret"


def test_a_delivery_is_refused_when_the_host_turned_internal(tmp_path, receiver):
    """Registered while allowed; the setting off at delivery: the check runs again, no POST."""
    client, s = make_api(tmp_path)
    with client:
        hook = client.post("/v1/webhooks", json={"url": receiver.url, "events": ["job.*"]}).json()
        finish_a_job(client, s)
    strict = s.model_copy(update={"webhook_allow_private": False, "webhook_max_attempts": 1})
    deliver_due(strict)
    assert receiver.got == []
    with session_scope(s.resolved_database_url) as session:
        d = webhooks.deliveries(session=session, project="default", webhook_id=hook["id"],
                                limit=5, offset=0)[0][0]
        assert d.status == "failed" and d.last_error.startswith("refused: host 127.0.0.1")


def test_signature_is_hmac_sha256_over_timestamp_dot_body():
    body = b'{"a":1}'
    expected = hmac.new(b"k" * 16, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhooks.signature("k" * 16, 1700000000, body) == f"t=1700000000,v1={expected}"


def test_a_due_delivery_is_claimed_by_one_sender_only(api):
    """Two API processes polling at the same instant: the claim moves the delivery's
    next_attempt_at on, so the second finds nothing due."""
    from app.db.tables import utcnow

    client, s = api
    client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/", "events": ["*"]})
    with session_scope(s.resolved_database_url) as session:
        webhooks.emit(session=session, project="default", event="sweep.failed", data={})
    now = utcnow()
    with session_scope(s.resolved_database_url) as first:
        mine = webhooks.claim_due(session=first, now=now, limit=10, hold_seconds=60)
    with session_scope(s.resolved_database_url) as second:  # polled at the same instant
        theirs = webhooks.claim_due(session=second, now=now, limit=10, hold_seconds=60)
    assert len(mine) == 1 and mine[0].event == "sweep.failed" and mine[0].attempt == 1
    assert theirs == []
