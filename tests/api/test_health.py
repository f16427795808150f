"""Probes and the OpenAPI contract."""

from __future__ import annotations


def test_healthz(client):
    assert client.get("/healthz").json()["status"] == "ok"


def test_readyz_checks_db_broker_and_store(client):
    r = client.get("/readyz")
    assert r.status_code == 200, r.json()
    assert r.json()["checks"] == {"database": "ok", "broker": "ok", "store": "ok"}


def test_readyz_is_503_when_the_broker_is_down(tmp_path):
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.db.migrate import upgrade
    from app.main import create_app

    s = Settings(data_dir=tmp_path / "d", broker_url="redis://127.0.0.1:1/0")
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    with TestClient(create_app(s)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["broker"].startswith("error")


def test_openapi_documents_the_contract(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/v1/datasets", "/v1/datasets/{dataset_id}", "/v1/algorithms", "/v1/jobs",
                 "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/models",
                 "/v1/models/{model_id}", "/v1/models/{model_id}/predict",
                 "/v1/models/{model_id}/embed", "/v1/models/{model_id}/generate",
                 "/healthz", "/readyz"):
        assert path in paths, path
    upload = paths["/v1/datasets"]["post"]["requestBody"]["content"]
    assert "file" in upload["multipart/form-data"]["schema"]["properties"]
    assert client.get("/docs").status_code == 200


def test_unknown_route_is_problem_json(client):
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")


def test_each_queue_routes_to_itself(settings):
    from app.queue import enqueue_train

    enqueue_train(settings, "job_gpu", "gpu")
    enqueue_train(settings, "job_cpu", "cpu")
    files = sorted(p.name.rsplit(".", 2)[1] for p in (settings.broker_dir / "queue").iterdir())
    assert files == ["cpu", "gpu"]
