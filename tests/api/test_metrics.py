"""GET /metrics, scraped after real requests: per-route counts, jobs, queue depth, model cache."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from app.runner import run_job
from tests.conftest import blobs, to_csv, upload


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition as {(name, sorted labels): value}."""
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_per_route_template_not_raw_path(client):
    for i in range(3):
        assert client.get(f"/v1/models/mdl_{i}").status_code == 404
    client.get("/healthz")
    client.get("/no/such/path")
    m = scrape(client)
    route = "/v1/models/{model_id}"
    assert sample(m, "pretrainer_http_requests_total", method="GET", route=route, status="404") == 3
    assert sample(m, "pretrainer_http_requests_total", method="GET", route="/healthz", status="200") == 1
    assert sample(m, "pretrainer_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert sample(m, "pretrainer_http_request_duration_seconds_count", method="GET", route=route) == 3
    assert sample(m, "pretrainer_http_request_duration_seconds_sum", method="GET", route=route) > 0
    assert not any("mdl_0" in str(labels) for _, labels in m)  # no raw ids as labels


def test_jobs_by_state_queue_depth_durations_and_model_cache(client, settings):
    ds = upload(client, to_csv(blobs()))["body"]["id"]
    ids = [client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "kmeans",
                                         "params": {"n_clusters": 3}}).json()["id"]
           for _ in range(2)]
    m = scrape(client)
    assert sample(m, "pretrainer_jobs", status="queued", queue="cpu") == 2
    # No worker runs here: both messages still wait in the filesystem broker.
    assert sample(m, "pretrainer_queue_depth", queue="cpu") == 2
    assert sample(m, "pretrainer_queue_depth", queue="gpu") == 0

    run_job(ids[0], settings=settings, worker="test")
    model = client.get(f"/v1/jobs/{ids[0]}").json()["model_id"]
    for _ in range(3):
        assert client.post(f"/v1/models/{model}/predict",
                           json={"instances": [[0.0, 1.0, 2.0, 3.0]]}).status_code == 200
    m = scrape(client)
    assert sample(m, "pretrainer_jobs", status="queued", queue="cpu") == 1
    assert sample(m, "pretrainer_jobs", status="succeeded", queue="cpu") == 1
    assert sample(m, "pretrainer_job_duration_seconds_count", status="succeeded", queue="cpu") == 1
    assert sample(m, "pretrainer_job_duration_seconds_bucket", status="succeeded", queue="cpu",
                  le="+Inf") == 1
    assert sample(m, "pretrainer_model_cache_misses_total") == 1  # one load
    assert sample(m, "pretrainer_model_cache_hits_total") == 2  # the other two calls
    assert sample(m, "pretrainer_model_cache_models") == 1
    route = "/v1/models/{model_id}/predict"
    assert sample(m, "pretrainer_http_requests_total", method="POST", route=route, status="200") == 3


def test_request_id_is_echoed_or_made(client):
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    made = client.get("/healthz").headers["x-request-id"]
    assert len(made) == 32 and made != client.get("/healthz").headers["x-request-id"]
    # A header that is not a sane token is replaced, not echoed into logs and responses.
    assert client.get("/healthz", headers={"X-Request-ID": "a b\tc"}).headers["x-request-id"] != "a b\tc"
