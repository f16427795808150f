"""The job quotas with real processes: `make run` with two worker processes, a project allowed
one running and one queued job. The second job waits its turn while the first trains, a third
is refused with a 429 naming the quota, and the waiting job runs once the first ends."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pretrainer_client import Client, PretrainerError
from tests.conftest import blobs, to_csv
from tests.integration.conftest import Service, make_run

pytestmark = pytest.mark.integration
PRETRAINER = str(Path(sys.executable).parent / "pretrainer")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from make_run(tmp_path_factory.mktemp("quotas"), PRETRAINER_WORKER_CONCURRENCY="2",
                        PRETRAINER_QUOTA_RUNNING_JOBS="1", PRETRAINER_QUOTA_QUEUED_JOBS="1",
                        PRETRAINER_QUOTA_RETRY_SECONDS="1")


def _until(fn, what: str, timeout: float = 120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := fn():
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_running_and_queued_job_quotas_hold_with_real_workers(service, tmp_path):
    path = tmp_path / "blobs.csv"
    path.write_bytes(to_csv(blobs(200)))
    with Client(service.base) as c:
        ds = c.upload(path)
        # Trains until cancelled (10,000 epochs at most): the one running job.
        long = c.submit("autoencoder", ds, {"epochs": 10_000, "batch_size": 8})
        _until(lambda: c.job(long.id).status == "running", "the first job to run")
        waiting = c.submit("kmeans", ds, {"n_clusters": 3})  # the one queued job: at the limit
        with pytest.raises(PretrainerError) as refused:
            c.submit("kmeans", ds, {"n_clusters": 3})
        assert refused.value.status == 429
        assert refused.value.problem["quota"] == {"name": "queued_jobs", "limit": 1, "used": 1}
        # A free worker process takes the waiting job, finds its project at the running quota
        # and leaves it queued; it is offered again every second and still waits.
        time.sleep(4)
        assert c.job(waiting.id).status == "queued" and c.job(long.id).status == "running"
        deferred = [line for line in service.log.read_text().splitlines()
                    if "job.deferred" in line and waiting.id in line]
        assert len(deferred) >= 2 and '"quota": "running_jobs"' in deferred[0], deferred
        me = c.project()
        assert (me.quotas["running_jobs"].used, me.quotas["running_jobs"].limit) == (1, 1)
        assert (me.quotas["queued_jobs"].used, me.quotas["queued_jobs"].limit) == (1, 1)
        assert me.quotas["models"].used == 2  # one for each active job
        out = subprocess.run([PRETRAINER, "projects", "me"], capture_output=True, text=True,
                             env={**os.environ, "PRETRAINER_URL": service.base, "COLUMNS": "200"},
                             timeout=120, check=False)
        assert out.returncode == 0 and "running_jobs" in out.stdout and "queued_jobs" in out.stdout
        c.cancel(long.id)
        _until(lambda: c.job(long.id).status == "cancelled", "the first job to end")
        done = _until(lambda: (j := c.job(waiting.id)).status in ("succeeded", "failed") and j,
                      "the waiting job to run")
        assert done.status == "succeeded" and done.model_id
        assert c.project().quotas["queued_jobs"].used == 0
