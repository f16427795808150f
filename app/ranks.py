"""The processes of a multi-process job: the runner starts its ranks under torchrun
(app.rank_main), watches them, and reads what they left to tell a training error (the job
fails) from a lost peer (this try is lost; the next resumes from the last checkpoint)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from app import logs
from app.config import Settings
from app.job_report import JobReport, JobTimeout, LeaseLost
from app.ml.base import Cancelled
from app.services.leases import Lease

log = logs.get_logger("pretrainer.runner")  # the runner's lines, wherever they are written


class AttemptLost(Exception):
    """A rank of a multi-process job died (killed, out of memory): this try is lost, not the
    job; the next try resumes from the last checkpoint."""


class RankFailed(Exception):
    """A rank of a multi-process job raised: the job fails with that rank's error."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# Seconds the ranks get to leave after SIGTERM before the whole group is SIGKILLed.
RANK_STOP_GRACE = 10.0


def worker_devices(device: str, settings: Settings) -> tuple[int, str]:
    """How many processes this worker may train one job on, and of what ("GPUs"/"processes")."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        count = torch.cuda.device_count()
        limit = settings.worker_gpus if settings.worker_gpus is not None else count
        return min(count, limit), "GPUs"
    return settings.cpu_processes, "processes"


def job_devices(params: Any, settings: Settings) -> int:
    """params.devices resolved on this worker ("all": every one it has); more is an error."""
    asked = getattr(params, "devices", 1)
    if asked == 1:
        return 1
    have, what = worker_devices(params.device, settings)
    if asked == "all":
        return max(1, have)
    if asked > have:
        raise ValueError(f"params.devices asks for {asked}, but this worker has {have} {what} "
                         "(PRETRAINER_WORKER_GPUS, PRETRAINER_CPU_PROCESSES)")
    return int(asked)


def rank_command(lease: Lease, devices: int, run_dir: Path) -> list[str]:
    """torchrun on this machine: `devices` ranks of app.ranks for one try of the job."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={devices}", "--max-restarts=0", "-m", "app.rank_main",
            lease.job_id, str(lease.epoch), lease.worker, str(run_dir)]


def run_ranks(lease: Lease, report: JobReport, devices: int) -> None:
    """Run the job's ranks under torchrun in their own process group and watch them: cancel,
    a lost lease or the time limit stop them all; a rank's death loses this try."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{lease.job_id}-ranks-"))
    log.info("job.ranks", job_id=lease.job_id, devices=devices)
    # Its own session: a stop signals every rank at once; a Celery prefork child cannot
    # start multiprocessing children itself (they would be daemonic).
    proc = subprocess.Popen(rank_command(lease, devices, run_dir), start_new_session=True,
                            preexec_fn=die_with_parent)  # noqa: PLW1509 - prctl only, no locks
    try:
        while proc.poll() is None:
            report.check()
            time.sleep(0.2)
        if proc.returncode != 0:
            report.check()
            rank_outcome(run_dir, proc.returncode)
    finally:
        stop_group(proc)
        shutil.rmtree(run_dir, ignore_errors=True)


def rank_outcome(run_dir: Path, code: int) -> None:
    """Raise what the ranks' error files say: a training error fails the job; a comms error
    or a rank that left nothing (killed) loses the try."""
    errors = sorted((json.loads(p.read_text()) for p in run_dir.glob("rank-*.json")),
                    key=lambda e: e["rank"])
    for e in errors:
        if e["type"] == "Cancelled":
            raise Cancelled()
        if e["type"] == "LeaseLost":
            raise LeaseLost(e["message"])
        if e["type"] == "JobTimeout":
            raise JobTimeout(e["message"])
    real = [e for e in errors if not e["lost"]]
    if real:
        raise RankFailed(real[0]["type"], real[0]["message"])
    raise AttemptLost(f"a rank stopped (torchrun exit code {code}); "
                      f"{len(errors)} rank(s) reported: "
                      + "; ".join(f"rank {e['rank']}: {e['message'][:200]}" for e in errors))


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group of proc, then SIGKILL whatever is left of it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=RANK_STOP_GRACE)
        except subprocess.TimeoutExpired:
            continue
    try:  # the agent is gone: its ranks may not be
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphaned ranks)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def is_comms_error(exc: BaseException) -> bool:
    """Whether exc is a peer lost in a collective (NCCL/gloo), not this rank's own failure."""
    import torch.distributed as dist  # torch only where ranks run: the runner imports this module

    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        word in text for word in ("gloo", "nccl", "connection", "broken pipe", "timed out"))
