"""Micro-batching for torch embed: 32 concurrent single-instance requests, batching on vs off.

The models are autoencoders with two 2048- and two 4096-wide layers: one row's forward pass
reads every weight (a memory-bound matrix-vector product), which is what batching amortizes.
The smaller the model, the more HTTP handling (about 2 ms of CPU a call here, client included)
dominates and the less batching can win; both sizes are reported. BENCH_SERVICE_ENV="K=V …"
passes extra environment to the service (e.g. OMP_NUM_THREADS=1 to try a one-thread torch).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import httpx
import numpy as np

from bench._service import hammer, service, wait_job

CONCURRENCY = 32
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
ROWS, COLS = 2000, 64


def _csv(x: np.ndarray) -> bytes:
    head = ",".join(f"f{i}" for i in range(x.shape[1]))
    return (head + "\n" + "\n".join(",".join(f"{v:.6g}" for v in row) for row in x)).encode()


WIDTHS = (2048, 4096)
EXTRA_ENV = dict(kv.split("=", 1) for kv in os.environ.get("BENCH_SERVICE_ENV", "").split() if kv)


def _measure(batching: bool, tmp: Path, x: np.ndarray, width: int) -> tuple[float, float, float]:
    svc = service(tmp / f"data-{batching}-{width}", PRETRAINER_BATCHING=str(batching).lower(),
                  **EXTRA_ENV)
    try:
        http = httpx.Client(base_url=svc.base, timeout=120)
        ds = http.post("/v1/datasets", files={"file": ("x.csv", _csv(x))}).json()
        job = http.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "autoencoder",
                                          "params": {"epochs": 1, "hidden_dims": [width, width],
                                                     "latent_dim": 32}}).json()
        done = wait_job(http, job["id"])
        assert done["status"] == "succeeded", done
        body = json.dumps({"instances": [x[0].tolist()]}).encode()
        load = hammer(f"{svc.base}/v1/models/{done['model_id']}/embed", body, CONCURRENCY, SECONDS)
    finally:
        svc.stop()
    return load.rps, load.p50_ms, load.p95_ms


def run() -> dict:
    """Throughput and p95 with and without micro-batching, on the same model and machine."""
    x = np.random.default_rng(0).normal(size=(ROWS, COLS)).astype(np.float32)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for width in WIDTHS:
            off = _measure(False, Path(tmp), x, width)
            on = _measure(True, Path(tmp), x, width)
            ratio, p95_ratio = on[0] / off[0], on[2] / off[2]
            print(f"micro-batching, autoencoder {width}x{width} ({CONCURRENCY} concurrent "
                  f"single-instance embed calls): {on[0]:.0f} req/s p95 {on[2]:.1f} ms with batching "
                  f"vs {off[0]:.0f} req/s p95 {off[2]:.1f} ms without -> {ratio:.2f}x throughput, "
                  f"p95 {p95_ratio:.2f}x (goal >= 2x at p95 <= 1.5x)")
            results[f"hidden_{width}"] = {
                "batched_rps": round(on[0]), "unbatched_rps": round(off[0]), "ratio": round(ratio, 2),
                "batched_p95_ms": round(on[2], 1), "unbatched_p95_ms": round(off[2], 1),
                "p95_ratio": round(p95_ratio, 2)}
    return {**results, "goal": ">= 2x at p95 <= 1.5x"}


if __name__ == "__main__":
    run()
