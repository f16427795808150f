"""The image VAE through the service: do its samples look like digits, does its code carry them.

A VAE is trained on the 1,797 digit PNGs (with their class folders, so the job reports its
linear probe with the raw-pixel and PCA yardsticks), then 500 samples are drawn over HTTP. A
digit classifier (an MLP) trained on real digits scores them: its mean top-class confidence on
the samples against the same figure on held-out real digits (the bare baseline, this process).
The probe is set against PCA at the same width. The same run with the unit-variance Gaussian
decoder and no warm-up (the likelihood of earlier releases) is printed beside it.
"""

from __future__ import annotations

import base64
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

from bench._service import service, wait_job
from bench.contrastive_digits import digits_zip

EPOCHS = int(os.environ.get("BENCH_VAE_EPOCHS", "100"))
SAMPLES = 500
BEFORE = {"likelihood": "gaussian", "kl_warmup_epochs": 0}


def _classifier() -> tuple[MLPClassifier, float]:
    """An MLP on real digits ([0, 1] pixels as the PNGs hold them) and its mean confidence on
    held-out real digits."""
    digits = load_digits()
    pixels = (digits.data * 255 / 16).astype(np.uint8) / 255.0
    a, b, ya, _ = train_test_split(pixels, digits.target, test_size=0.25, random_state=0,
                                    stratify=digits.target)
    clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=1000, random_state=0).fit(a, ya)
    return clf, float(clf.predict_proba(b).max(axis=1).mean())


def _train(http: httpx.Client, dataset_id: str, params: dict[str, Any]) -> dict[str, Any]:
    job = http.post("/v1/jobs", json={"dataset_id": dataset_id, "algorithm": "vae",
                                      "params": {"epochs": EPOCHS, **params}}).json()
    done = wait_job(http, job["id"], timeout=3600)
    assert done["status"] == "succeeded", done
    return done


def _confidence(http: httpx.Client, model_id: str, clf: MLPClassifier) -> float:
    samples = http.post(f"/v1/models/{model_id}/generate",
                        json={"n": SAMPLES, "seed": 0}).json()["samples"]
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(s["b64"]))))
                       for s in samples]).reshape(SAMPLES, -1) / 255.0
    return float(clf.predict_proba(pixels).max(axis=1).mean())


def run() -> dict:
    """Train both VAEs, sample each over HTTP, score the samples and the probes."""
    archive, _, _ = digits_zip()
    clf, real = _classifier()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        svc = service(Path(tmp) / "data")
        try:
            http = httpx.Client(base_url=svc.base, timeout=600)
            ds = http.post("/v1/datasets", files={"file": ("digits.zip", archive)}).json()
            for name, params in (("vae", {}), ("unit_gaussian_before", BEFORE)):
                done = _train(http, ds["id"], params)
                m = done["metrics"]
                out[name] = {
                    "sample_confidence": round(_confidence(http, done["model_id"], clf), 4),
                    "linear_probe_accuracy": round(m["linear_probe_accuracy"], 4),
                    "pca_probe_accuracy": round(m["pca_probe_accuracy"], 4),
                    "raw_probe_accuracy": round(m["raw_probe_accuracy"], 4),
                    "train_seconds": round(sum(h["seconds"] for h in done["history"]), 1)}
        finally:
            svc.stop()
    vae = out["vae"]
    vae["confidence_ratio_to_real"] = round(vae["sample_confidence"] / real, 4)
    vae["probe_minus_pca"] = round(vae["linear_probe_accuracy"] - vae["pca_probe_accuracy"], 4)
    before = out["unit_gaussian_before"]
    print(f"vae on digits PNGs ({EPOCHS} epochs, defaults): a real-digit MLP is "
          f"{vae['sample_confidence']:.3f} confident on its samples (goal >= 0.90; real digits "
          f"{real:.3f}, ratio {vae['confidence_ratio_to_real']:.3f}; unit Gaussian before "
          f"{before['sample_confidence']:.3f}); linear probe {vae['linear_probe_accuracy']:.3f} "
          f"vs PCA {vae['pca_probe_accuracy']:.3f} at the same width (goal within 0.03; before "
          f"{before['linear_probe_accuracy']:.3f}); raw pixels {vae['raw_probe_accuracy']:.3f}")
    return {"epochs": EPOCHS, "real_digit_confidence": round(real, 4), **out,
            "goal": "sample_confidence >= 0.90, probe within 0.03 of PCA"}


if __name__ == "__main__":
    run()
