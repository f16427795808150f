"""Contrastive pretraining on digits PNGs through the service: 5-NN accuracy of the embeddings.

The baseline printed beside it is 5-NN on the raw pixels, same folds, same process.
"""

from __future__ import annotations

import base64
import io
import os
import tempfile
import zipfile
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from bench._service import service, wait_job

EPOCHS = int(os.environ.get("BENCH_CONTRASTIVE_EPOCHS", "60"))


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((pixels * 255 / 16).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def digits_zip() -> tuple[bytes, list[bytes], np.ndarray]:
    """All 1,797 digits as PNGs in class folders, the PNGs, and their labels."""
    digits = load_digits()
    pngs = [_png(img) for img in digits.images]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, (png, label) in enumerate(zip(pngs, digits.target)):
            z.writestr(f"{label}/{i:04d}.png", png)
    return buf.getvalue(), pngs, digits.target


def run() -> dict:
    """Train contrastive, embed every image over HTTP, 5-fold 5-NN on the embeddings."""
    archive, pngs, labels = digits_zip()
    with tempfile.TemporaryDirectory() as tmp:
        svc = service(Path(tmp) / "data")
        try:
            http = httpx.Client(base_url=svc.base, timeout=600)
            ds = http.post("/v1/datasets", files={"file": ("digits.zip", archive)}).json()
            job = http.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "contrastive",
                                              "params": {"epochs": EPOCHS, "batch_size": 256}}).json()
            done = wait_job(http, job["id"], timeout=3600)
            assert done["status"] == "succeeded", done
            instances = [{"b64": base64.b64encode(p).decode()} for p in pngs]
            emb = np.asarray(http.post(f"/v1/models/{done['model_id']}/embed",
                                       json={"instances": instances}).json()["embeddings"])
        finally:
            svc.stop()
    knn = KNeighborsClassifier(n_neighbors=5)
    acc = cross_val_score(knn, emb, labels, cv=5).mean()
    raw = cross_val_score(knn, load_digits().data, labels, cv=5).mean()
    seconds = sum(h["seconds"] for h in done["history"])
    print(f"contrastive on digits PNGs ({EPOCHS} epochs, {seconds:.0f} s of training): 5-NN accuracy "
          f"{acc:.3f} (5-fold CV; goal >= 0.90); raw pixels {raw:.3f}; job's own knn_accuracy "
          f"{done['metrics'].get('knn_accuracy')}")
    return {"epochs": EPOCHS, "knn5_cv_accuracy": round(float(acc), 4),
            "raw_pixels_knn5": round(float(raw), 4), "train_seconds": round(seconds, 1),
            "goal": ">= 0.90"}


if __name__ == "__main__":
    run()
