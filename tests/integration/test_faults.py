"""A worker child killed with SIGKILL mid-training: the job resumes from its checkpoint."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from tests.conftest import to_csv
from tests.integration.test_end_to_end import wait_job

pytestmark = pytest.mark.integration


def test_sigkill_mid_training_resumes_from_the_checkpoint(production):
    http = production.http
    rows = np.random.default_rng(0).normal(size=(20000, 16))
    ds = http.post("/v1/datasets", files={"file": ("r.csv", to_csv(rows))}).json()
    job = http.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "autoencoder",
                                      "params": {"epochs": 8, "batch_size": 64}}).json()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = http.get(f"/v1/jobs/{job['id']}").json()
        if len(state["history"]) >= 2:
            break
        time.sleep(0.1)
    assert len(state["history"]) >= 2, state
    host_pid = _holder_pid(production, job["id"])
    os.kill(host_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    done = wait_job(http, job["id"], {"succeeded", "failed", "cancelled"}, timeout=180)
    assert done["status"] == "succeeded", done
    epochs = [h["epoch"] for h in done["history"]]
    assert epochs == list(range(1, 9)), epochs  # no epoch repeated, none skipped
    resumed = [h for h in done["history"] if h.get("resumed")]
    assert len(resumed) == 1 and resumed[0]["epoch"] > 1  # it did not start over
    assert done["attempts"] == 2
    assert time.monotonic() - killed_at < 120
    out = http.post(f"/v1/models/{done['model_id']}/embed", json={"instances": rows[:3].tolist()})
    assert out.status_code == 200


def _holder_pid(service, job_id: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(service.database_url)
    with engine.connect() as c:
        worker = c.execute(text("SELECT worker FROM jobs WHERE id = :id"), {"id": job_id}).scalar()
    engine.dispose()
    return int(worker.rsplit(":", 1)[1])
