"""POST/GET /v1/jobs validation and cancel, with no worker: jobs stay queued."""

from __future__ import annotations

from tests.conftest import upload


def _ds(client, content: bytes) -> str:
    return upload(client, content)["body"]["id"]


def _job(client, **body):
    return client.post("/v1/jobs", json=body)


def test_create_job_is_202_queued_and_listed(client, blobs_csv):
    ds = _ds(client, blobs_csv)
    r = _job(client, dataset_id=ds, algorithm="kmeans", params={"n_clusters": 3}, name="first")
    assert r.status_code == 202, r.json()
    job = r.json()
    assert job["status"] == "queued" and job["progress"] == 0 and job["name"] == "first"
    assert job["params"]["n_clusters"] == 3 and "random_state" in job["params"]  # defaults filled in
    assert job["features"] == ["a", "b", "c", "d"] and job["queue"] == "cpu"
    assert job["model_id"] is None and job["error"] is None and job["started_at"] is None
    assert client.get(f"/v1/jobs/{job['id']}").json()["id"] == job["id"]
    assert [j["id"] for j in client.get("/v1/jobs").json()["items"]] == [job["id"]]
    assert client.get("/v1/jobs", params={"status": "running"}).json()["total"] == 0


def test_invalid_params_are_422_naming_the_field(client, blobs_csv):
    ds = _ds(client, blobs_csv)
    r = _job(client, dataset_id=ds, algorithm="kmeans", params={"n_clusters": 0})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "params.n_clusters"
    r = _job(client, dataset_id=ds, algorithm="kmeans", params={"n_clusterz": 3})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "params.n_clusterz"
    assert client.get("/v1/jobs").json()["total"] == 0


def test_unknown_algorithm_lists_the_available_ones(client, blobs_csv):
    r = _job(client, dataset_id=_ds(client, blobs_csv), algorithm="kmeanz")
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "algorithm" and "kmeans" in r.json()["detail"]


def test_unknown_dataset_is_422_on_dataset_id(client):
    r = _job(client, dataset_id="ds_missing", algorithm="kmeans")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "dataset_id"


def test_string_feature_is_422_naming_the_column(client):
    ds = _ds(client, b"x,y,label\n1,2,a\n3,4,b\n5,6,c\n")
    r = _job(client, dataset_id=ds, algorithm="kmeans", params={"n_clusters": 2},
             features=["x", "label"])
    assert r.status_code == 422, r.json()
    assert "label" in r.json()["detail"]
    # Without `features`, the numeric columns are used, but for "y", named like a label.
    ok = _job(client, dataset_id=ds, algorithm="kmeans", params={"n_clusters": 2})
    assert ok.status_code == 202 and ok.json()["features"] == ["x"]
    assert ok.json()["metrics"] == {"left_out_columns": ["y"]}


def test_unknown_feature_is_422(client, blobs_csv):
    r = _job(client, dataset_id=_ds(client, blobs_csv), algorithm="pca", features=["a", "zz"])
    assert r.status_code == 422 and "zz" in r.json()["detail"]


def test_params_that_do_not_fit_the_dataset_are_422(client):
    ds = _ds(client, b"a,b\n1,2\n3,4\n5,6\n")
    r = _job(client, dataset_id=ds, algorithm="kmeans", params={"n_clusters": 5})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "params.n_clusters"
    r = _job(client, dataset_id=ds, algorithm="tsne", params={"perplexity": 30})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "params.perplexity"


def test_extra_body_field_is_422(client, blobs_csv):
    r = client.post("/v1/jobs", json={"dataset_id": _ds(client, blobs_csv), "algorithm": "kmeans",
                                      "paramz": {}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "paramz"


def test_malformed_json_is_422_problem(client):
    r = client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")


def test_cancel_a_queued_job_ends_it_cancelled(client, blobs_csv):
    job = _job(client, dataset_id=_ds(client, blobs_csv), algorithm="kmeans",
               params={"n_clusters": 3}).json()
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202
    done = r.json()
    assert done["status"] == "cancelled" and done["finished_at"] is not None
    # Cancelling again is harmless and changes nothing.
    again = client.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert again["status"] == "cancelled" and again["finished_at"] == done["finished_at"]


def test_unknown_job_is_404(client):
    assert client.get("/v1/jobs/job_nope").status_code == 404
    assert client.post("/v1/jobs/job_nope/cancel").status_code == 404


def test_devices_past_every_worker_are_422_and_change_nothing(client, blobs_csv):
    ds = _ds(client, blobs_csv)
    # The test settings' default: a CPU worker runs one job on at most 2 processes.
    for devices in (3, 0, "some"):
        r = _job(client, dataset_id=ds, algorithm="autoencoder", params={"devices": devices})
        assert r.status_code == 422, (devices, r.json())
        assert r.json()["errors"][0]["field"] == "params.devices"
    assert client.get("/v1/jobs").json()["total"] == 0
    for devices in (2, "all"):
        r = _job(client, dataset_id=ds, algorithm="autoencoder", params={"devices": devices})
        assert r.status_code == 202 and r.json()["params"]["devices"] == devices
