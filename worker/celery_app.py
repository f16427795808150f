"""The Celery worker: the `jobs.train` task is a thin shell around app.runner.run_job."""

from __future__ import annotations

import structlog
from celery.signals import worker_process_init

from app.config import get_settings
from app.ml.artifacts import warm_up as warm_artifacts
from app.queue import TRAIN_TASK, make_celery
from app.runner import run_job, worker_id

settings = get_settings()
celery = make_celery(settings)
# skops takes seconds to import (it walks all of scikit-learn): import it once here, before the
# pool forks, so children inherit it. In worker_process_init it would delay each child's "up"
# signal past Celery's 4 s alive timeout on a busy machine, and the child would be restarted.
warm_artifacts()


@worker_process_init.connect  # type: ignore[untyped-decorator]  # celery ships no types
def _fresh_engines(**_: object) -> None:
    # Forked children must not share the parent's database connections.
    from app.db.session import get_engine, get_sessionmaker
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()
    # Pay one-time start-up costs here, not inside the first job's clock.
    from app.data.loaders import warm_up as warm_loaders

    warm_loaders()


@celery.task(name=TRAIN_TASK, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def train(job_id: str, request_id: str | None = None) -> None:
    """Train one job, identified by id; the job row says what to do.

    Every log line while it trains carries the job id and the id of the request that sent it.
    """
    with structlog.contextvars.bound_contextvars(job_id=job_id, request_id=request_id):
        run_job(job_id, settings=settings, worker=worker_id())
