"""Data safety: downloads, escaped CSV exports, no unpickling of anything a user sent, the sweep."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest

from app import reaper
from app.config import Settings
from app.db.migrate import upgrade
from app.reaper import sweep_orphans
from app.storage import OWNER_KEY, BlobStore, open_store
from tests.conftest import blobs, run_in_process, to_csv, upload
from tests.data.test_images import png, zip_bytes


class Planted:
    """Unpickling this creates a file: proof that bytes were executed."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_pickle(marker: Path) -> bytes:
    Planted.marker = str(marker)
    return pickle.dumps(Planted())


def train(client, settings, algorithm: str, params: dict, content: bytes) -> dict:
    ds = upload(client, content)["body"]["id"]
    return run_in_process(client, settings, {"dataset_id": ds, "algorithm": algorithm,
                                             "params": params})


def test_download_is_the_uploaded_file_byte_for_byte(client, blobs_csv):
    ds = upload(client, blobs_csv, "b.csv")["body"]
    r = client.get(f"/v1/datasets/{ds['id']}/download")
    assert r.status_code == 200 and r.content == blobs_csv
    assert hashlib.sha256(r.content).hexdigest() == ds["sha256"]
    assert f'filename="{ds["id"]}.csv"' in r.headers["content-disposition"]


FORMULAS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\tx", "plain"]


