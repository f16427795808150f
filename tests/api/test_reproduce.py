"""The reproducibility record of a model and POST /v1/models/{id}/reproduce.

Jobs run in-process through run_job, the function the Celery task calls;
tests/integration/test_reproduce.py drives the real worker.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import sys

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.preprocessing import StandardScaler

from app import storage
from app.db.session import session_scope
from app.db.tables import Dataset, Model
from app.ml import registry
from app.ml.reproduce import compare_dirs
from app.storage import open_store
from tests.api.test_transfer import labelled_csv
from tests.conftest import blobs, finished, to_csv, upload
from tests.conftest import run_in_process as run

FEATURES = ["a", "b", "c", "d", "e", "f"]
TINY_NET = {"epochs": 2, "hidden_dims": [16], "latent_dim": 4, "batch_size": 32}


def reproduce(client, settings, model_id: str) -> dict:
    """POST /v1/models/{id}/reproduce, run the job in-process, return the finished job."""
    r = client.post(f"/v1/models/{model_id}/reproduce")
    assert r.status_code == 202, r.json()
    assert r.json()["kind"] == "reproduce" and r.json()["source_model_id"] == model_id
    return finished(client, settings, r)


def artifact_dir(settings, model_id: str):
    """The folder of a model's stored artifact files."""
    return open_store(settings).path(storage.model_key(model_id))


def kmeans_model(client, settings, **params) -> tuple[str, dict]:
    ds = upload(client, to_csv(blobs(120)))["body"]["id"]
    job = run(client, settings, {"dataset_id": ds, "algorithm": "kmeans",
                                 "params": {"n_clusters": 3, **params}})
    assert job["status"] == "succeeded", job
    return ds, client.get(f"/v1/models/{job['model_id']}").json()


def test_the_record_names_params_seed_data_versions_device_and_file_hashes(client, settings):
    ds, model = kmeans_model(client, settings, random_state=7)
    record = model["reproducibility"]
    job = client.get(f"/v1/jobs/{model['job_id']}").json()
    # Resolved params: the job's full params with every default, and the seed it used.
    assert record["params"] == job["params"] and record["params"]["n_init"] == "auto"
    assert record["seed"] == 7 and record["params"]["random_state"] == 7
    dataset = client.get(f"/v1/datasets/{ds}").json()
    assert record["dataset"] == {"id": ds, "sha256": dataset["sha256"], "n_rows": 120,
                                 "features": ["a", "b", "c", "d"], "target": None,
                                 "n_features": 4}
    assert dataset["sha256"] == hashlib.sha256(to_csv(blobs(120))).hexdigest()
    assert record["versions"] == {
        "python": sys.version, "torch": torch.__version__.split("+")[0],
        "scikit-learn": importlib.metadata.version("scikit-learn"), "numpy": np.__version__,
        "pretrainer": importlib.metadata.version("pretrainer"),
        "git_commit": record["versions"]["git_commit"]}
    assert record["device"] == "cpu" and record["device_name"] and record["threads"] >= 1
    folder = artifact_dir(settings, model["id"])
    stored = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in folder.iterdir() if p.is_file()}
    assert record["artifact_sha256"] == stored
    assert {"estimator.skops", "meta.json"} <= set(stored)


def test_the_git_commit_setting_is_what_the_record_names(client, settings):
    settings.git_commit = "0123abcd"
    _, model = kmeans_model(client, settings)
    assert model["reproducibility"]["versions"]["git_commit"] == "0123abcd"


def _check_reproduced(client, settings, model: dict, job: dict) -> None:
    assert job["status"] == "succeeded", job
    assert job["metrics"]["identical"] is True and job["metrics"]["max_abs_diff"] == 0.0
    assert job["metrics"]["differing_files"] == []
    assert job["algorithm"] == model["algorithm"] and job["params"] == model["params"]
    again = client.get(f"/v1/models/{job['model_id']}").json()
    assert again["reproducibility"]["artifact_sha256"] == model["reproducibility"]["artifact_sha256"]
    assert again["reproducibility"]["seed"] == model["reproducibility"]["seed"]


def test_reproduce_kmeans_is_identical(client, settings):
    _, model = kmeans_model(client, settings)
    _check_reproduced(client, settings, model, reproduce(client, settings, model["id"]))


