"""The Python client against `make run`: upload, train with follow, NumPy in and out, errors,
and the PNG plots of jobs and models."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import make_blobs

from pretrainer_client import AsyncClient, Client, JobFailed, PretrainerError
from tests.conftest import to_csv

pytestmark = pytest.mark.integration
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def client(embedded):
    with Client(embedded.base) as c:
        yield c


@pytest.fixture(scope="module")
def labelled_csv(tmp_path_factory) -> Path:
    """Blobs in 4-D with a string class column: a, b, c, d, label."""
    x, y = make_blobs(n_samples=300, n_features=4, centers=3, random_state=0)
    path = tmp_path_factory.mktemp("client") / "blobs.csv"
    body = to_csv(x).decode().splitlines()
    names = np.array(["north", "south", "west"])[y]
    path.write_text("\n".join([body[0] + ",label"] + [f"{r},{n}" for r, n in zip(body[1:], names)])
                    + "\n")
    return path


@pytest.fixture(scope="module")
def dataset(client, labelled_csv):
    return client.upload(labelled_csv)


def _image(png: bytes) -> Image.Image:
    assert png.startswith(PNG)
    return Image.open(io.BytesIO(png))


def _pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB")).reshape(-1, 3).astype(int)


def test_upload_reports_progress_and_returns_a_typed_dataset(client, labelled_csv):
    seen: list[tuple[int, int]] = []
    ds = client.upload(labelled_csv, name="blobs for progress", progress=lambda s, t: seen.append((s, t)))
    size = labelled_csv.stat().st_size
    assert seen and seen[-1] == (size, size) and all(s <= t for s, t in seen)
    assert ds.name == "blobs for progress" and ds.n_rows == 300 and ds.size_bytes == size
    assert [c.name for c in ds.columns] == ["a", "b", "c", "d", "label"]
    assert ds.columns[4].dtype == "string"
    assert client.dataset(ds.id) == ds
    assert ds.id in [d.id for d in client.datasets(limit=500).items]


def test_kmeans_predict_and_embed_round_trip_numpy(client, dataset):
    events = []
    job = client.train("kmeans", dataset, {"n_clusters": 3, "random_state": 0},
                       features=["a", "b", "c", "d"], on_event=events.append)
    assert job.status == "succeeded" and job.model_id and job.done
    assert [e.event for e in events][-1] == "end" and "status" in [e.event for e in events]
    x, _ = make_blobs(n_samples=20, n_features=4, centers=3, random_state=1)
    emb = client.embed(job.model_id, x)
    assert isinstance(emb, np.ndarray) and emb.shape == (20, 3)
    out = client.predict(job.model_id, x)
    assert isinstance(out.predictions, np.ndarray) and out.predictions.dtype.kind == "i"
    # k-means: the predicted cluster is the nearest centroid, i.e. the smallest embedded distance.
    np.testing.assert_array_equal(out.predictions, emb.argmin(axis=1))
    one = client.predict(job.model_id, x[0])  # a single row as a 1-D array
    assert one.predictions.tolist() == [out.predictions[0]]
    records = [dict(zip("abcd", row)) for row in x[:3].tolist()]
    assert client.predict(job.model_id, records).predictions.tolist() == out.predictions[:3].tolist()
    model = client.model(job.model_id)
    assert model.features == ["a", "b", "c", "d"] and "predict" in model.capabilities


def test_errors_are_exceptions_with_the_problem_fields(client, dataset):
    with pytest.raises(PretrainerError) as bad:
        client.submit("kmeans", dataset, {"n_clusters": 0})
    err = bad.value
    assert err.status == 422 and err.type.endswith("validation-error")
    assert err.title and "n_clusters" in err.detail
    assert any(e["field"] == "params.n_clusters" for e in err.errors)
    with pytest.raises(PretrainerError) as missing:
        client.model("mdl_does_not_exist")
    assert missing.value.status == 404 and "mdl_does_not_exist" in missing.value.detail
    job = client.train("kmeans", dataset, {"n_clusters": 2}, features=["a", "b", "c", "d"])
    with pytest.raises(PretrainerError) as width:
        client.predict(job.model_id, np.zeros((2, 3)))
    assert width.value.status == 422 and width.value.errors[0]["field"] == "instances"
    with pytest.raises(PretrainerError) as cannot:
        client.generate(job.model_id, 2)
    assert cannot.value.status == 422 and "generate" in cannot.value.detail


def test_a_job_that_does_not_succeed_raises_job_failed_with_its_error(client, dataset):
    job = client.submit("autoencoder", dataset, {"epochs": 500, "hidden_dims": [8]},
                        features=["a", "b", "c", "d"])

    def cancel_at_first_epoch(event):
        if event.event == "epoch" and event.data["epoch"] == 1:
            client.cancel(job)

    with pytest.raises(JobFailed) as failed:
        client.follow(job, on_event=cancel_at_first_epoch)
    ended = failed.value.job
    assert ended.id == job.id and ended.status == "cancelled" and ended.error.type == "Cancelled"
    assert 1 <= len(ended.history) < 500
    assert client.follow(job, raise_on_failure=False).status == "cancelled"


def test_autoencoder_follow_vae_generate_and_loss_plot(client, dataset):
    epochs = []
    job = client.train("vae", dataset, {"epochs": 4, "latent_dim": 2, "hidden_dims": [16]},
                       features=["a", "b", "c", "d"],
                       on_event=lambda e: epochs.append(e.data) if e.event == "epoch" else None)
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4] == [h["epoch"] for h in job.history]
    x, _ = make_blobs(n_samples=5, n_features=4, centers=3, random_state=0)
    out = client.predict(job.model_id, x)
    assert out.predictions.shape == (5, 4) and out.extras["reconstruction_error"].shape == (5,)
    samples = client.generate(job.model_id, 6, seed=3)
    assert isinstance(samples, np.ndarray) and samples.shape == (6, 4)
    np.testing.assert_array_equal(samples, client.generate(job.model_id, 6, seed=3))
    img = _image(client.loss_plot(job))
    assert img.size == (640, 480) and len(np.unique(_pixels(img), axis=0)) > 10
    emb = _image(client.model_plot(job.model_id, "embedding"))
    assert emb.size == (640, 480)


def test_plots_refuse_with_409_saying_why(client, dataset):
    job = client.train("kmeans", dataset, {"n_clusters": 3}, features=["a", "b", "c", "d"])
    with pytest.raises(PretrainerError) as no_loss:
        client.loss_plot(job)
    assert no_loss.value.status == 409 and "not trained in epochs" in no_loss.value.detail
    with pytest.raises(PretrainerError) as no_confusion:
        client.model_plot(job.model_id, "confusion")
    assert no_confusion.value.status == 409 and "confusion matrix" in no_confusion.value.detail
    # k-means on labelled rows: the scatter is coloured by the three labels.
    px = _pixels(_image(client.model_plot(job.model_id, "embedding")))
    saturated = px[px.max(axis=1) - px.min(axis=1) > 80]  # the markers, not text or axes
    assert len(np.unique(saturated // 40, axis=0)) >= 3


def test_transfer_classifier_confusion_plot(client, dataset):
    backbone = client.train("autoencoder", dataset, {"epochs": 2, "hidden_dims": [16]},
                            features=["a", "b", "c", "d"])
    job = client.train("transfer", dataset, {"backbone": f"model:{backbone.model_id}",
                                             "epochs": 4, "freeze": "none"},
                       features=["a", "b", "c", "d"], target="label")
    metrics = client.model(job.model_id).metrics
    assert metrics["classes"] == ["north", "south", "west"]
    img = _image(client.model_plot(job.model_id, "confusion"))
    assert img.size[0] >= 400 and img.size[1] >= 350
    labels = client.predict(job.model_id, np.zeros((2, 4))).predictions
    assert set(labels.tolist()) <= {"north", "south", "west"}


def test_async_client_does_the_same(embedded, labelled_csv):
    async def flow():
        async with AsyncClient(embedded.base) as c:
            ds = await c.upload(labelled_csv, progress=True)
            job = await c.train("pca", ds, {"n_components": 2}, features=["a", "b", "c", "d"])
            x = np.eye(4)
            return job, await c.embed(job.model_id, x), (await c.models(limit=500)).items
    job, emb, models = asyncio.run(flow())
    assert job.status == "succeeded" and emb.shape == (4, 2)
    assert job.model_id in [m.id for m in models]


def test_training_labels_and_evaluate_with_the_client(client, dataset, embedded):
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    job = client.train("kmeans", dataset, {"n_clusters": 3, "random_state": 0, "n_init": 3},
                       features=["a", "b", "c", "d"], target="label")
    x, y = make_blobs(n_samples=300, n_features=4, centers=3, random_state=0)
    ref = KMeans(n_clusters=3, random_state=0, n_init=3).fit(x)
    labels = client.training_labels(job.model_id)
    np.testing.assert_array_equal(labels, ref.labels_)
    names = np.array(["north", "south", "west"])[y]
    assert job.metrics["nmi"] == pytest.approx(normalized_mutual_info_score(names, ref.labels_))
    out = client.evaluate(job.model_id, dataset)  # the training set as a test set: same rows
    assert out["target"] == "label" and out["n_rows"] == 300
    assert out["metrics"]["ari"] == pytest.approx(adjusted_rand_score(names, ref.predict(x)))

    async def flow():
        async with AsyncClient(embedded.base) as c:
            return await c.training_labels(job.model_id), await c.evaluate(job.model_id, dataset)
    again, scored = asyncio.run(flow())
    np.testing.assert_array_equal(again, labels)
    assert scored["metrics"] == out["metrics"]
