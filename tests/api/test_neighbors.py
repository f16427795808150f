"""Nearest neighbours over embeddings: build an index (a job of kind "index", run in-process
by the worker's run_job) and ask it, checked against exact search with scikit-learn.

Tiny data with a high ef_search: HNSW finds the exact neighbours (recall 1.0), so the rows
must equal sklearn's NearestNeighbors over the model's own embeddings of the dataset rows.
"""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from app import storage
from app.ml.ann import AnnIndex
from app.runner import run_job
from tests.api.test_models import train
from tests.conftest import blobs, run_in_process, to_csv, upload
from tests.data.test_images import digits, png, zip_bytes

EXACT = {"m": 16, "ef_construction": 200, "ef_search": 400}


def labelled_blobs(n: int = 300) -> tuple[np.ndarray, bytes]:
    """Blobs with an id column (1000, 1001, …) and a label column (the blob), as a CSV."""
    x = blobs(n)
    ids = np.arange(1000, 1000 + n)
    labels = (x[:, 0] > np.median(x[:, 0])).astype(int)
    table = np.column_stack([x, ids, labels])
    return x, to_csv(table, ["a", "b", "c", "d", "id", "label"])


def build(client, settings, model_id: str, dataset_id: str, **body) -> dict:
    """POST an index, run its job in-process, return the index as the API shows it after."""
    r = client.post(f"/v1/models/{model_id}/indexes", json={"dataset_id": dataset_id, **body})
    assert r.status_code == 202, r.json()
    assert r.json()["status"] == "queued"
    run_job(r.json()["job_id"], settings=settings, worker="test")
    return client.get(f"/v1/models/{model_id}/indexes/{r.json()['id']}").json()


@pytest.fixture
def pca(client, settings):
    """A PCA model trained on labelled blobs (id and label columns are left out of it), and
    the dataset id."""
    x, csv = labelled_blobs()
    ds = upload(client, csv)["body"]["id"]
    model_id = run_in_process(client, settings, {"dataset_id": ds, "algorithm": "pca",
                                                 "params": {"n_components": 3}})["model_id"]
    return model_id, ds, x


def embeddings(client, model_id: str, rows: np.ndarray) -> np.ndarray:
    r = client.post(f"/v1/models/{model_id}/embed", json={"instances": rows.tolist()})
    return np.asarray(r.json()["embeddings"])


def test_pca_neighbours_equal_exact_search_with_ids_and_labels(client, settings, pca):
    model_id, ds, x = pca
    index = build(client, settings, model_id, ds, params=EXACT)
    assert index["status"] == "succeeded" and index["progress"] == 1
    # PCA's embedding is coordinates: the index compares them by Euclidean distance.
    assert index["metric"] == "l2" and index["n_rows"] == 300 and index["dim"] == 3
    assert index["id_column"] == "id" and index["label_column"] == "label"
    queries = x[[0, 50, 120, 299]] + 0.05
    r = client.post(f"/v1/models/{model_id}/neighbors", json={"instances": queries.tolist(),
                                                             "k": 7})
    assert r.status_code == 200, r.json()
    body = r.json()
    assert body["index_id"] == index["id"] and len(body["neighbors"]) == 4
    ref = NearestNeighbors(n_neighbors=7).fit(embeddings(client, model_id, x))
    distances, rows = ref.kneighbors(embeddings(client, model_id, queries))
    got_rows = [[n["row"] for n in hits] for hits in body["neighbors"]]
    assert got_rows == rows.tolist()
    got_dist = [[n["distance"] for n in hits] for hits in body["neighbors"]]
    np.testing.assert_allclose(got_dist, distances, rtol=1e-4, atol=1e-5)
    labels = (x[:, 0] > np.median(x[:, 0])).astype(int)
    for hits in body["neighbors"]:
        for n in hits:
            assert n["id"] == 1000 + n["row"] and n["label"] == labels[n["row"]]


