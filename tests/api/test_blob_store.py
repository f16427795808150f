"""The blob store belongs to one database: a second wiring is refused and its sweep removes
nothing of the owner's; staging that is in use is never swept; a dataset or model whose files
are gone answers 410 naming them, never 500."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from app.config import Settings
from app.db.migrate import upgrade
from app.main import create_app
from app.reaper import sweep_orphans
from app.runner import run_job
from app.storage import OWNER_KEY, StoreOwned, open_store
from tests.conftest import blobs, to_csv, upload
from tests.integration.conftest import fresh_postgres

ROOT = Path(__file__).resolve().parents[2]


def _second_wiring(tmp_path: Path, first: Settings, database_url: str = "",
                   **extra: object) -> Settings:
    """Another database (its own SQLite file, or PostgreSQL) pointed at the first one's store."""
    s = Settings(data_dir=tmp_path / "second", storage_url=f"file://{first.blob_dir}",
                 database_url=database_url, **extra)
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    return s


@pytest.fixture(params=["sqlite", "postgresql"])
def second_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """The second wiring's database URL: empty (SQLite in its data dir) or a fresh PostgreSQL
    one, the README's production variables on the same ./data (skipped when PostgreSQL is not
    there)."""
    if request.param == "sqlite":
        yield ""
    else:
        yield from fresh_postgres("pretrainer_owner")


def _owner(settings: Settings) -> dict:
    return json.loads((settings.blob_dir / OWNER_KEY).read_text())


def test_a_second_wiring_is_refused_and_its_sweep_removes_nothing(client, settings, tmp_path,
                                                                  second_database):
    ds = upload(client, to_csv(blobs()))["body"]
    first_id = _owner(settings)["database_id"]
    second = _second_wiring(tmp_path, settings, second_database, orphan_grace_seconds=0)
    with pytest.raises(StoreOwned) as refused, TestClient(create_app(second)):
        pass
    message = str(refused.value)
    assert first_id in message and str(settings.blob_dir) in message
    # Both databases are named, the second by its URL (never with a password).
    assert str(settings.data_dir / "pretrainer.db") in message
    second_url = make_url(second.resolved_database_url)
    assert second_url.render_as_string(hide_password=True) in message
    if second_url.password:
        assert second_url.password not in message
    # The CLI says it in one line and exits 2 before serving.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PRETRAINER_DATA_DIR": str(second.data_dir),
           "PRETRAINER_STORAGE_URL": second.storage_url, "PRETRAINER_PORT": "1",
           "PRETRAINER_DATABASE_URL": second_database}
    run = subprocess.run([sys.executable, "-m", "app.cli", "api"], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 2, run.stderr
    refusal = [line for line in (run.stdout + run.stderr).splitlines() if first_id in line]
    assert len(refusal) == 1 and "api.refused" in refusal[0], run.stderr
    # Both sweeps with zero grace: the second removes nothing, the first nothing it knows.
    assert sweep_orphans(second, open_store(second)) == []
    first = settings.model_copy(update={"orphan_grace_seconds": 0})
    assert sweep_orphans(first, open_store(first)) == []
    r = client.get(f"/v1/datasets/{ds['id']}/download")
    assert r.status_code == 200 and r.content == to_csv(blobs())
    assert _owner(settings)["database_id"] == first_id  # the refused wiring wrote nothing


def test_an_unmarked_store_full_of_unknown_blobs_is_not_claimed(client, settings, tmp_path):
    upload(client, to_csv(blobs()))
    (settings.blob_dir / OWNER_KEY).unlink()  # a store filled before owners were recorded
    second = _second_wiring(tmp_path, settings, orphan_grace_seconds=0)
    assert sweep_orphans(second, open_store(second)) == []
    assert len(list((settings.blob_dir / "datasets").iterdir())) == 1
    with pytest.raises(StoreOwned, match="does not know"), TestClient(create_app(second)):
        pass


def test_staging_in_use_is_never_swept_but_an_abandoned_one_is(settings):
    store = open_store(settings)
    zero = settings.model_copy(update={"orphan_grace_seconds": 0})
    hour_ago = time.time() - 3600
    abandoned = store.tmp / "abandoned"
    abandoned.mkdir()
    (abandoned / "data.upload").write_bytes(b"a,b\n")
    for path in (abandoned / "data.upload", abandoned):
        os.utime(path, (hour_ago, hour_ago))
    with store.staging_dir() as leased:
        (leased / "data.upload").write_bytes(b"a,b\n1,2\n")
        os.utime(leased, (hour_ago, hour_ago))
        removed = sweep_orphans(zero, store)
        assert leased.is_dir() and (leased / "data.upload").is_file()
    assert removed == [".tmp/abandoned"] and not abandoned.exists()


def test_a_staging_folder_is_judged_by_its_files_not_its_own_timestamp(settings):
    store = open_store(settings)
    minute = settings.model_copy(update={"orphan_grace_seconds": 60})
    folder = store.tmp / "streaming"  # not leased (another host's upload, say): activity decides
    folder.mkdir()
    (folder / "data.upload").write_bytes(b"a,b\n")  # written just now
    hour_ago = time.time() - 3600
    os.utime(folder, (hour_ago, hour_ago))
    assert sweep_orphans(minute, store) == []
    os.utime(folder / "data.upload", (hour_ago, hour_ago))
    assert sweep_orphans(minute, store) == [".tmp/streaming"]


def _assert_gone(r, field: str, key: str) -> None:
    assert r.status_code == 410, r.text
    body = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert body["title"] == "Gone" and key in body["detail"]
    assert body["errors"][0]["field"] == field


def test_missing_dataset_files_answer_410_on_each_route(client, settings):
    ds = upload(client, to_csv(blobs()))["body"]
    key = f"datasets/{ds['id']}"
    shutil.rmtree(settings.blob_dir / key)  # removed by hand
    for path in (f"/v1/datasets/{ds['id']}/download", f"/v1/datasets/{ds['id']}/export.csv"):
        _assert_gone(client.get(path), "dataset_id", key)
    job = client.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "kmeans",
                                        "params": {"n_clusters": 3}})
    _assert_gone(job, "dataset_id", key)
    assert client.get("/v1/jobs").json()["total"] == 0  # nothing was queued
    assert client.get(f"/v1/datasets/{ds['id']}").status_code == 200  # the record is kept


def test_missing_model_files_answer_410_on_each_route(client, settings):
    ds = upload(client, to_csv(blobs(n=120)))["body"]
    job = client.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "vae", "params": {
        "epochs": 1, "hidden_dims": [8], "latent_dim": 2, "device": "cpu"}}).json()
    run_job(job["id"], settings=settings, worker="test")
    model_id = client.get(f"/v1/jobs/{job['id']}").json()["model_id"]
    assert model_id, client.get(f"/v1/jobs/{job['id']}").json()
    key = f"models/{model_id}"
    shutil.rmtree(settings.blob_dir / key)  # a lost volume, before the model was ever loaded
    instances = {"instances": blobs(n=3).tolist()}
    for method, path, body in (("POST", "predict", instances), ("POST", "embed", instances),
                               ("POST", "generate", {"n": 2}),
                               ("GET", "plots/embedding.png", None)):
        _assert_gone(client.request(method, f"/v1/models/{model_id}/{path}", json=body),
                     "model_id", key)
    shutil.rmtree(settings.blob_dir / "datasets" / ds["id"])
    _assert_gone(client.get(f"/v1/models/{model_id}/plots/embedding.png"), "dataset_id",
                 f"datasets/{ds['id']}")
