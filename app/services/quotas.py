"""Per-project quotas: the limits (settings, overridden per project in the database), what a
project uses, and the one check that refuses a request over a quota."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.config import QUOTAS
from app.db.tables import (
    ACTIVE,
    MAKES_NO_MODEL,
    QUEUED,
    RUNNING,
    Dataset,
    Job,
    Model,
    ProjectQuota,
    utcnow,
)
from app.errors import QuotaExceeded, field_error
from app.services.keys import check_project

# What each quota counts, said once: in refusals, in the CLI and at GET /v1/projects/me.
MEANING = {
    "stored_bytes": "bytes of uploaded datasets",
    "datasets": "datasets",
    "models": "models, counting one per queued or running job that trains one",
    "running_jobs": "jobs training at once",
    "queued_jobs": "jobs waiting for a worker",
    "serving_requests": "predict, embed and generate calls in flight",
}
# Past a byte quota the request is too large (413); past any other, too many (429).
STATUS = {"stored_bytes": 413}
# Seconds a client should wait before trying again: a job or a call ends within that, usually.
RETRY_AFTER = {"running_jobs": 10, "queued_jobs": 10, "serving_requests": 1}


@dataclass(frozen=True)
class Quota:
    """One quota of a project: its limit, what is in use, and whether the project sets it."""

    name: str
    limit: int
    used: int
    own: bool


def limits(*, session: Session, project: str, defaults: dict[str, int]) -> dict[str, int]:
    """The project's limits by quota name: its own where set, else the settings' defaults."""
    row = session.get(ProjectQuota, project)
    own = {name: getattr(row, name) for name in QUOTAS} if row else {}
    return {name: own[name] if own.get(name) is not None else defaults[name] for name in QUOTAS}


def usage(*, session: Session, project: str) -> dict[str, int]:
    """What the project uses of each quota the database can count (all but serving_requests)."""
    stored, n_datasets = session.execute(
        select(func.coalesce(func.sum(Dataset.size_bytes), 0), func.count())
        .where(Dataset.project == project)).one()
    n_models = session.scalar(select(func.count()).select_from(Model)
                              .where(Model.project == project)) or 0
    states = dict(session.execute(select(Job.status, func.count()).where(
        Job.project == project, Job.status.in_(ACTIVE)).group_by(Job.status)).all())
    running, queued = int(states.get(RUNNING, 0)), int(states.get(QUEUED, 0))
    making = session.scalar(select(func.count()).select_from(Job).where(
        Job.project == project, Job.status.in_(ACTIVE),
        Job.kind.not_in(MAKES_NO_MODEL))) or 0
    return {"stored_bytes": int(stored), "datasets": int(n_datasets),
            "models": int(n_models) + int(making), "running_jobs": running,
            "queued_jobs": queued}


def exceeded(name: str, *, limit: int, used: int, adding: int = 1) -> QuotaExceeded:
    """The refusal of a request that would take a project past its `name` quota."""
    unit = " bytes" if name == "stored_bytes" else ""
    detail = (f"the project's {name} quota ({MEANING[name]}) is {limit}{unit} and {used}{unit} "
              f"are in use; this request would add {adding}{unit} "
              f"(PRETRAINER_QUOTA_{name.upper()}, or `pretrainer quotas set`)")
    if name == "queued_jobs":
        detail += "; the setting was formerly PRETRAINER_MAX_ACTIVE_JOBS"
    return QuotaExceeded(name, limit=limit, used=used, detail=detail,
                         status=STATUS.get(name, 429), retry_after=RETRY_AFTER.get(name))


def lock(*, session: Session, project: str) -> None:
    """Hold the project's quota row until the transaction ends, so that two requests racing
    for its last place are counted one after the other (the row is made on first use).

    PostgreSQL: a row lock that others wait on. SQLite: the insert starts the write
    transaction, and SQLite has one writer at a time.
    """
    dialect = session.get_bind().dialect.name
    insert = postgres_insert if dialect == "postgresql" else sqlite_insert
    session.execute(insert(ProjectQuota).values(project=project, updated_at=utcnow())
                    .on_conflict_do_nothing(index_elements=["project"]))
    session.execute(select(ProjectQuota.project).where(ProjectQuota.project == project)
                    .with_for_update())


def check(*, session: Session, project: str, defaults: dict[str, int],
          adding: dict[str, int], locked: bool = True) -> None:
    """Refuse (QuotaExceeded) when adding these amounts would take the project past a quota.

    locked: take the project's quota lock first (lock()); the caller writes what it adds and
    commits soon after. An early look (before an upload streams) passes False.
    """
    if locked:
        lock(session=session, project=project)
    limit = limits(session=session, project=project, defaults=defaults)
    used = usage(session=session, project=project)
    for name, amount in adding.items():
        if used[name] + amount > limit[name]:
            raise exceeded(name, limit=limit[name], used=used[name], adding=amount)


def of(*, session: Session, project: str, defaults: dict[str, int], name: str) -> Quota:
    """One quota of the project (a database-counted one) with its limit and use."""
    row = session.get(ProjectQuota, project)
    return Quota(name, limits(session=session, project=project, defaults=defaults)[name],
                 usage(session=session, project=project)[name],
                 bool(row and getattr(row, name) is not None))


def describe(*, session: Session, project: str, defaults: dict[str, int],
             in_flight: int) -> list[Quota]:
    """Every quota of the project with its limit and use (in_flight: this process's calls)."""
    row = session.get(ProjectQuota, project)
    limit = limits(session=session, project=project, defaults=defaults)
    used = {**usage(session=session, project=project), "serving_requests": in_flight}
    return [Quota(name, limit[name], used[name], bool(row and getattr(row, name) is not None))
            for name in QUOTAS]


def set_(*, session: Session, project: str, values: dict[str, int | None]) -> dict[str, int | None]:
    """Set (an int) or clear (None: back to the setting) some of a project's quotas."""
    check_project(project)
    for name, value in values.items():
        if name not in QUOTAS:
            raise field_error(name, "unknown quota",
                              detail=f"unknown quota {name!r}; quotas: {', '.join(QUOTAS)}")
        if value is not None and value < 0:
            raise field_error(name, "negative", detail=f"quota {name} must be 0 or more, not {value}")
    row = session.get(ProjectQuota, project) or ProjectQuota(project=project)
    for name, value in values.items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return {name: getattr(row, name) for name in QUOTAS}


def own(*, session: Session) -> dict[str, dict[str, int]]:
    """The quotas each project sets itself (the rest follow the settings), by project."""
    rows = session.scalars(select(ProjectQuota).order_by(ProjectQuota.project))
    own_ = {r.project: {n: getattr(r, n) for n in QUOTAS if getattr(r, n) is not None}
            for r in rows}
    return {project: values for project, values in own_.items() if values}
