"""One job over two processes (torchrun, gloo on CPU) through the real API and worker:
the loss curve of the one-process job, cancel stops every rank, a killed rank loses only
its try and the job resumes from its last checkpoint."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import to_csv
from tests.integration.test_end_to_end import wait_job
from tests.ml.ddp_fit import data
from tests.ml.test_distributed import PARAMS, RTOL

pytestmark = pytest.mark.integration


def job_processes(job_id: str) -> dict[int, dict[str, str]]:
    """pid -> environment of every process on this machine whose command line names job_id."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if job_id.encode() not in (entry / "cmdline").read_bytes():
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours
            continue
        pairs = (item.decode(errors="replace").partition("=") for item in env if item)
        found[int(entry.name)] = {k: v for k, _, v in pairs}
    return found


def ranks(job_id: str) -> dict[int, int]:
    """LOCAL_RANK -> pid of the job's rank processes (not torchrun's agent)."""
    return {int(env["LOCAL_RANK"]): pid for pid, env in job_processes(job_id).items()
            if "LOCAL_RANK" in env}


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s")


def submit(http, dataset_id: str, **params) -> dict:
    r = http.post("/v1/jobs", json={"dataset_id": dataset_id, "algorithm": "autoencoder",
                                    "params": {**PARAMS, **params}})
    assert r.status_code == 202, r.text
    return r.json()


@pytest.fixture(scope="module")
def rows(embedded) -> str:
    r = embedded.http.post("/v1/datasets", files={"file": ("rows.csv", to_csv(data()))})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_two_process_job_follows_the_one_process_loss_curve(embedded, rows):
    http = embedded.http
    one = submit(http, rows, devices=1)
    two = submit(http, rows, devices=2)
    one = wait_job(http, one["id"], {"succeeded", "failed"}, timeout=300)
    two = wait_job(http, two["id"], {"succeeded", "failed"}, timeout=300)
    assert one["status"] == two["status"] == "succeeded", (one["error"], two["error"])
    assert two["params"]["devices"] == 2 and two["attempts"] == 1
    assert [e["epoch"] for e in two["history"]] == [1, 2, 3, 4]
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose([e[key] for e in two["history"]],
                                   [e[key] for e in one["history"]], rtol=RTOL, err_msg=key)
    emb = http.post(f"/v1/models/{two['model_id']}/embed",
                    json={"instances": data()[:3].tolist()})
    assert emb.status_code == 200 and np.asarray(emb.json()["embeddings"]).shape == (3, 4)
    wait_for(lambda: not job_processes(two["id"]), 30, "every rank gone")


def test_more_devices_than_any_worker_has_is_a_422(embedded, rows):
    r = embedded.http.post("/v1/jobs", json={"dataset_id": rows, "algorithm": "autoencoder",
                                             "params": {"devices": 3}})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in r.json()["errors"]] == ["params.devices"]
    assert "PRETRAINER_CPU_PROCESSES" in r.json()["errors"][0]["message"]


def test_cancel_stops_every_rank(embedded, rows):
    http = embedded.http
    job = submit(http, rows, devices=2, epochs=10_000)
    wait_for(lambda: len(ranks(job["id"])) == 2, 120, "two ranks running")
    wait_for(lambda: http.get(f"/v1/jobs/{job['id']}").json()["history"], 120, "an epoch")
    assert http.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    done = wait_job(http, job["id"], {"cancelled", "failed", "succeeded"}, timeout=60)
    assert done["status"] == "cancelled", done
    wait_for(lambda: not job_processes(job["id"]), 30, "every rank gone")


def test_a_killed_rank_loses_its_try_and_the_job_resumes(embedded, rows):
    http = embedded.http
    job = submit(http, rows, devices=2, epochs=80)
    pids = wait_for(lambda: (r := ranks(job["id"])) and len(r) == 2 and r, 120, "two ranks")
    wait_for(lambda: len(http.get(f"/v1/jobs/{job['id']}").json()["history"]) >= 3, 120,
             "three epochs (and their checkpoints)")
    os.kill(pids[1], signal.SIGKILL)
    done = wait_job(http, job["id"], {"succeeded", "failed", "cancelled"}, timeout=300)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2
    resumed = [e for e in done["history"] if e.get("resumed")]
    assert len(resumed) == 1 and resumed[0]["epoch"] > 1  # continued, not restarted
    assert [e["epoch"] for e in done["history"]] == list(range(1, 81))
    wait_for(lambda: not job_processes(job["id"]), 30, "every rank gone")
