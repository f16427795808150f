"""The `pretrainer` console script's client commands, run as a user runs them, against `make run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from tests.conftest import to_csv

pytestmark = pytest.mark.integration
PRETRAINER = str(Path(sys.executable).parent / "pretrainer")


def cli(service, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `pretrainer ARGS` with PRETRAINER_URL pointing at the service."""
    env = {**os.environ, "PRETRAINER_URL": service.base, "COLUMNS": "200"}
    out = subprocess.run([PRETRAINER, *args], capture_output=True, text=True, env=env,
                         timeout=300, check=False)
    if check:
        assert out.returncode == 0, f"{args}: {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> Path:
    x, _ = make_blobs(n_samples=200, n_features=3, centers=3, random_state=0)
    path = tmp_path_factory.mktemp("cli") / "points.csv"
    path.write_bytes(to_csv(x))
    return path


def test_upload_train_follow_predict_and_list_from_the_command_line(embedded, rows, tmp_path):
    ds = json.loads(cli(embedded, "datasets", "upload", str(rows), "--name", "points",
                        "--json").stdout)
    assert ds["name"] == "points" and ds["n_rows"] == 200

    job = json.loads(cli(embedded, "train", "kmeans", "--dataset", ds["id"], "--param",
                         "n_clusters=3", "--param", "random_state=0", "--follow", "--json").stdout)
    assert job["status"] == "succeeded" and job["params"]["n_clusters"] == 3
    model_id = job["model_id"]

    queries = tmp_path / "queries.csv"
    queries.write_bytes(to_csv(make_blobs(n_samples=4, n_features=3, centers=3,
                                          random_state=5)[0]))
    pred = json.loads(cli(embedded, "predict", model_id, str(queries), "--json").stdout)
    emb = json.loads(cli(embedded, "embed", model_id, str(queries), "--json").stdout)
    assert pred["predictions"] == np.argmin(emb["embeddings"], axis=1).tolist()

    jobs = json.loads(cli(embedded, "jobs", "list", "--json").stdout)
    models = json.loads(cli(embedded, "models", "list", "--json").stdout)
    assert job["id"] in [j["id"] for j in jobs] and model_id in [m["id"] for m in models]
    table = cli(embedded, "models", "list").stdout
    assert model_id in table and "kmeans" in table  # a table for people, ids whole


def test_follow_draws_epoch_metrics_and_ends_succeeded(embedded, rows, tmp_path):
    ds = json.loads(cli(embedded, "datasets", "upload", str(rows), "--json").stdout)
    out = cli(embedded, "train", "autoencoder", "--dataset", ds["id"], "--param", "epochs=3",
              "--param", "hidden_dims=[8]", "--follow")
    assert "succeeded" in out.stdout and "epochs_trained" in out.stdout
    assert "epoch 3/3 loss" in out.stderr  # the live bar's last state
    job_id = out.stdout.split("job ", 1)[1].split()[0]
    plot = tmp_path / "loss.png"
    cli(embedded, "jobs", "plot", job_id, "-o", str(plot))
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_errors_exit_1_with_the_problem(embedded, rows):
    ds = json.loads(cli(embedded, "datasets", "upload", str(rows), "--json").stdout)
    out = cli(embedded, "train", "kmeans", "--dataset", ds["id"], "--param", "n_clusters=0",
              "--json", check=False)
    assert out.returncode == 1
    problem = json.loads(out.stderr)
    assert problem["status"] == 422 and problem["errors"][0]["field"] == "params.n_clusters"
    human = cli(embedded, "models", "show", "mdl_nope", check=False)
    assert human.returncode == 1 and "mdl_nope does not exist" in human.stderr
    away = cli(embedded, "jobs", "list", "--url", "http://127.0.0.1:1", check=False)
    assert away.returncode == 1 and "http://127.0.0.1:1" in away.stderr


def test_models_labels_and_evaluate_from_the_command_line(embedded, tmp_path):
    """A clustering trained with a label column by the real worker: its own labels of the
    training rows, and its agreement with the labels of a test set, from the command line."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import adjusted_rand_score
    from sklearn.preprocessing import StandardScaler

    x, y = make_blobs(n_samples=160, n_features=3, centers=3, cluster_std=2.5, random_state=2)
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    names = ["a", "b", "c", "label"]
    train.write_bytes(to_csv(np.column_stack([x[:120], y[:120]]), names))
    test.write_bytes(to_csv(np.column_stack([x[120:], y[120:]]), names))
    ds = json.loads(cli(embedded, "datasets", "upload", str(train), "--json").stdout)["id"]
    test_ds = json.loads(cli(embedded, "datasets", "upload", str(test), "--json").stdout)["id"]
    job = json.loads(cli(embedded, "train", "agglomerative", "--dataset", ds, "--target", "label",
                         "--param", "n_clusters=3", "--follow", "--json").stdout)
    assert job["status"] == "succeeded", job
    # standardize is on by default: the clustering of the standardised rows
    own = AgglomerativeClustering(n_clusters=3).fit(StandardScaler().fit_transform(x[:120])).labels_
    truth = y[:120].astype(float).astype(int).astype(str)
    assert job["metrics"]["ari"] == pytest.approx(adjusted_rand_score(truth, own))
    labels = json.loads(cli(embedded, "models", "labels", job["model_id"], "--json").stdout)
    assert labels["labels"] == own.tolist()
    out = json.loads(cli(embedded, "evaluate", job["model_id"], test_ds, "--json").stdout)
    assert out["target"] == "label" and out["n_rows"] == 40
    assert set(out["metrics"]) == {"ari", "nmi", "purity"}
    missing = cli(embedded, "evaluate", job["model_id"], test_ds, "--target", "nope",
                  check=False)
    assert missing.returncode == 1 and "nope" in missing.stdout + missing.stderr
