"""Server-sent events of a job: status, progress and each epoch's metrics as they happen."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from app.db.session import get_sessionmaker
from app.db.tables import TERMINAL
from app.schemas import JobOut
from app.services import jobs

POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0


def _snapshot(url: str, project: str, job_id: str) -> JobOut:
    with get_sessionmaker(url)() as session:
        return JobOut.from_row(jobs.get(session=session, project=project, job_id=job_id))


def _frame(event: str, data: Any, event_id: int) -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


async def stream(request: Request, url: str, project: str, job_id: str) -> AsyncIterator[bytes]:
    """Yield SSE frames until the job ends or the client goes away."""
    status, progress, seen, n = None, None, 0, 0
    last_sent = time.monotonic()
    while True:
        job = await run_in_threadpool(_snapshot, url, project, job_id)
        frames: list[tuple[str, Any]] = []
        if job.status != status:
            status = job.status
            frames.append(("status", {"status": job.status, "progress": job.progress,
                                      "attempts": job.attempts}))
        if job.progress != progress:
            progress = job.progress
            frames.append(("progress", {"progress": job.progress}))
        for entry in job.history[seen:]:
            frames.append(("epoch", entry))
        seen = len(job.history)
        if job.status in TERMINAL:
            frames.append(("end", job.model_dump(mode="json")))
        for event, data in frames:
            n += 1
            yield _frame(event, data, n)
            last_sent = time.monotonic()
        if job.status in TERMINAL or await request.is_disconnected():
            return
        if time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            yield b": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(POLL_SECONDS)
