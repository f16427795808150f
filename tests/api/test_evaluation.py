"""GET /v1/models/{id}/labels and POST /v1/models/{id}/evaluate through HTTP, every figure
checked against scikit-learn on the same rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.cluster import AgglomerativeClustering
from sklearn.datasets import make_blobs, make_classification

from tests.conftest import run_in_process, to_csv, upload


def labelled_blobs(seed: int = 0, n: int = 240) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_blobs(n_samples=n, n_features=3, centers=3, cluster_std=3.0, random_state=seed)
    return x, y


def run(client, settings, body: dict) -> dict:
    job = run_in_process(client, settings, body)
    assert job["status"] == "succeeded", job
    return job


def dataset(client, x: np.ndarray, y: np.ndarray | None, names=("a", "b", "c")) -> str:
    cols = list(names) + (["label"] if y is not None else [])
    data = np.column_stack([x, y]) if y is not None else x
    return upload(client, to_csv(data, cols))["body"]["id"]


def problem(r, field: str) -> str:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert any(e["field"] == field for e in body["errors"]), body
    return body["detail"]


def test_labels_stream_agglomeratives_own_clustering_in_row_order(client, settings):
    x, y = labelled_blobs()
    job = run(client, settings, {"dataset_id": dataset(client, x, y), "algorithm": "agglomerative",
                                 "params": {"n_clusters": 3, "linkage": "average",
                                                "standardize": False},
                                 "target": "label"})
    own = AgglomerativeClustering(n_clusters=3, linkage="average").fit(x).labels_
    truth = y.astype(int).astype(str)
    assert job["metrics"]["ari"] == pytest.approx(skm.adjusted_rand_score(truth, own))
    mid = job["model_id"]
    r = client.get(f"/v1/models/{mid}/labels")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.splitlines()
    assert lines[0] == "row,label" and len(lines) == len(x) + 1
    assert [int(line.split(",")[1]) for line in lines[1:]] == own.tolist()
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(len(x)))
    r = client.get(f"/v1/models/{mid}/labels", params={"format": "jsonl"})
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert rows[:2] == [{"row": 0, "label": int(own[0])}, {"row": 1, "label": int(own[1])}]
    assert [row["label"] for row in rows] == own.tolist()


def test_labels_of_a_model_that_is_no_clustering_is_422(client, settings):
    x, _ = labelled_blobs()
    job = run(client, settings, {"dataset_id": dataset(client, x, None), "algorithm": "pca",
                                 "params": {"n_components": 2}})
    detail = problem(client.get(f"/v1/models/{job['model_id']}/labels"), "model")
    assert "pca" in detail


def test_evaluate_a_clustering_on_a_test_set_with_its_target(client, settings):
    x, y = labelled_blobs()
    job = run(client, settings, {"dataset_id": dataset(client, x, y), "algorithm": "kmeans",
                                 "params": {"n_clusters": 3, "random_state": 0},
                                 "target": "label"})
    mid = job["model_id"]
    tx, ty = labelled_blobs(seed=0, n=300)
    tx, ty = tx[240:] + 0.05, ty[240:]
    test_id = dataset(client, tx, ty)
    r = client.post(f"/v1/models/{mid}/evaluate", json={"dataset_id": test_id})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["target"] == "label" and out["n_rows"] == 60  # the training job's target
    pred = client.post(f"/v1/models/{mid}/predict", json={"instances": tx.tolist()}).json()
    truth = [str(int(v)) for v in ty]
    assert out["metrics"]["ari"] == pytest.approx(
        skm.adjusted_rand_score(truth, pred["predictions"]))
    assert out["metrics"]["nmi"] == pytest.approx(
        skm.normalized_mutual_info_score(truth, pred["predictions"]))
    # Columns the model needs and does not find, or an unknown target: 422, nothing scored.
    missing = dataset(client, tx[:, :2], ty, names=("a", "c"))
    detail = problem(client.post(f"/v1/models/{mid}/evaluate", json={"dataset_id": missing}),
                     "dataset_id")
    assert "b" in detail and "lacks" in detail
    detail = problem(client.post(f"/v1/models/{mid}/evaluate",
                                 json={"dataset_id": test_id, "target": "nope"}), "target")
    assert "nope" in detail
    unlabelled = dataset(client, tx, None)
    problem(client.post(f"/v1/models/{mid}/evaluate", json={"dataset_id": unlabelled}),
            "instances")
    r = client.post(f"/v1/models/{mid}/evaluate", json={"dataset_id": "ds_nope"})
    assert r.status_code == 404


def test_evaluate_a_transfer_classifier_matches_sklearn_on_its_probabilities(client, settings):
    x, y = make_classification(n_samples=300, n_features=3, n_informative=3, n_redundant=0,
                               n_classes=3, n_clusters_per_class=1, random_state=1)
    ae = run(client, settings, {"dataset_id": dataset(client, x[:200], None),
                                "algorithm": "autoencoder",
                                "params": {"epochs": 2, "hidden_dims": [16], "latent_dim": 4}})
    job = run(client, settings, {"dataset_id": dataset(client, x[:200], y[:200]),
                                 "algorithm": "transfer", "target": "label",
                                 "params": {"backbone": f"model:{ae['model_id']}", "epochs": 5,
                                            "validation_fraction": 0}})
    m = job["metrics"]
    # Measured on the rows it trained on: named so, never plain "accuracy".
    assert "accuracy" not in m and "train_accuracy" in m and "train_baseline_accuracy" in m
    mid = job["model_id"]
    test_id = dataset(client, x[200:], y[200:])
    out = client.post(f"/v1/models/{mid}/evaluate", json={"dataset_id": test_id}).json()
    pred = client.post(f"/v1/models/{mid}/predict", json={"instances": x[200:].tolist()}).json()
    proba = np.asarray(pred["probabilities"])
    classes = client.get(f"/v1/models/{mid}").json()["input_schema"]["classes"]
    truth = np.array([classes.index(str(int(v))) for v in y[200:]])
    assert out["metrics"]["accuracy"] == pytest.approx(skm.accuracy_score(truth, proba.argmax(1)))
    assert out["metrics"]["macro_f1"] == pytest.approx(
        skm.f1_score(truth, proba.argmax(1), average="macro"))
    assert out["metrics"]["log_loss"] == pytest.approx(skm.log_loss(truth, proba), rel=1e-6)