def test_cosine_metric_equals_sklearn_cosine(client, settings, pca):
    model_id, ds, x = pca
    index = build(client, settings, model_id, ds, metric="cosine", params=EXACT)
    assert index["metric"] == "cosine"
    queries = x[:5] * 1.5 + 0.2
    body = client.post(f"/v1/models/{model_id}/neighbors",
                       json={"instances": queries.tolist(), "k": 5,
                             "index_id": index["id"]}).json()
    ref = NearestNeighbors(n_neighbors=5, metric="cosine").fit(embeddings(client, model_id, x))
    distances, rows = ref.kneighbors(embeddings(client, model_id, queries))
    assert [[n["row"] for n in hits] for hits in body["neighbors"]] == rows.tolist()
    np.testing.assert_allclose([[n["distance"] for n in hits] for hits in body["neighbors"]],
                               distances, rtol=1e-4, atol=1e-5)


def test_a_dataset_without_ids_or_labels_answers_rows_and_distances(client, settings):
    job = train(client, settings, "kmeans", {"n_clusters": 3, "random_state": 0})
    ds = upload(client, to_csv(blobs(40, seed=1)))["body"]["id"]
    index = build(client, settings, job["model_id"], ds, params=EXACT)
    assert index["id_column"] is None and index["label_column"] is None
    body = client.post(f"/v1/models/{job['model_id']}/neighbors",
                       json={"instances": blobs(40, seed=1)[:2].tolist(), "k": 1}).json()
    assert body["neighbors"] == [[{"row": 0, "distance": pytest.approx(0, abs=1e-5)}],
                                 [{"row": 1, "distance": pytest.approx(0, abs=1e-5)}]]


def test_k_past_the_index_size_answers_every_row(client, settings):
    job = train(client, settings, "pca", {"n_components": 2})
    small = blobs(12, seed=3)
    ds = upload(client, to_csv(small))["body"]["id"]
    build(client, settings, job["model_id"], ds, params=EXACT)
    body = client.post(f"/v1/models/{job['model_id']}/neighbors",
                       json={"instances": small[:1].tolist(), "k": 1000}).json()
    assert sorted(n["row"] for n in body["neighbors"][0]) == list(range(12))


def test_409_until_an_index_is_ready_naming_index_id(client, settings, pca):
    model_id, ds, x = pca
    url = f"/v1/models/{model_id}/neighbors"
    r = client.post(url, json={"instances": x[:1].tolist()})
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "index_id"
    assert "no ready index" in r.json()["errors"][0]["message"]
    queued = client.post(f"/v1/models/{model_id}/indexes", json={"dataset_id": ds}).json()
    r = client.post(url, json={"instances": x[:1].tolist(), "index_id": queued["id"]})
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "index_id"
    assert "queued" in r.json()["detail"]
    run_job(queued["job_id"], settings=settings, worker="test")
    assert client.post(url, json={"instances": x[:1].tolist()}).status_code == 200


@pytest.mark.parametrize(("body", "field"), [
    ({"k": 0}, "k"), ({"k": 1001}, "k"), ({"k": "ten"}, "k"), ({"extra": 1}, "extra"),
    ({"instances": [[1.0, 2.0]]}, "instances"), ({"instances": []}, "instances"),
])
def test_bad_neighbours_requests_are_422_naming_the_field(client, settings, pca, body, field):
    model_id, ds, x = pca
    build(client, settings, model_id, ds)
    r = client.post(f"/v1/models/{model_id}/neighbors",
                    json={"instances": x[:1].tolist(), **body})
    assert r.status_code == 422, r.json()
    assert r.json()["errors"][0]["field"] == field


