"""Pre-train, then transfer, through the service: what pretraining buys on 10 labels per class.

Contrastive pretraining on the digit PNGs without their labels, then `transfer` on a labelled
ZIP of 10 digits per class: fine-tuned from the pretrained encoder, a linear probe on it, and
the same architecture from random initialization (pretrained=false), and a job given only the
backbone (every other param chosen by the data). Each model predicts the
other 1,697 digits over HTTP. The bare baseline beside them: logistic regression on the raw
pixels of the same 100 labelled digits, in this process.
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
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from bench._service import service, wait_job
from bench.contrastive_digits import _png

PRETRAIN_EPOCHS = int(os.environ.get("BENCH_TRANSFER_PRETRAIN_EPOCHS", "40"))
PER_CLASS = 10


def _zip(pngs: list[bytes], labels: np.ndarray | None, indices: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in indices:
            folder = f"{labels[i]}/" if labels is not None else ""
            z.writestr(f"{folder}{i:04d}.png", pngs[i])
    return buf.getvalue()


def _accuracy(http: httpx.Client, model_id: str, pngs: list[bytes], labels: np.ndarray,
              test: np.ndarray) -> float:
    instances = [{"b64": base64.b64encode(pngs[i]).decode()} for i in test]
    pred = http.post(f"/v1/models/{model_id}/predict", json={"instances": instances}).json()
    return float(np.mean(np.array(pred["predictions"]).astype(int) == labels[test]))


def run() -> dict:
    """Pretrain, transfer three ways, score each on the digits no job saw labelled."""
    digits = load_digits()
    labels = digits.target
    pngs = [_png(img) for img in digits.images]
    few = np.concatenate([np.where(labels == k)[0][:PER_CLASS] for k in range(10)])
    test = np.setdiff1d(np.arange(len(labels)), few)
    variants = {"fine_tuned": {"pretrained": True, "freeze": "none"},
                "linear_probe": {"pretrained": True, "freeze": "backbone", "learning_rate": 0.01},
                "from_scratch": {"pretrained": False, "freeze": "none"},
                "defaults": {}}
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        svc = service(Path(tmp) / "data")
        try:
            http = httpx.Client(base_url=svc.base, timeout=600)
            unlabelled = http.post("/v1/datasets", files={"file": (
                "unlabelled.zip", _zip(pngs, None, np.arange(len(labels))))}).json()
            pre = http.post("/v1/jobs", json={"dataset_id": unlabelled["id"], "algorithm":
                                              "contrastive", "params": {
                                                  "epochs": PRETRAIN_EPOCHS, "batch_size": 256}}).json()
            pre = wait_job(http, pre["id"], timeout=3600)
            assert pre["status"] == "succeeded", pre
            labelled = http.post("/v1/datasets", files={"file": (
                "few.zip", _zip(pngs, labels, few))}).json()
            for name, extra in variants.items():
                params = {"backbone": f"model:{pre['model_id']}", "epochs": 60, "batch_size": 32,
                          "learning_rate": 0.003, "backbone_lr_mult": 0.3, "validation_fraction": 0,
                          "rotation_range": 8, "width_shift_range": 0.1, "height_shift_range": 0.1,
                          **extra}
                if name == "defaults":  # what a user who gives only the backbone gets
                    params = {"backbone": params["backbone"]}
                job = http.post("/v1/jobs", json={"dataset_id": labelled["id"],
                                                  "algorithm": "transfer", "params": params}).json()
                job = wait_job(http, job["id"], timeout=3600)
                assert job["status"] == "succeeded", job
                results[name] = _accuracy(http, job["model_id"], pngs, labels, test)
        finally:
            svc.stop()
    bare = LogisticRegression(max_iter=2000).fit(digits.data[few], labels[few])
    raw = float(bare.score(digits.data[test], labels[test]))
    ratio = results["fine_tuned"] / results["from_scratch"]
    print(f"transfer on {PER_CLASS} labelled digits per class, scored on {len(test)} others: "
          f"fine-tuned from contrastive {results['fine_tuned']:.3f}, linear probe "
          f"{results['linear_probe']:.3f}, same network from scratch {results['from_scratch']:.3f} "
          f"(pretrained / scratch = {ratio:.2f}x); only the backbone given "
          f"{results['defaults']:.3f}; "
          f"bare logistic regression on raw pixels {raw:.3f}")
    return {**{k: round(v, 4) for k, v in results.items()}, "raw_pixels_logreg": round(raw, 4),
            "pretrained_over_scratch": round(ratio, 3), "pretrain_epochs": PRETRAIN_EPOCHS,
            "test_rows": len(test)}


if __name__ == "__main__":
    run()
