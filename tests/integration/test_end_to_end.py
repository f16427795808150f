"""Upload → train on the real worker → predict/embed, on the embedded default and on Redis + PostgreSQL."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.conftest import blobs, to_csv

pytestmark = pytest.mark.integration


def wait_job(http, job_id: str, until: set[str], timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")


@pytest.fixture(params=["embedded", "production"])
def service(request):
    return request.getfixturevalue(request.param)


def test_upload_train_predict(service):
    http = service.http
    x = blobs(500, 4)
    r = http.post("/v1/datasets", files={"file": ("blobs.csv", to_csv(x))}, data={"name": "blobs"})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["n_rows"] == 500
    r = http.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "kmeans",
                                    "params": {"n_clusters": 3, "random_state": 0}})
    assert r.status_code == 202, r.text
    job = wait_job(http, r.json()["id"], {"succeeded", "failed", "cancelled"})
    assert job["status"] == "succeeded", job
    assert job["started_at"] and job["finished_at"] and job["progress"] == 1 and job["attempts"] == 1
    # The job's defaults: standardize, then scikit-learn's KMeans with its n_init.
    assert job["params"]["standardize"] is True
    ref = make_pipeline(StandardScaler(), KMeans(n_clusters=3, random_state=0,
                                                 n_init=job["params"]["n_init"])).fit(x)
    assert job["metrics"]["inertia"] == pytest.approx(ref[-1].inertia_, rel=1e-9)
    for key in ("silhouette", "davies_bouldin", "calinski_harabasz"):
        assert isinstance(job["metrics"][key], float)
    new = x[:10] + 0.05
    pred = http.post(f"/v1/models/{job['model_id']}/predict", json={"instances": new.tolist()})
    assert pred.status_code == 200 and pred.json()["predictions"] == ref.predict(new).tolist()
    emb = http.post(f"/v1/models/{job['model_id']}/embed", json={"instances": new.tolist()}).json()
    np.testing.assert_allclose(emb["embeddings"], ref.transform(new), rtol=1e-6)


def test_cancel_running_and_queued_jobs(service):
    http = service.http
    # Big enough to keep the single worker busy for a while.
    big = np.random.default_rng(0).normal(size=(3000, 10))
    ds = http.post("/v1/datasets", files={"file": ("big.csv", to_csv(big))}).json()
    slow = http.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "tsne",
                                       "params": {"max_iter": 1000, "random_state": 0}}).json()
    wait_job(http, slow["id"], {"running", "succeeded", "failed"}, timeout=60)
    queued = http.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "kmeans",
                                         "params": {"n_clusters": 2}}).json()
    assert http.post(f"/v1/jobs/{queued['id']}/cancel").status_code == 202
    assert http.get(f"/v1/jobs/{queued['id']}").json()["status"] == "cancelled"
    assert http.post(f"/v1/jobs/{slow['id']}/cancel").status_code == 202
    done = wait_job(http, slow["id"], {"succeeded", "failed", "cancelled"}, timeout=120)
    assert done["status"] == "cancelled", done
    assert done["model_id"] is None and done["finished_at"]
    # The worker is free again and the cancelled queued job never ran.
    after = http.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "kmeans",
                                        "params": {"n_clusters": 2}}).json()
    assert wait_job(http, after["id"], {"succeeded", "failed"})["status"] == "succeeded"
    assert http.get(f"/v1/jobs/{queued['id']}").json()["started_at"] is None


def test_training_error_ends_failed_not_running(service):
    http = service.http
    # Every row identical: GMM with reg_covar=0 has singular covariances and scikit-learn refuses.
    same = np.ones((50, 3))
    ds = http.post("/v1/datasets", files={"file": ("same.csv", to_csv(same))}).json()
    r = http.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "gmm",
                                    "params": {"n_components": 2, "reg_covar": 0.0}})
    assert r.status_code == 202, r.text
    job = wait_job(http, r.json()["id"], {"succeeded", "failed", "cancelled"})
    assert job["status"] == "failed", job
    assert job["error"]["type"] and "covariance" in job["error"]["message"]


def test_readyz_reports_every_dependency(service):
    checks = service.http.get("/readyz").json()["checks"]
    assert checks == {"database": "ok", "broker": "ok", "store": "ok"}