@pytest.mark.parametrize(("body", "field"), [
    ({"metric": "dot"}, "metric"), ({"params": {"m": 1000}}, "params.m"),
    ({"params": {"ef": 5}}, "params.ef"), ({"label_column": "nope"}, "label_column"),
])
def test_bad_index_requests_are_422_and_create_nothing(client, pca, body, field):
    model_id, ds, _ = pca
    r = client.post(f"/v1/models/{model_id}/indexes", json={"dataset_id": ds, **body})
    assert r.status_code == 422, r.json()
    assert r.json()["errors"][0]["field"] == field
    assert client.get(f"/v1/models/{model_id}/indexes").json()["total"] == 0
    assert client.get("/v1/jobs").json()["total"] == 1  # the PCA's own job only


def test_a_dataset_without_the_models_columns_is_422(client, pca):
    model_id, _, _ = pca
    other = upload(client, to_csv(blobs(20, d=2), ["a", "z"]))["body"]["id"]
    r = client.post(f"/v1/models/{model_id}/indexes", json={"dataset_id": other})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "dataset_id"
    assert "b, c, d" in r.json()["detail"]


def test_a_model_that_cannot_embed_is_422(client, settings):
    job = train(client, settings, "dbscan", {"eps": 3.0})
    ds = upload(client, to_csv(blobs(20)))["body"]["id"]
    r = client.post(f"/v1/models/{job['model_id']}/indexes", json={"dataset_id": ds})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "model_id"


def test_unknown_model_and_index_are_404(client, pca):
    model_id, ds, _ = pca
    assert client.post("/v1/models/mdl_nope/indexes", json={"dataset_id": ds}).status_code == 404
    assert client.get(f"/v1/models/{model_id}/indexes/idx_nope").status_code == 404
    r = client.post(f"/v1/models/{model_id}/neighbors",
                    json={"instances": [[0, 0, 0, 0]], "index_id": "idx_nope"})
    assert r.status_code == 404


def test_list_and_delete_an_index_removes_its_files(client, settings, pca):
    model_id, ds, x = pca
    index = build(client, settings, model_id, ds)
    listed = client.get(f"/v1/models/{model_id}/indexes").json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == index["id"]
    folder = settings.blob_dir / storage.index_key(model_id, index["id"])
    assert folder.is_dir()
    client.post(f"/v1/models/{model_id}/neighbors", json={"instances": x[:1].tolist()})
    assert client.delete(f"/v1/models/{model_id}/indexes/{index['id']}").status_code == 204
    assert client.get(f"/v1/models/{model_id}/indexes/{index['id']}").status_code == 404
    assert not folder.exists()
    r = client.post(f"/v1/models/{model_id}/neighbors", json={"instances": x[:1].tolist()})
    assert r.status_code == 409  # none left: not answered from the cache


def test_deleting_a_queued_index_cancels_its_job(client, pca):
    model_id, ds, _ = pca
    queued = client.post(f"/v1/models/{model_id}/indexes", json={"dataset_id": ds}).json()
    assert client.delete(f"/v1/models/{model_id}/indexes/{queued['id']}").status_code == 204
    assert client.get(f"/v1/jobs/{queued['job_id']}").json()["status"] == "cancelled"


def test_deleting_the_model_deletes_its_indexes(client, settings, pca):
    model_id, ds, _ = pca
    index = build(client, settings, model_id, ds)
    assert client.delete(f"/v1/models/{model_id}").status_code == 204
    assert not (settings.blob_dir / storage.model_indexes_key(model_id)).exists()
    assert client.get(f"/v1/models/{model_id}/indexes/{index['id']}").status_code == 404


def test_an_index_job_is_a_job_of_kind_index_reading_the_model(client, settings, pca):
    model_id, ds, _ = pca
    index = build(client, settings, model_id, ds)
    job = client.get(f"/v1/jobs/{index['job_id']}").json()
    assert job["kind"] == "index" and job["source_model_id"] == model_id
    assert job["dataset_id"] == ds and job["status"] == "succeeded"
    assert job["metrics"]["n_rows"] == 300 and job["model_id"] is None


