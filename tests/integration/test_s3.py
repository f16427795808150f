"""The blob store on S3: a real S3-compatible server (moto in server mode) behind the real service.

Nothing here mocks the client: s3fs talks HTTP to moto's server on a loopback port, from the
test process and from the API and worker processes alike.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from app.config import Settings
from app.storage import S3BlobStore, StoreOwned, open_store
from tests.conftest import blobs, to_csv
from tests.integration.conftest import Service, free_port, make_run
from tests.integration.test_end_to_end import wait_job
from tests.integration.test_self_supervised import digits_zip

pytestmark = pytest.mark.integration
BUCKET, PREFIX = "pretrainer-test", "svc/blobs"
KEY, SECRET = "testing", "testing-secret"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, with an empty bucket."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY,
                     aws_secret_access_key=SECRET, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


def s3_settings(endpoint: str, data_dir: Path, prefix: str = PREFIX) -> Settings:
    return Settings(data_dir=data_dir, storage_url=f"s3://{BUCKET}/{prefix}",
                    s3_endpoint_url=endpoint, s3_access_key_id=KEY, s3_secret_access_key=SECRET,
                    s3_region="us-east-1")


@pytest.fixture
def store(s3_endpoint: str, tmp_path: Path) -> S3BlobStore:
    prefix = f"unit/{tmp_path.name}"
    st = open_store(s3_settings(s3_endpoint, tmp_path / "data", prefix))
    assert isinstance(st, S3BlobStore)
    return st


def test_publish_is_visible_whole_and_never_overwrites(store: S3BlobStore):
    with store.staging_dir() as folder:
        (folder / "config.json").write_text('{"a": 1}')
        (folder / "sub").mkdir()
        (folder / "sub" / "w.bin").write_bytes(b"\x00" * 10_000)
        store.publish(folder, "models/m1")
    assert store.exists("models/m1") and not store.exists("models/m2")
    local = store.path("models/m1")
    assert (local / "config.json").read_text() == '{"a": 1}'
    assert (local / "sub" / "w.bin").stat().st_size == 10_000
    with store.staging_dir() as folder:
        (folder / "config.json").write_text("other")
        with pytest.raises(FileExistsError):
            store.publish(folder, "models/m1")
    assert store.fs.cat_file(store.url("models/m1/config.json")) == b'{"a": 1}'
    with store.writer("datasets/d1/data.csv") as fh:
        fh.write(b"a,b\n1,2\n")
    with pytest.raises(FileExistsError), store.writer("datasets/d1/data.csv") as fh:
        fh.write(b"overwritten")
    assert store.path("datasets/d1/data.csv").read_bytes() == b"a,b\n1,2\n"
    with pytest.raises(ValueError), store.writer("../escape") as fh:
        fh.write(b"x")


def test_replace_refreshes_the_local_copy_and_delete_removes_everything(store: S3BlobStore):
    for content in (b"first", b"second"):
        staged = store.staging_file()
        staged.write_bytes(content)
        store.replace(staged, "jobs/j1/checkpoint.pt")
        assert store.path("jobs/j1/checkpoint.pt").read_bytes() == content
    store.delete("jobs/j1/checkpoint.pt")
    assert not store.exists("jobs/j1/checkpoint.pt")
    assert not store.path("jobs/j1/checkpoint.pt").exists()
    store.delete("jobs/never-there")  # missing keys are fine
    store.check()


def test_the_prefix_belongs_to_the_first_database_that_claims_it(store: S3BlobStore):
    assert store.read_owner() is None
    store.claim(database_id="db_first", database="sqlite:///first.db")
    store.claim(database_id="db_first", database="sqlite:///first.db")  # again: still its own
    with pytest.raises(StoreOwned) as refused:
        store.claim(database_id="db_second", database="postgresql://***@db/second")
    assert "db_first" in str(refused.value) and "db_second" in str(refused.value)
    assert f"s3://{store.prefix}" in str(refused.value)
    assert store.read_owner()["database_id"] == "db_first"


@pytest.fixture(scope="module")
def s3_service(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`make run` with its blob store on the S3 server."""
    yield from make_run(tmp_path_factory.mktemp("s3svc"),
                        PRETRAINER_STORAGE_URL=f"s3://{BUCKET}/{PREFIX}",
                        PRETRAINER_S3_ENDPOINT_URL=s3_endpoint, PRETRAINER_S3_ACCESS_KEY_ID=KEY,
                        PRETRAINER_S3_SECRET_ACCESS_KEY=SECRET, PRETRAINER_S3_REGION="us-east-1")