def test_reproduce_an_autoencoder_and_a_transfer_from_it_are_identical(client, settings):
    ds = upload(client, labelled_csv(120))["body"]["id"]
    pre = run(client, settings, {"dataset_id": ds, "algorithm": "autoencoder",
                                 "features": FEATURES, "params": TINY_NET})
    assert pre["status"] == "succeeded", pre
    auto = client.get(f"/v1/models/{pre['model_id']}").json()
    assert "weights.safetensors" in auto["reproducibility"]["artifact_sha256"]
    _check_reproduced(client, settings, auto, reproduce(client, settings, auto["id"]))

    job = run(client, settings, {"dataset_id": ds, "algorithm": "transfer", "target": "label",
                                 "params": {"backbone": f"model:{auto['id']}", "epochs": 2,
                                            "freeze": "none", "batch_size": 32}})
    assert job["status"] == "succeeded", job
    transfer = client.get(f"/v1/models/{job['model_id']}").json()
    assert transfer["reproducibility"]["dataset"]["target"] == "label"
    assert transfer["reproducibility"]["backbone"]["spec"] == f"model:{auto['id']}"
    _check_reproduced(client, settings, transfer, reproduce(client, settings, transfer["id"]))


def test_max_abs_diff_is_the_largest_weight_difference_of_two_seeds(client, settings):
    ds = upload(client, labelled_csv(120))["body"]["id"]
    ids = []
    for seed in (0, 1):
        job = run(client, settings, {"dataset_id": ds, "algorithm": "autoencoder",
                                     "features": FEATURES, "params": {**TINY_NET, "seed": seed}})
        assert job["status"] == "succeeded", job
        ids.append(job["model_id"])
    dirs = [artifact_dir(settings, i) for i in ids]
    found = compare_dirs(*dirs)
    states = [registry.load_trained("autoencoder", d).net.state_dict() for d in dirs]
    expected = max(float((states[0][k].double() - states[1][k].double()).abs().max())
                   for k in states[0])
    assert not found.identical and "weights.safetensors" in found.differing_files
    assert expected > 0 and found.max_abs_diff == pytest.approx(expected, rel=1e-12)


def test_max_abs_diff_of_kmeans_seeds_covers_centroids_as_sklearn_finds_them(client, settings):
    """Two seeds of k-means on data with no clear clusters: the centroids differ; the largest
    difference covers sklearn's own centroids of the two fits."""
    x = np.random.default_rng(3).normal(size=(120, 4))
    ds = upload(client, to_csv(x))["body"]["id"]
    ids = [run(client, settings, {"dataset_id": ds, "algorithm": "kmeans",
                                  "params": {"n_clusters": 5, "random_state": s,
                                             "n_init": 1}})["model_id"] for s in (0, 1)]
    found = compare_dirs(*(artifact_dir(settings, i) for i in ids))
    xs = StandardScaler().fit_transform(x)
    fits = [KMeans(n_clusters=5, random_state=s, n_init=1).fit(xs) for s in (0, 1)]
    centers = float(np.abs(fits[0].cluster_centers_ - fits[1].cluster_centers_).max())
    labels = float(np.abs(fits[0].labels_ - fits[1].labels_).max())
    assert "estimator.skops" in found.differing_files
    assert "scaler.skops" not in found.differing_files  # the same data, the same scaler
    assert found.max_abs_diff == pytest.approx(max(centers, labels), rel=1e-9)


def test_a_deleted_dataset_is_410_and_a_changed_one_409(client, settings):
    ds, model = kmeans_model(client, settings)
    with session_scope(settings.resolved_database_url) as s:
        s.get(Dataset, ds).sha256 = "0" * 64
    r = client.post(f"/v1/models/{model['id']}/reproduce")
    assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["field"] == "dataset_id" and "sha256" in r.json()["detail"]
    assert client.get("/v1/jobs").json()["total"] == 1  # nothing was queued

    assert client.delete(f"/v1/datasets/{ds}").status_code == 204
    r = client.post(f"/v1/models/{model['id']}/reproduce")
    assert r.status_code == 410 and r.json()["errors"][0]["field"] == "dataset_id"
    assert ds in r.json()["detail"] and "deleted" in r.json()["detail"]
    assert client.get("/v1/jobs").json()["total"] == 1


def test_a_model_without_a_record_is_409_and_an_unknown_one_404(client, settings):
    _, model = kmeans_model(client, settings)
    with session_scope(settings.resolved_database_url) as s:
        s.get(Model, model["id"]).reproducibility = {}
    r = client.post(f"/v1/models/{model['id']}/reproduce")
    assert r.status_code == 409 and "no reproducibility record" in r.json()["detail"]
    assert client.post("/v1/models/mdl_nope/reproduce").status_code == 404


def test_a_waiting_reproduce_job_keeps_its_source_model_until_it_ends(client, settings):
    _, model = kmeans_model(client, settings)
    r = client.post(f"/v1/models/{model['id']}/reproduce")
    refused = client.delete(f"/v1/models/{model['id']}")
    assert refused.status_code == 409 and r.json()["id"] in refused.text  # as a batch job does
    client.post(f"/v1/jobs/{r.json()['id']}/cancel")
    assert client.delete(f"/v1/models/{model['id']}").status_code == 204
