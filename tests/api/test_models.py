"""Serving through HTTP: predict/embed answers, model listing, and the error paths.

Jobs are trained in-process by the same run_job the Celery task calls, so these tests stay fast;
tests/integration drives the real worker process.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from app.runner import run_job
from tests.conftest import blobs, run_in_process, to_csv, upload


def train(client, settings, algorithm: str, params: dict, content: bytes | None = None) -> dict:
    """Upload, submit and run a job in-process; return the finished job."""
    ds = upload(client, content or to_csv(blobs()))["body"]["id"]
    return run_in_process(client, settings, {"dataset_id": ds, "algorithm": algorithm,
                                             "params": params})


def test_kmeans_predict_and_embed_equal_sklearn(client, settings):
    job = train(client, settings, "kmeans", {"n_clusters": 3, "random_state": 0})
    assert job["status"] == "succeeded", job
    assert job["progress"] == 1 and job["started_at"] and job["finished_at"]
    x = blobs()
    # The job's defaults: standardize, then scikit-learn's KMeans with its n_init.
    assert job["params"]["standardize"] is True
    ref = make_pipeline(StandardScaler(), KMeans(n_clusters=3, random_state=0,
                                                 n_init=job["params"]["n_init"])).fit(x)
    assert job["metrics"]["inertia"] == pytest.approx(ref[-1].inertia_, rel=1e-9)
    model = client.get(f"/v1/models/{job['model_id']}").json()
    assert model["algorithm"] == "kmeans" and model["job_id"] == job["id"]
    assert [f["name"] for f in model["input_schema"]["features"]] == ["a", "b", "c", "d"]
    assert set(model["capabilities"]) == {"predict", "embed"}
    new = x[:20] + 0.1
    pred = client.post(f"/v1/models/{job['model_id']}/predict", json={"instances": new.tolist()})
    assert pred.status_code == 200
    assert pred.json()["predictions"] == ref.predict(new).tolist()
    emb = client.post(f"/v1/models/{job['model_id']}/embed", json={"instances": new.tolist()}).json()
    np.testing.assert_allclose(emb["embeddings"], ref.transform(new), rtol=1e-6)
    # Instances as objects keyed by column name give the same answer.
    objs = [dict(zip("abcd", row)) for row in new.tolist()]
    by_name = client.post(f"/v1/models/{job['model_id']}/predict", json={"instances": objs}).json()
    assert by_name["predictions"] == pred.json()["predictions"]


def test_wrong_feature_count_is_422_naming_expected_and_received(client, settings):
    job = train(client, settings, "kmeans", {"n_clusters": 3})
    r = client.post(f"/v1/models/{job['model_id']}/predict", json={"instances": [[1.0, 2.0]]})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "instances"
    assert "2" in r.json()["detail"] and "4" in r.json()["detail"]


def test_missing_column_and_non_number_are_422(client, settings):
    job = train(client, settings, "kmeans", {"n_clusters": 3})
    url = f"/v1/models/{job['model_id']}/predict"
    r = client.post(url, json={"instances": [{"a": 1, "b": 2, "c": 3}]})
    assert r.status_code == 422 and "d" in r.json()["detail"]
    r = client.post(url, json={"instances": [[1, 2, "x", 4]]})
    assert r.status_code == 422
    r = client.post(url, json={"instances": []})
    assert r.status_code == 422
    r = client.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body"


def test_generate_on_kmeans_says_what_the_model_can_do(client, settings):
    job = train(client, settings, "kmeans", {"n_clusters": 3})
    r = client.post(f"/v1/models/{job['model_id']}/generate", json={"n": 2})
    assert r.status_code == 422
    assert "cannot generate" in r.json()["detail"] and "predict" in r.json()["detail"]


def test_tsne_embed_new_points_is_4xx_and_training_embedding_downloads(client, settings):
    job = train(client, settings, "tsne", {"n_components": 2, "perplexity": 10, "random_state": 0})
    assert job["status"] == "succeeded", job
    mid = job["model_id"]
    r = client.post(f"/v1/models/{mid}/embed", json={"instances": [[0, 0, 0, 0]]})
    assert r.status_code == 422 and "embedding" in r.json()["detail"]
    got = client.get(f"/v1/models/{mid}/embedding").json()
    assert got["n_rows"] == 300 and got["n_components"] == 2 and len(got["embedding"]) == 300


def test_pca_predict_returns_reconstruction_and_error(client, settings):
    job = train(client, settings, "pca", {"n_components": 2})
    x = blobs()
    ref = make_pipeline(StandardScaler(), PCA(n_components=2)).fit(x)  # standardize: the default
    assert job["metrics"]["explained_variance_ratio"] == pytest.approx(
        ref[-1].explained_variance_ratio_.tolist())
    out = client.post(f"/v1/models/{job['model_id']}/predict", json={"instances": x[:5].tolist()}).json()
    recon = ref.inverse_transform(ref.transform(x[:5]))  # back in the input's units
    np.testing.assert_allclose(out["predictions"], recon, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(out["reconstruction_error"], ((x[:5] - recon) ** 2).mean(axis=1),
                               rtol=1e-6, atol=1e-12)


def test_gmm_predict_has_probabilities(client, settings):
    job = train(client, settings, "gmm", {"n_components": 3})
    out = client.post(f"/v1/models/{job['model_id']}/predict",
                      json={"instances": blobs()[:4].tolist()}).json()
    assert len(out["probabilities"]) == 4
    assert all(abs(sum(p) - 1) < 1e-6 for p in out["probabilities"])


def test_too_many_instances_is_413(tmp_path):
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.db.migrate import upgrade
    from app.main import create_app

    s = Settings(data_dir=tmp_path / "d", max_instances=5)
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    with TestClient(create_app(s)) as c:
        job = train(c, s, "kmeans", {"n_clusters": 3})
        r = c.post(f"/v1/models/{job['model_id']}/predict", json={"instances": [[0, 0, 0, 0]] * 6})
        assert r.status_code == 413 and "5" in r.json()["detail"]


def test_failed_training_ends_failed_with_a_readable_message(client, settings):
    ds = upload(client, to_csv(blobs()))["body"]
    job = client.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "kmeans"}).json()
    # The dataset's bytes vanish from the store (a disk fault): the job must fail, not hang.
    for f in (settings.blob_dir / "datasets").rglob("*.csv"):
        f.unlink()
    run_job(job["id"], settings=settings, worker="test")
    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "failed", done
    assert done["error"]["message"] and done["error"]["type"]
    assert done["model_id"] is None and done["finished_at"]


def test_redelivery_of_a_finished_job_does_nothing(client, settings):
    job = train(client, settings, "kmeans", {"n_clusters": 3})
    run_job(job["id"], settings=settings, worker="again")
    after = client.get(f"/v1/jobs/{job['id']}").json()
    assert after["model_id"] == job["model_id"] and after["attempts"] == 1
    assert client.get("/v1/models").json()["total"] == 1


def test_delete_model_removes_it_and_its_files(client, settings):
    job = train(client, settings, "kmeans", {"n_clusters": 3})
    mid = job["model_id"]
    assert client.post(f"/v1/models/{mid}/predict", json={"instances": [[0, 0, 0, 0]]}).status_code == 200
    assert (settings.blob_dir / "models" / mid).is_dir()
    assert client.delete(f"/v1/models/{mid}").status_code == 204
    assert not (settings.blob_dir / "models" / mid).exists()
    assert client.get(f"/v1/models/{mid}").status_code == 404
    r = client.post(f"/v1/models/{mid}/predict", json={"instances": [[0, 0, 0, 0]]})
    assert r.status_code == 404
    assert client.get("/v1/models").json()["total"] == 0


def test_unknown_model_is_404(client):
    for path in ("", "/predict", "/embed"):
        method = client.get if path == "" else client.post
        kwargs = {} if path == "" else {"json": {"instances": [[1]]}}
        r = method(f"/v1/models/mdl_nope{path}", **kwargs)
        assert r.status_code == 404, path
