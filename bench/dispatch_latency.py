"""POST /v1/jobs -> job `running`: p50 and p95, on Redis + PostgreSQL when they answer."""

from __future__ import annotations

import statistics
import tempfile
from datetime import datetime
from pathlib import Path

import httpx

from bench._service import drop_database, redis_pg_env, service, wait_job

JOBS = 40


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def run() -> dict:
    """Dispatch latency from the server's own timestamps (created_at -> started_at)."""
    env = redis_pg_env()
    wiring = "redis+postgresql" if env else "embedded (Redis/PostgreSQL not reachable)"
    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        svc = service(Path(tmp) / "data", **(env or {}))
        try:
            http = httpx.Client(base_url=svc.base, timeout=60)
            csv = b"a,b\n" + b"".join(b"%d,%d\n" % (i, i % 7) for i in range(50))
            ds = http.post("/v1/datasets", files={"file": ("t.csv", csv)}).json()
            for i in range(JOBS + 3):
                job = http.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "kmeans",
                                                  "params": {"n_clusters": 2, "n_init": 1}}).json()
                done = wait_job(http, job["id"])
                if i >= 3:  # the first few warm connections and imports up
                    latencies.append((_ts(done["started_at"]) - _ts(done["created_at"])).total_seconds())
        finally:
            svc.stop()
            if env:
                drop_database(env["PRETRAINER_DATABASE_URL"])
    latencies.sort()
    p50 = statistics.median(latencies) * 1e3
    p95 = latencies[int(0.95 * (len(latencies) - 1))] * 1e3
    print(f"dispatch latency ({wiring}, {len(latencies)} jobs): p50 {p50:.1f} ms, p95 {p95:.1f} ms "
          "(goal p50 < 50 ms)")
    return {"wiring": wiring, "p50_ms": round(p50, 1), "p95_ms": round(p95, 1), "goal": "p50 < 50 ms"}


if __name__ == "__main__":
    run()
