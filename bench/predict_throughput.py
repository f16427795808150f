"""Single-instance JSON predict on a cached k-means model vs a bare FastAPI endpoint holding the
same model, and vs `mlflow models serve` of it when mlflow can be installed (bench/mlflow_serve.py)."""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np
from sklearn.datasets import make_blobs

from bench import mlflow_serve
from bench._service import BIN, Proc, free_port, hammer, service, train

ROWS = 2000
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
CONCURRENCY = 8


def _csv(x: np.ndarray) -> bytes:
    buf = io.StringIO()
    np.savetxt(buf, x, delimiter=",", header=",".join(f"f{i}" for i in range(x.shape[1])), comments="")
    return buf.getvalue().encode()


def run() -> dict:
    """Return both throughputs and their ratio."""
    x, _ = make_blobs(n_samples=ROWS, n_features=8, centers=5, random_state=0)
    body = json.dumps({"instances": [x[0].tolist()]}).encode()
    with tempfile.TemporaryDirectory() as tmp:
        svc = service(Path(tmp) / "data")
        try:
            http = httpx.Client(base_url=svc.base, timeout=60)
            model = train(http, "b.csv", _csv(x), "kmeans", {"n_clusters": 5, "n_init": 3})["model_id"]
            ours = hammer(f"{svc.base}/v1/models/{model}/predict", body, CONCURRENCY, SECONDS)
        finally:
            svc.stop()
    port = free_port()
    env = {**os.environ, "BENCH_ROWS": str(ROWS)}
    bare = Proc([str(BIN / "python"), "-m", "uvicorn", "bench.bare_predict_app:app", "--port", str(port),
                 "--log-level", "warning", "--no-access-log"], env, port, "/healthz")
    try:
        base = hammer(f"{bare.base}/predict", body, CONCURRENCY, SECONDS)
    finally:
        bare.stop()
    result = {"pretrainer_rps": round(ours.rps), "bare_rps": round(base.rps),
              "ratio": round(ours.rps / base.rps, 3), "pretrainer_p50_ms": round(ours.p50_ms, 2),
              "bare_p50_ms": round(base.p50_ms, 2), "goal": ">= 0.9"}
    print(f"predict throughput: pretrainer {ours.rps:.0f} req/s (p50 {ours.p50_ms:.2f} ms) vs bare "
          f"FastAPI {base.rps:.0f} req/s (p50 {base.p50_ms:.2f} ms) -> ratio {result['ratio']:.2f}x "
          "(goal >= 0.9x)")
    result["mlflow"] = _mlflow(ours.rps, x)
    return result


def _mlflow(ours_rps: float, x: np.ndarray) -> dict:
    """The same single-instance predict against `mlflow models serve`, or why it was not run."""
    served = mlflow_serve.start(ROWS)
    if isinstance(served, str):
        print(f"mlflow models serve: not measured: {served}")
        return {"skipped": served}
    body = json.dumps({"inputs": [x[0].tolist()]}).encode()
    try:
        load = hammer(f"{served.base}/invocations", body, CONCURRENCY, SECONDS)
    finally:
        served.stop()
    ratio = ours_rps / load.rps
    print(f"predict throughput: pretrainer {ours_rps:.0f} req/s vs mlflow models serve "
          f"{load.rps:.0f} req/s (p50 {load.p50_ms:.2f} ms) -> {ratio:.2f}x (goal >= 1.5x)")
    return {"mlflow_rps": round(load.rps), "mlflow_p50_ms": round(load.p50_ms, 2),
            "ratio": round(ratio, 2), "goal": ">= 1.5"}


if __name__ == "__main__":
    run()
    sys.exit(0)
