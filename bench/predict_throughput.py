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
from bench._service import BIN, Load, Proc, free_port, hammer, service, train

ROWS = 2000
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
CONCURRENCY = 8
# Many concurrent callers: where micro-batching of scikit-learn calls pays (goal: >= 1.2x the
# bare endpoint's throughput, p95 <= 1.5x its p95).
MANY = 16
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


def _csv(x: np.ndarray) -> bytes:
    buf = io.StringIO()
    np.savetxt(buf, x, delimiter=",", header=",".join(f"f{i}" for i in range(x.shape[1])), comments="")
    return buf.getvalue().encode()


def run() -> dict:
    """Throughputs of the servers and the ratios, medians of ROUNDS alternating rounds.

    All servers are up at once and hammered in turn, round after round, so a burst of load
    from elsewhere on a shared machine hits each of them rather than one measurement.
    """
    x, _ = make_blobs(n_samples=ROWS, n_features=8, centers=5, random_state=0)
    body = json.dumps({"instances": [x[0].tolist()]}).encode()
    servers: list[Proc] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            svc = service(Path(tmp) / "data")
            servers.append(svc)
            http = httpx.Client(base_url=svc.base, timeout=60)
            model = train(http, "b.csv", _csv(x), "kmeans", {"n_clusters": 5, "n_init": 3})["model_id"]
            port = free_port()
            bare = Proc([str(BIN / "python"), "-m", "uvicorn", "bench.bare_predict_app:app", "--port",
                         str(port), "--log-level", "warning", "--no-access-log"],
                        {**os.environ, "BENCH_ROWS": str(ROWS)}, port, "/healthz")
            servers.append(bare)
            mlflow = mlflow_serve.start(ROWS)
            if isinstance(mlflow, Proc):
                servers.append(mlflow)
            targets = {"pretrainer": (f"{svc.base}/v1/models/{model}/predict", body),
                       "bare": (f"{bare.base}/predict_async", body),
                       "bare_def": (f"{bare.base}/predict", body)}
            if isinstance(mlflow, Proc):
                targets["mlflow"] = (f"{mlflow.base}/invocations",
                                     json.dumps({"inputs": [x[0].tolist()]}).encode())
            loads: dict[str, list[Load]] = {name: [] for name in targets}
            many: dict[str, list[Load]] = {"pretrainer": [], "bare": []}
            for _ in range(ROUNDS):
                for name, (url, payload) in targets.items():
                    loads[name].append(hammer(url, payload, CONCURRENCY, SECONDS))
                for name, rounds in many.items():
                    rounds.append(hammer(*targets[name], MANY, SECONDS))
        finally:
            for proc in servers:
                proc.stop()
    result = _report(loads, mlflow if isinstance(mlflow, str) else None)
    result["concurrency_16"] = _report_many(many)
    return result


def _report_many(many: dict[str, list[Load]]) -> dict:
    ours, base = _median(many["pretrainer"]), _median(many["bare"])
    result = {"pretrainer_rps": round(ours.rps), "bare_rps": round(base.rps),
              "ratio": round(ours.rps / base.rps, 3), "goal": ">= 1.2",
              "pretrainer_p95_ms": round(ours.p95_ms, 2), "bare_p95_ms": round(base.p95_ms, 2),
              "p95_ratio": round(ours.p95_ms / base.p95_ms, 3), "p95_goal": "<= 1.5"}
    print(f"predict throughput at {MANY} connections: pretrainer {ours.rps:.0f} req/s (p95 "
          f"{ours.p95_ms:.2f} ms) vs bare FastAPI async def {base.rps:.0f} req/s (p95 "
          f"{base.p95_ms:.2f} ms) -> {result['ratio']:.2f}x (goal >= 1.2x), p95 "
          f"{result['p95_ratio']:.2f}x (goal <= 1.5x)")
    return result


def _median(loads: list[Load]) -> Load:
    return sorted(loads, key=lambda load: load.rps)[len(loads) // 2]


def _report(loads: dict[str, list[Load]], mlflow_skipped: str | None) -> dict:
    ours, base, base_def = (_median(loads[k]) for k in ("pretrainer", "bare", "bare_def"))
    result: dict = {"pretrainer_rps": round(ours.rps), "bare_rps": round(base.rps),
                    "ratio": round(ours.rps / base.rps, 3), "pretrainer_p50_ms": round(ours.p50_ms, 2),
                    "bare_p50_ms": round(base.p50_ms, 2), "rounds": ROUNDS, "goal": ">= 0.9",
                    "bare_def_rps": round(base_def.rps), "ratio_def": round(ours.rps / base_def.rps, 3)}
    print(f"predict throughput (median of {ROUNDS} rounds): pretrainer {ours.rps:.0f} req/s "
          f"(p50 {ours.p50_ms:.2f} ms) vs bare FastAPI async def {base.rps:.0f} req/s "
          f"(p50 {base.p50_ms:.2f} ms) -> ratio {result['ratio']:.2f}x (goal >= 0.9x); "
          f"vs the bare def endpoint (thread pool) {base_def.rps:.0f} req/s -> "
          f"{result['ratio_def']:.2f}x")
    if mlflow_skipped is not None:
        print(f"mlflow models serve: not measured: {mlflow_skipped}")
        result["mlflow"] = {"skipped": mlflow_skipped}
        return result
    ml = _median(loads["mlflow"])
    ratio = ours.rps / ml.rps
    print(f"predict throughput (median of {ROUNDS} rounds): pretrainer {ours.rps:.0f} req/s vs "
          f"mlflow models serve {ml.rps:.0f} req/s (p50 {ml.p50_ms:.2f} ms) -> {ratio:.2f}x "
          "(goal >= 1.5x)")
    result["mlflow"] = {"mlflow_rps": round(ml.rps), "mlflow_p50_ms": round(ml.p50_ms, 2),
                        "ratio": round(ratio, 2), "goal": ">= 1.5"}
    return result


if __name__ == "__main__":
    run()
    sys.exit(0)
