"""A sweep over real processes: an API and two workers on Redis and PostgreSQL.

Eight autoencoder trials, two at a time: the trials run at once on both workers (their run
times overlap), the near-frozen learning rates are pruned once sound ones have finished, a
worker is SIGKILLed in the middle of a trial and that trial is retried (not counted twice), and
the sweep ends with every trial accounted for and the best one named.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import to_csv
from tests.integration.conftest import ROOT, _env, free_port, wait_ready
from tests.integration.test_reliability import Proc, redis_server, start_redis

pytestmark = [pytest.mark.integration, pytest.mark.slow]
KEY = "sweeps-key-0123456789abcdef"
PRETRAINER = str(Path(sys.executable).parent / "pretrainer")


class Cluster:
    """`pretrainer api` and two `pretrainer worker`s, as separate processes."""

    def __init__(self, tmp: Path, postgres_url: str, server: str) -> None:
        self.tmp = tmp
        port, redis_port = free_port(), free_port()
        # A Redis of its own: the session's `production` stack has workers on the shared one,
        # which would take this cluster's messages.
        self.redis = start_redis(server, redis_port, tmp / "redis.log")
        self.env = _env(PRETRAINER_PORT=str(port), PRETRAINER_DATA_DIR=str(tmp / "data"),
                        PRETRAINER_BROKER_URL=f"redis://127.0.0.1:{redis_port}/0", PRETRAINER_DATABASE_URL=postgres_url,
                        PRETRAINER_API_KEYS=f"sweeps:{KEY}", PRETRAINER_HEARTBEAT_SECONDS="1",
                        PRETRAINER_REAPER_SECONDS="1", PRETRAINER_REQUEUE_SECONDS="4",
                        PRETRAINER_VISIBILITY_TIMEOUT="600", PRETRAINER_MAX_ATTEMPTS="5",
                        PRETRAINER_CHECKPOINT_SECONDS="0")
        subprocess.run([PRETRAINER, "migrate"], cwd=ROOT, env=self.env, check=True,
                       capture_output=True)
        self.api = Proc([PRETRAINER, "api"], self.env, tmp / "api.log")
        self.workers = [Proc([PRETRAINER, "worker"], self.env, tmp / f"worker{i}.log")
                        for i in range(2)]
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                 headers={"Authorization": f"Bearer {KEY}"})
        wait_ready(self.http, self.api.proc, tmp / "api.log")

    def logs(self) -> str:
        return "\n".join((self.tmp / f"worker{i}.log").read_text()[-2000:] for i in range(2))

    def close(self) -> None:
        self.http.close()
        for proc in (self.api, *self.workers):
            proc.stop()
        self.redis.kill()
        self.redis.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("sweeps"), postgres_url,
                redis_server("the sweep's cluster runs on a Redis of its own"))
    try:
        yield c
    finally:
        c.close()


def _wait(what, predicate, timeout: float, cluster: Cluster):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} not in {timeout}s\n{cluster.logs()}")


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def test_sweep_runs_trials_at_once_prunes_survives_a_kill_and_picks_the_best(cluster):
    http = cluster.http
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(1500, 3)) @ rng.normal(size=(3, 12))  # rank 3: a code of 3 fits
    rows += 0.01 * rng.normal(size=rows.shape)
    ds = http.post("/v1/datasets", files={"file": ("r.csv", to_csv(rows))}).json()["id"]
    # Seed 0 walks the grid as 0.05, 0.02, 0.04, 0.01, then the near-frozen rates among the
    # rest: by then sound trials have finished, the median pruner's startup.
    r = http.post("/v1/sweeps", json={
        "dataset_id": ds, "algorithm": "autoencoder", "metric": "val_loss",
        "direction": "minimize", "trials": 8, "parallelism": 2, "seed": 0,
        "space": {"learning_rate": {"choices": [0.01, 0.02, 0.03, 0.04, 0.05,
                                                1e-7, 2e-7, 3e-7]}},
        "params": {"epochs": 6, "batch_size": 32, "latent_dim": 3, "seed": 0},
        "pruner": {"n_startup_trials": 2, "n_warmup_steps": 2}})
    assert r.status_code == 202, r.text
    sweep_id = r.json()["id"]

    def job(job_id: str) -> dict:
        return http.get(f"/v1/jobs/{job_id}").json()

    # SIGKILL the worker of the first trial once it is in the middle of its epochs.
    first = r.json()["trials"][0]["job_id"]
    _wait("first trial mid-training", lambda: len(job(first)["history"]) >= 1, 180, cluster)
    holder = _holder(cluster, first)
    victim = next(w for w in cluster.workers if w.proc.pid == holder or _child_of(holder, w))
    victim.signal(signal.SIGKILL, group=True)
    victim.proc.wait()
    victim.restart()

    sweep = _wait("the sweep's end", lambda: (s := http.get(f"/v1/sweeps/{sweep_id}").json())
                  ["status"] != "running" and s, 600, cluster)
    assert sweep["status"] == "succeeded", sweep
    trials = sweep["trials"]
    # Every trial of the budget is accounted for, once: the killed one was retried, not redone.
    assert len(trials) == 8 and len({t["job_id"] for t in trials}) == 8
    assert sorted(t["number"] for t in trials) == list(range(8))
    assert {t["state"] for t in trials} <= {"succeeded", "pruned"}, trials
    killed = job(first)
    assert killed["attempts"] >= 2 and killed["status"] in ("succeeded", "cancelled"), killed
    # Trials ran at once on the two workers.
    spans = [(_at(t["started_at"]), _at(t["finished_at"])) for t in trials]
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1:])
    # A near-frozen rate lags every sound one: pruned (sound ones may be too, when below the
    # median of those finished: that is the median rule).
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert any(t["params"]["learning_rate"] < 1e-6 for t in pruned), trials
    for trial in pruned:
        stopped = job(trial["job_id"])
        assert stopped["status"] == "cancelled" and stopped["error"]["type"] == "Pruned"
        assert len(stopped["history"]) < 6
    best = min((t for t in trials if t["state"] == "succeeded"), key=lambda t: t["value"])
    assert sweep["best_job_id"] == best["job_id"] and sweep["best_model_id"] == best["model_id"]
    assert best["value"] == min(e["val_loss"] for e in job(best["job_id"])["history"])
    model = http.post(f"/v1/models/{best['model_id']}/embed",
                      json={"instances": rows[:3].tolist()})
    assert model.status_code == 200 and len(model.json()["embeddings"][0]) == 3


def _holder(cluster: Cluster, job_id: str) -> int:
    """The pid of the process that holds the job's lease."""
    from sqlalchemy import create_engine, text

    engine = create_engine(cluster.env["PRETRAINER_DATABASE_URL"])
    try:
        with engine.connect() as c:
            worker = c.execute(text("SELECT worker FROM jobs WHERE id = :id"),
                               {"id": job_id}).scalar()
    finally:
        engine.dispose()
    return int(worker.rsplit(":", 1)[1])


def _child_of(pid: int, proc: Proc) -> bool:
    """True when pid is a process of proc's group (the Celery pool child that trains)."""
    import os

    try:
        return os.getpgid(pid) == proc.proc.pid
    except ProcessLookupError:
        return False