def test_csv_export_escapes_cells_a_spreadsheet_would_run(client):
    lines = ["name,x,note"] + [f'"{f.replace(chr(34), chr(34) * 2)}",{-i - 0.5},-{i}'
                               for i, f in enumerate(FORMULAS)]
    ds = upload(client, ("\n".join(lines) + "\n").encode(), "f.csv")["body"]
    assert ds["n_rows"] == len(FORMULAS), ds
    r = client.get(f"/v1/datasets/{ds['id']}/export.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    import csv

    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["name", "x", "note"]
    for row, formula in zip(rows[1:], FORMULAS, strict=True):
        expected = formula if formula == "plain" else "'" + formula
        assert row[0] == expected, row
        assert float(row[1]) < 0 and not row[1].startswith("'")  # numbers stay numbers
        assert row[2].startswith("-") and int(row[2]) <= 0


def test_csv_export_of_jsonl_escapes_too_and_images_are_422(client):
    body = "\n".join(json.dumps({"t": f, "v": i}) for i, f in enumerate(FORMULAS)) + "\n"
    ds = upload(client, body.encode(), "f.jsonl")["body"]
    import csv

    rows = list(csv.reader(io.StringIO(client.get(f"/v1/datasets/{ds['id']}/export.csv").text)))
    assert [r[0] for r in rows[1:]] == [f if f == "plain" else "'" + f for f in FORMULAS]
    assert [r[1] for r in rows[1:]] == [str(i) for i in range(len(FORMULAS))]
    zipped = upload(client, zip_bytes({"a.png": png(np.zeros((8, 8), np.uint8))}), "i.zip")
    r = client.get(f"/v1/datasets/{zipped['body']['id']}/export.csv")
    assert r.status_code == 422 and "download" in r.json()["detail"]


@pytest.mark.parametrize("name", ["evil.pkl", "data.csv", "data.npy", "data.jsonl",
                                  "data.parquet", "data.zip", "noext"])
def test_a_pickle_uploaded_as_a_dataset_is_refused_and_never_runs(client, settings, tmp_path, name):
    marker = tmp_path / "pwned"
    r = upload(client, evil_pickle(marker), name)
    assert 400 <= r["status"] < 500, r
    assert not marker.exists()
    assert client.get("/v1/datasets").json()["total"] == 0


def test_an_object_npy_holding_a_pickle_is_refused_and_never_runs(client, tmp_path):
    marker = tmp_path / "pwned"
    Planted.marker = str(marker)
    buf = io.BytesIO()
    np.save(buf, np.array([Planted(), 1], dtype=object), allow_pickle=True)
    r = upload(client, buf.getvalue(), "data.npy")
    assert r["status"] == 422 and not marker.exists()


def test_a_pickle_planted_as_a_model_artifact_is_refused_and_never_runs(client, settings, tmp_path):
    job = train(client, settings, "kmeans", {"n_clusters": 3, "standardize": True}, to_csv(blobs()))
    folder = settings.blob_dir / "models" / job["model_id"]
    marker = tmp_path / "pwned"
    for part in folder.iterdir():  # every stored part, whatever its format, becomes a pickle
        if part.suffix in (".skops", ".npy"):
            part.write_bytes(evil_pickle(marker))
    r = client.post(f"/v1/models/{job['model_id']}/predict", json={"instances": [[0, 0, 0, 0]]})
    assert r.status_code == 500 and r.json()["title"] == "Model artifact refused"
    assert not marker.exists()


def test_a_skops_file_naming_an_untrusted_type_is_refused(tmp_path):
    import skops.io

    from app.ml.artifacts import UnsafeArtifact, load_estimator

    path = tmp_path / "x.skops"
    skops.io.dump({"f": Path("/etc/passwd")}, path)  # pathlib is not on the allow-list
    with pytest.raises(UnsafeArtifact, match="not allow-listed"):
        load_estimator(path)


def test_torch_weights_and_checkpoints_never_unpickle(client, settings, tmp_path):
    from app.ml.deep.runtime import load_checkpoint

    marker = tmp_path / "pwned"
    with pytest.raises(pickle.UnpicklingError):  # torch's weights-only unpickler refuses it
        load_checkpoint(_write(tmp_path / "checkpoint.pt", evil_pickle(marker)))
    import torch

    buf = io.BytesIO()
    torch.save({"x": Planted()}, buf)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(_write(tmp_path / "c2.pt", buf.getvalue()))
    assert not marker.exists()
    rows = np.random.default_rng(0).normal(size=(64, 4))
    job = train(client, settings, "autoencoder", {"epochs": 1, "batch_size": 32}, to_csv(rows))
    weights = settings.blob_dir / "models" / job["model_id"] / "weights.safetensors"
    weights.write_bytes(evil_pickle(marker))
    r = client.post(f"/v1/models/{job['model_id']}/embed", json={"instances": rows[:2].tolist()})
    assert r.status_code == 500 and r.json()["title"] == "Model artifact refused"
    assert not marker.exists()


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_deleting_a_model_removes_its_files(client, settings):
    job = train(client, settings, "kmeans", {"n_clusters": 3}, to_csv(blobs()))
    folder = settings.blob_dir / "models" / job["model_id"]
    assert folder.is_dir()
    assert client.delete(f"/v1/models/{job['model_id']}").status_code == 204
    assert not folder.exists()
    assert client.get(f"/v1/models/{job['model_id']}").status_code == 404


def test_an_upload_refused_midway_leaves_nothing_behind(tmp_path):
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.db.migrate import upgrade
    from app.main import create_app

    s = Settings(data_dir=tmp_path / "d", max_upload_bytes=5000)
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    content = to_csv(blobs(2000))
    with TestClient(create_app(s)) as c:

        def chunks():  # no Content-Length: the bound is found while streaming
            boundary = b"--xyz\r\n"
            yield (boundary + b'Content-Disposition: form-data; name="file"; '
                   b'filename="a.csv"\r\n\r\n')
            for i in range(0, len(content), 1000):
                yield content[i:i + 1000]
            yield b"\r\n--xyz--\r\n"

        r = c.post("/v1/datasets", content=chunks(),
                   headers={"content-type": "multipart/form-data; boundary=xyz"})
        assert r.status_code == 413 and "PRETRAINER_MAX_UPLOAD_BYTES" in r.json()["detail"]
        assert c.get("/v1/datasets").json()["total"] == 0
    assert [p for p in s.blob_dir.rglob("*") if p.is_file() and p.name != OWNER_KEY] == []


def test_the_sweep_removes_old_orphans_and_nothing_alive(client, settings, blobs_csv):
    store = settings.blob_dir
    live = upload(client, blobs_csv)["body"]["id"]
    queued = client.post("/v1/jobs", json={"dataset_id": live, "algorithm": "kmeans"}).json()["id"]
    ended = client.post("/v1/jobs", json={"dataset_id": live, "algorithm": "kmeans"}).json()["id"]
    client.post(f"/v1/jobs/{ended}/cancel")
    planted = {
        "datasets/ds_orphan/data.csv": True, "models/mdl_orphan/meta.json": True,
        f"jobs/{ended}/checkpoint.pt": True, "jobs/job_gone/checkpoint.pt": True,
        ".tmp/half-upload": True,
        f"jobs/{queued}/checkpoint.pt": False,  # a queued job resumes from it
    }
    for key in planted:
        (store / key).parent.mkdir(parents=True, exist_ok=True)
        (store / key).write_bytes(b"x")
    old = time.time() - 7200
    for key in planted:  # an entry's age is its newest file's: both are old
        top = store / "/".join(key.split("/")[:2])
        for path in (store / key, top):
            os.utime(path, (old, old))
    os.utime(store / "datasets" / live, (old, old))  # old, but its row exists
    (store / ".tmp" / "young").write_bytes(b"still uploading")
    removed = sweep_orphans(settings.model_copy(update={"orphan_grace_seconds": 3600}),
                            BlobStore(store))
    expected = {"/".join(k.split("/")[:2]) for k, orphan in planted.items() if orphan}
    assert set(removed) == expected
    for key, orphan in planted.items():
        assert (store / key).exists() is not orphan, key
    assert (store / "datasets" / live).is_dir() and (store / ".tmp" / "young").exists()
    assert client.get(f"/v1/datasets/{live}/download").content == blobs_csv


def test_the_running_sweep_cleans_the_store_the_app_writes_to(tmp_path):
    # PRETRAINER_STORAGE_URL=file:///elsewhere: the sweep must look there, not in data/blobs.
    elsewhere = tmp_path / "elsewhere"
    settings = Settings(data_dir=tmp_path / "data", storage_url=f"file://{elsewhere}",
                        reaper_seconds=0, orphan_sweep_seconds=0.05, orphan_grace_seconds=0)
    settings.data_dir.mkdir()
    upgrade(settings.resolved_database_url)
    (elsewhere / ".tmp").mkdir(parents=True)
    (elsewhere / ".tmp" / "half-upload").write_bytes(b"x")
    stop = reaper.start(settings, open_store(settings))
    try:
        deadline = time.monotonic() + 10
        while (elsewhere / ".tmp" / "half-upload").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
    assert not (elsewhere / ".tmp" / "half-upload").exists()
