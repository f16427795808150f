"""One rank of a multi-process job:
`torchrun ... -m app.rank_main JOB_ID LEASE_EPOCH WORKER RUN_DIR`.

The worker's runner starts these (app.ranks.run_ranks) and holds the job's lease; every rank
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
from app.job_report import JobReport
from app.ml.base import NullReport
from app.ml.deep.runtime import distributed, init_distributed
from app.ranks import die_with_parent, is_comms_error
from app.runner import train_try
from app.services.leases import Lease
from app.storage import open_store


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
    except Exception as exc:  # noqa: BLE001 - whatever it is, the runner judges it from the file
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
