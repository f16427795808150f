"""One rank of a multi-process job: `torchrun ... -m app.ranks JOB_ID LEASE_EPOCH WORKER RUN_DIR`.

The worker's runner starts these (app.runner._run_ranks) and holds the job's lease; every rank
loads the job's data and trains its share; rank 0 alone writes history, checkpoints and the
model under that lease. A rank that raises leaves RUN_DIR/rank-N.json so the runner can tell a
training error (the job fails) from a lost peer (the try is lost and the job resumes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

from app.config import get_settings
from app.ml.base import NullReport
from app.ml.deep.runtime import distributed, init_distributed
from app.runner import JobReport, die_with_parent, train_try
from app.services.jobs import Lease
from app.storage import open_store


def is_comms_error(exc: BaseException) -> bool:
    """Whether exc is a peer lost in a collective (NCCL/gloo), not this rank's own failure."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        word in text for word in ("gloo", "nccl", "connection", "broken pipe", "timed out"))


def main(argv: list[str]) -> int:
    """Join the group, train this rank's share; 0 on success."""
    job_id, epoch, worker, run_dir = argv
    die_with_parent()  # torchrun's agent killed: this rank goes too
    init_distributed()
    rank, _ = distributed()
    settings = get_settings()
    lease = Lease(job_id, int(epoch), worker)
    store = open_store(settings)
    try:
        if rank == 0:
            with JobReport(settings, lease, store) as report:
                train_try(settings, lease, report, store, rank=0)
        else:
            train_try(settings, lease, NullReport(), store, rank=rank)
    except Exception as exc:
        entry = {"rank": rank, "type": type(exc).__name__, "message": str(exc)[:2000],
                 "lost": is_comms_error(exc)}
        (Path(run_dir) / f"rank-{rank}.json").write_text(json.dumps(entry))
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
