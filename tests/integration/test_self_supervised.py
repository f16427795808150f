"""Self-supervised models through the real worker: image ZIPs, events, embed/generate, cancel."""

from __future__ import annotations

import base64
import io
import time
import zipfile

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from tests.conftest import read_events, to_csv
from tests.integration.test_end_to_end import wait_job

pytestmark = pytest.mark.integration


def digits_png(i: int) -> bytes:
    digits = load_digits()
    img = Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8), mode="L")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def digits_zip(n: int = 400) -> bytes:
    digits = load_digits()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(n):
            z.writestr(f"{digits.target[i]}/{i}.png", digits_png(i))
    return buf.getvalue()


def test_contrastive_on_image_zip_with_events_and_b64_embed(embedded):
    http = embedded.http
    r = http.post("/v1/datasets", files={"file": ("digits.zip", digits_zip())})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["kind"] == "image" and ds["n_rows"] == 400 and ds["labelled"] is True
    assert len(ds["classes"]) == 10 and ds["image"]["height"] == 8
    r = http.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "contrastive",
                                    "params": {"epochs": 3, "batch_size": 64, "embedding_dim": 16}})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["queue"] == "gpu"
    events = read_events(http, job["id"], timeout=300)
    names = [e for e, _ in events]
    assert names.count("epoch") == 3 and names[-1] == "end"
    assert [d["epoch"] for e, d in events if e == "epoch"] == [1, 2, 3]
    done = events[-1][1]
    assert done["status"] == "succeeded", done
    assert len(done["history"]) == 3 and {"loss", "seconds"} <= set(done["history"][0])
    assert 0 <= done["metrics"]["knn_accuracy"] <= 1
    assert "linear_probe_accuracy" in done["metrics"]
    mid = done["model_id"]
    b64 = [{"b64": base64.b64encode(digits_png(i)).decode()} for i in range(5)]
    emb = http.post(f"/v1/models/{mid}/embed", json={"instances": b64})
    assert emb.status_code == 200, emb.text
    assert np.asarray(emb.json()["embeddings"]).shape == (5, 16)
    files = [("files", (f"{i}.png", digits_png(i), "image/png")) for i in range(5)]
    multi = http.post(f"/v1/models/{mid}/embed", files=files).json()
    np.testing.assert_allclose(multi["embeddings"], emb.json()["embeddings"], rtol=1e-5)
    # Another size and mode is converted and resized as at training (8x8 grayscale here).
    big = Image.fromarray(np.kron(load_digits().images[0], np.ones((2, 2))).astype(np.uint8) * 15)
    buf = io.BytesIO()
    big.convert("RGB").save(buf, format="PNG")
    other = http.post(f"/v1/models/{mid}/embed",
                      json={"instances": [{"b64": base64.b64encode(buf.getvalue()).decode()}]})
    assert other.status_code == 200 and np.asarray(other.json()["embeddings"]).shape == (1, 16)
    bad = http.post(f"/v1/models/{mid}/embed", json={"instances": [b64[0], {"b64": "bm90IGFuIGltYWdl"}]})
    assert bad.status_code == 422 and "instances[1]" in bad.text
    assert http.post(f"/v1/models/{mid}/predict", json={"instances": b64}).status_code == 422


def test_vae_on_rows_generates_and_predicts(embedded):
    http = embedded.http
    digits = load_digits()
    x = np.column_stack([digits.data[:300], digits.target[:300]])
    names = [f"p{i}" for i in range(64)] + ["label"]
    ds = http.post("/v1/datasets", files={"file": ("d.csv", to_csv(x, names))}).json()
    r = http.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "vae", "target": "label",
                                    "params": {"epochs": 2, "latent_dim": 4}})
    assert r.status_code == 202, r.text
    job = wait_job(http, r.json()["id"], {"succeeded", "failed", "cancelled"}, timeout=180)
    assert job["status"] == "succeeded", job
    assert job["features"] == names[:-1] and "knn_accuracy" in job["metrics"]
    mid = job["model_id"]
    one = http.post(f"/v1/models/{mid}/generate", json={"n": 3, "seed": 7}).json()["samples"]
    two = http.post(f"/v1/models/{mid}/generate", json={"n": 3, "seed": 7}).json()["samples"]
    assert one == two and len(one) == 3 and len(one[0]) == 64
    pred = http.post(f"/v1/models/{mid}/predict", json={"instances": digits.data[:4].tolist()}).json()
    assert len(pred["predictions"]) == 4 and len(pred["negative_elbo"]) == 4


def test_gan_and_autoencoder_on_images(embedded):
    http = embedded.http
    ds = http.post("/v1/datasets", files={"file": ("digits.zip", digits_zip(200))}).json()
    ids = {}
    for algo in ("gan", "autoencoder"):
        r = http.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": algo,
                                        "params": {"epochs": 2, "batch_size": 64}})
        assert r.status_code == 202, r.text
        ids[algo] = r.json()["id"]
    for algo, job_id in ids.items():
        job = wait_job(http, job_id, {"succeeded", "failed", "cancelled"}, timeout=180)
        assert job["status"] == "succeeded", job
        ids[algo] = job
    gan = ids["gan"]
    assert {"d_loss", "g_loss"} <= set(gan["history"][0])
    samples = http.post(f"/v1/models/{gan['model_id']}/generate", json={"n": 4, "seed": 3}).json()["samples"]
    assert len(samples) == 4
    for s in samples:
        img = Image.open(io.BytesIO(base64.b64decode(s["b64"])))
        assert img.size == (8, 8)
    ae = ids["autoencoder"]
    b64 = [{"b64": base64.b64encode(digits_png(i)).decode()} for i in range(3)]
    out = http.post(f"/v1/models/{ae['model_id']}/predict", json={"instances": b64}).json()
    assert np.asarray(out["predictions"]).shape == (3, 8, 8, 1)
    assert len(out["reconstruction_error"]) == 3 and "val_reconstruction_error" in ae["metrics"]


def test_cancel_a_running_deep_job_within_seconds(embedded):
    http = embedded.http
    rows = np.random.default_rng(0).normal(size=(20000, 32))
    ds = http.post("/v1/datasets", files={"file": ("r.csv", to_csv(rows))}).json()
    job = http.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "autoencoder",
                                      "params": {"epochs": 500, "batch_size": 32}}).json()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = http.get(f"/v1/jobs/{job['id']}").json()
        if state["status"] == "running" and state["history"]:
            break
        time.sleep(0.2)
    assert state["status"] == "running", state
    # A checkpoint (weights, optimizer, epoch, RNG) is on disk after the first epoch.
    checkpoint = embedded.data_dir / "blobs" / "jobs" / job["id"] / "checkpoint.pt"
    assert checkpoint.is_file()
    t0 = time.monotonic()
    http.post(f"/v1/jobs/{job['id']}/cancel")
    done = wait_job(http, job["id"], {"succeeded", "failed", "cancelled"}, timeout=60)
    assert done["status"] == "cancelled", done
    assert time.monotonic() - t0 < 10
    assert not checkpoint.exists()  # a cancelled job will not resume: its checkpoint goes