def test_a_torch_model_indexes_in_chunks_by_cosine(client, settings, monkeypatch):
    """An autoencoder's codes, embedded by the worker 50 rows at a time, compared by angle."""
    monkeypatch.setattr(settings, "index_chunk_rows", 50)
    x = blobs(180, seed=4)
    job = train(client, settings, "autoencoder", {"epochs": 1, "batch_size": 32, "seed": 0},
                to_csv(x))
    assert job["status"] == "succeeded", job
    model_id = job["model_id"]
    ds = client.get(f"/v1/models/{model_id}").json()["dataset_id"]
    index = build(client, settings, model_id, ds, params=EXACT)
    assert index["metric"] == "cosine" and index["n_rows"] == 180
    queries = x[[1, 90]] + 0.02
    body = client.post(f"/v1/models/{model_id}/neighbors",
                       json={"instances": queries.tolist(), "k": 4}).json()
    ref = NearestNeighbors(n_neighbors=4, metric="cosine").fit(embeddings(client, model_id, x))
    distances, rows = ref.kneighbors(embeddings(client, model_id, queries))
    assert [[n["row"] for n in hits] for hits in body["neighbors"]] == rows.tolist()
    np.testing.assert_allclose([[n["distance"] for n in hits] for hits in body["neighbors"]],
                               distances, rtol=1e-3, atol=1e-5)


def test_a_cancel_while_embedding_stops_between_chunks_and_stores_nothing(
        client, settings, pca, monkeypatch):
    model_id, ds, _ = pca
    monkeypatch.setattr(settings, "index_chunk_rows", 50)
    queued = client.post(f"/v1/models/{model_id}/indexes", json={"dataset_id": ds}).json()
    added = []
    real_add = AnnIndex.add

    def add_then_cancel(self, x):
        real_add(self, x)
        added.append(len(x))
        if len(added) == 1:  # the user cancels while the first chunk is in
            assert client.post(f"/v1/jobs/{queued['job_id']}/cancel").status_code == 202
            time.sleep(1.5)  # the heartbeat (every 0.5 s at most) brings the flag back

    monkeypatch.setattr(AnnIndex, "add", add_then_cancel)
    run_job(queued["job_id"], settings=settings, worker="test")
    assert added == [50]  # 300 rows, 6 chunks: it stopped after the first
    index = client.get(f"/v1/models/{model_id}/indexes/{queued['id']}").json()
    assert index["status"] == "cancelled" and index["n_rows"] is None
    assert not (settings.blob_dir / storage.index_key(model_id, queued["id"])).exists()


def test_deleting_the_model_cancels_a_build_still_queued(client, pca):
    model_id, ds, _ = pca
    queued = client.post(f"/v1/models/{model_id}/indexes", json={"dataset_id": ds}).json()
    assert client.delete(f"/v1/models/{model_id}").status_code == 204
    assert client.get(f"/v1/jobs/{queued['job_id']}").json()["status"] == "cancelled"


def test_image_rows_answer_their_class_folder_as_label(client, settings):
    images, labels = digits()
    images, labels = images[:60], labels[:60]
    content = zip_bytes({f"{y}/{i:03d}.png": png(im) for i, (im, y) in
                         enumerate(zip(images, labels, strict=True))})
    ds = upload(client, content, filename="digits.zip")["body"]["id"]
    job = client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "autoencoder",
                                        "params": {"epochs": 1, "seed": 0}}).json()
    run_job(job["id"], settings=settings, worker="test")
    model_id = client.get(f"/v1/jobs/{job['id']}").json()["model_id"]
    index = build(client, settings, model_id, ds, params=EXACT)
    assert index["status"] == "succeeded" and index["label_column"] is None
    # The stored order of a ZIP is its own: ask for each image's row through the index.
    query = {"b64": base64.b64encode(png(images[7])).decode()}
    body = client.post(f"/v1/models/{model_id}/neighbors",
                       json={"instances": [query], "k": 3}).json()
    nearest = body["neighbors"][0][0]
    assert nearest["distance"] == pytest.approx(0, abs=1e-5)
    assert nearest["label"] == str(labels[7]) and "id" not in nearest
