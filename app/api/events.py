"""Server-sent events of a job or a sweep: one polling loop, and the frames (status, progress, epochs or trials, end) each one makes as it changes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from app.db.session import get_sessionmaker
from app.db.tables import TERMINAL
from app.schemas import JobOut, SweepOut
from app.services import jobs, sweeps

POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0


def _snapshot(url: str, project: str, job_id: str) -> JobOut:
    with get_sessionmaker(url)() as session:
        return JobOut.from_row(jobs.get(session=session, project=project, job_id=job_id))


def _frame(event: str, data: Any, event_id: int) -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


async def _follow(request: Request, look: Callable[[], Any],
                  changes: Callable[[Any], list[tuple[str, Any]]],
                  ended: Callable[[Any], bool]) -> AsyncIterator[bytes]:
    """Poll look() and yield the frames of what changed, numbered, with a keep-alive comment
    when nothing was sent for a while, until ended() or the client goes away."""
    n, last_sent = 0, time.monotonic()
    while True:
        now = await run_in_threadpool(look)
        for event, data in changes(now):
            n += 1
            yield _frame(event, data, n)
            last_sent = time.monotonic()
        if ended(now) or await request.is_disconnected():
            return
        if time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            yield b": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(POLL_SECONDS)


def _job_frames(job: JobOut, last: dict[str, Any]) -> list[tuple[str, Any]]:
    """What changed since the last look: the status, progress, each new epoch, the end."""
    frames: list[tuple[str, Any]] = []
    if job.status != last.get("status"):
        last["status"] = job.status
        frames.append(("status", {"status": job.status, "progress": job.progress,
                                  "attempts": job.attempts}))
    if job.progress != last.get("progress"):
        last["progress"] = job.progress
        frames.append(("progress", {"progress": job.progress}))
    for entry in job.history[last.get("seen", 0):]:
        frames.append(("epoch", entry))
    last["seen"] = len(job.history)
    if job.status in TERMINAL:
        frames.append(("end", job.model_dump(mode="json")))
    return frames


def stream(request: Request, url: str, project: str, job_id: str) -> AsyncIterator[bytes]:
    """Yield SSE frames until the job ends or the client goes away."""
    last: dict[str, Any] = {}
    return _follow(request, lambda: _snapshot(url, project, job_id),
                   lambda job: _job_frames(job, last), lambda job: job.status in TERMINAL)


# --- a sweep's events ----------------------------------------------------------------------

SWEEP_ENDED = frozenset({"succeeded", "failed", "cancelled"})


def _sweep_snapshot(url: str, project: str, sweep_id: str) -> SweepOut:
    with get_sessionmaker(url)() as session:
        sweep = sweeps.get(session=session, project=project, sweep_id=sweep_id)
        return SweepOut.from_board(sweeps.board(session=session, sweep=sweep))


def _sweep_frames(sweep: SweepOut, seen: dict[str, tuple[str, Any]],
                  last: dict[str, Any]) -> list[tuple[str, Any]]:
    """What changed since the last look: the status, each trial's state or value, progress."""
    frames: list[tuple[str, Any]] = []
    if sweep.status != last.get("status"):
        last["status"] = sweep.status
        frames.append(("status", {"status": sweep.status, "progress": sweep.progress}))
    for trial in sweep.trials:
        if seen.get(trial.job_id) != (now := (trial.state, trial.value)):
            seen[trial.job_id] = now
            frames.append(("trial", trial.model_dump(mode="json")))
    if sweep.progress != last.get("progress"):
        last["progress"] = sweep.progress
        frames.append(("progress", {"progress": sweep.progress, "best_job_id": sweep.best_job_id,
                                    "best_value": sweep.best_value}))
    if sweep.status in SWEEP_ENDED:
        frames.append(("end", sweep.model_dump(mode="json")))
    return frames


def sweep_stream(request: Request, url: str, project: str,
                 sweep_id: str) -> AsyncIterator[bytes]:
    """Yield SSE frames (status, trial, progress, end) until the sweep ends or the client goes."""
    seen: dict[str, tuple[str, Any]] = {}
    last: dict[str, Any] = {}
    return _follow(request, lambda: _sweep_snapshot(url, project, sweep_id),
                   lambda sweep: _sweep_frames(sweep, seen, last),
                   lambda sweep: sweep.status in SWEEP_ENDED)