def finish(http, job_id: str) -> dict:
    return wait_job(http, job_id, {"succeeded", "failed", "cancelled"}, timeout=180)


def test_upload_train_predict_with_blobs_on_s3(s3_service: Service, s3_endpoint: str, tmp_path):
    http = s3_service.http
    assert http.get("/readyz").json()["checks"]["store"] == "ok"
    x = blobs()
    ds = http.post("/v1/datasets", files={"file": ("b.csv", to_csv(x))}).json()
    jobs = [http.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": algorithm,
                                         "params": params}).json()
            for algorithm, params in (("kmeans", {"n_clusters": 3, "random_state": 0}),
                                      ("autoencoder", {"epochs": 2, "latent_dim": 2, "seed": 0}))]
    # An image ZIP: the worker needs its whole dataset folder (the ZIP and the arrays beside it).
    images = http.post("/v1/datasets", files={"file": ("digits.zip", digits_zip(60))}).json()
    jobs.append(http.post("/v1/jobs", json={"dataset_id": images["id"], "algorithm": "autoencoder",
                                            "params": {"epochs": 1, "latent_dim": 4}}).json())
    done = [finish(http, j["id"]) for j in jobs]
    assert [j["status"] for j in done] == ["succeeded"] * 3, done

    # The bytes live in the bucket, not in the service's data dir.
    reader = open_store(s3_settings(s3_endpoint, tmp_path / "reader"))
    assert reader.exists(f"datasets/{ds['id']}/data.csv")
    assert reader.path(f"datasets/{ds['id']}/data.csv").read_bytes() == to_csv(x)
    assert reader.exists(f"datasets/{images['id']}/data.zip")
    for job in done:
        assert reader.exists(f"models/{job['model_id']}")
        assert not reader.exists(f"jobs/{job['id']}/checkpoint.pt")  # superseded by the model
    assert not (s3_service.data_dir / "blobs" / "datasets").exists()

    kmeans = done[0]["model_id"]
    # The job's defaults: standardize, then scikit-learn's KMeans with its n_init.
    assert done[0]["params"]["standardize"] is True
    ref = make_pipeline(StandardScaler(), KMeans(n_clusters=3, random_state=0,
                                                 n_init=done[0]["params"]["n_init"])).fit(x)
    pred = http.post(f"/v1/models/{kmeans}/predict", json={"instances": x[:25].tolist()}).json()
    assert pred["predictions"] == ref.predict(x[:25]).tolist()
    buf = io.BytesIO()
    np.save(buf, x[:5])
    emb = http.post(f"/v1/models/{done[1]['model_id']}/embed", content=buf.getvalue(),
                    headers={"content-type": "application/x-npy", "accept": "application/x-npy"})
    assert emb.status_code == 200 and np.load(io.BytesIO(emb.content)).shape == (5, 2)

    assert http.delete(f"/v1/models/{kmeans}").status_code == 204
    assert not reader.exists(f"models/{kmeans}")
    assert http.delete(f"/v1/datasets/{ds['id']}").status_code == 204
    assert not reader.exists(f"datasets/{ds['id']}")


def test_listing_a_prefix_downloads_nothing(store: S3BlobStore):
    with store.writer("datasets/d1/data.csv") as fh:
        fh.write(b"a,b\n1,2\n")
    assert store.children("datasets") == [("datasets/d1", 0.0)]
    assert store.children("models") == []
    assert not (store.root / "dirs").exists() and not (store.root / "files").exists()
