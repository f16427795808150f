"""Idempotency-Key on POST /v1/jobs and POST /v1/datasets: a retry returns the first result."""

from __future__ import annotations

from tests.conftest import blobs, to_csv


def test_a_retried_job_submission_returns_the_first_job(client, settings, blobs_csv):
    ds = client.post("/v1/datasets", files={"file": ("b.csv", blobs_csv)}).json()["id"]
    body = {"dataset_id": ds, "algorithm": "kmeans", "params": {"n_clusters": 3}}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert client.get("/v1/jobs").json()["total"] == 1
    messages = list((settings.broker_dir / "queue").iterdir())
    assert len(messages) == 1  # the retry enqueued nothing
    other = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-2"})
    assert other.json()["id"] != first.json()["id"]


def test_a_key_reused_with_another_body_is_422(client, blobs_csv):
    ds = client.post("/v1/datasets", files={"file": ("b.csv", blobs_csv)}).json()["id"]
    client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "kmeans"},
                headers={"Idempotency-Key": "same"})
    r = client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "pca"},
                    headers={"Idempotency-Key": "same"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Idempotency-Key"


def test_a_retried_upload_returns_the_first_dataset(client, settings):
    content = to_csv(blobs(100))
    first = client.post("/v1/datasets", files={"file": ("b.csv", content)},
                        headers={"Idempotency-Key": "up-1"})
    again = client.post("/v1/datasets", files={"file": ("b.csv", content)},
                        headers={"Idempotency-Key": "up-1"})
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert client.get("/v1/datasets").json()["total"] == 1
    assert len(list((settings.blob_dir / "datasets").iterdir())) == 1


def test_an_empty_key_is_422(client, blobs_csv):
    r = client.post("/v1/datasets", files={"file": ("b.csv", blobs_csv)},
                    headers={"Idempotency-Key": "  "})
    assert r.status_code == 422
