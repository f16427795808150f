"""Micro-batching: concurrent requests to one model answered by one forward pass."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from app.serving.pool import ServingPool


class MicroBatcher:
    """Gathers concurrent requests to one model into one forward pass.

    A request waits at most `max_wait` seconds for company; a batch never exceeds `max_size`
    rows. While one batch runs, the next one fills up, so under load batches grow by themselves.
    With max_wait 0 a batch is whatever arrived before the loop's next turn (requests whose
    bytes came in together each run to their submit before it); a batch of at most `inline`
    rows is computed on the loop (a thread hop costs more than a small estimator call), a
    bigger one in `pool`.
    """

    def __init__(self, fn: Callable[[np.ndarray], Any], max_size: int, max_wait: float,
                 *, pool: ServingPool | None = None, inline: int = 0) -> None:
        self.fn = fn
        self.max_size = max_size
        self.max_wait = max_wait
        self.pool = pool or ServingPool(1)
        self.inline = inline
        self._pending: list[tuple[np.ndarray, asyncio.Future[Any]]] = []
        self._rows = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, x: np.ndarray) -> Any:
        """The model's answer for the rows of x, computed together with other callers' rows."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((x, future))
        self._rows += len(x)
        if self._rows >= self.max_size:
            self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            if self._rows < self.max_size and self.max_wait > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.max_wait)
                except TimeoutError:
                    pass
            self._wake.clear()
            batch = self._take()
            await self._run(batch)

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future[Any]]]:
        batch: list[tuple[np.ndarray, asyncio.Future[Any]]] = []
        rows = 0
        while self._pending and (not batch or rows + len(self._pending[0][0]) <= self.max_size):
            item = self._pending.pop(0)
            batch.append(item)
            rows += len(item[0])
        self._rows -= rows
        return batch

    async def _run(self, batch: list[tuple[np.ndarray, asyncio.Future[Any]]]) -> None:
        try:
            x = batch[0][0] if len(batch) == 1 else np.concatenate([x for x, _ in batch])
            out = self.fn(x) if len(x) <= self.inline else await self.pool.run(self.fn, x)
        except Exception as exc:  # noqa: BLE001 - whatever a batch raised goes to its callers
            if len(batch) > 1:  # whose rows were refused: each caller is answered on its own
                for item in batch:
                    await self._run([item])
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for x, future in batch:
            if not future.done():
                future.set_result(_rows(out, start, start + len(x)))
            start += len(x)


def _rows(out: Any, start: int, stop: int) -> Any:
    """Rows start:stop of a batched answer: an array, a list, or a dict of per-row lists."""
    if isinstance(out, dict):
        return {k: _rows(v, start, stop) if isinstance(v, (list, np.ndarray)) else v
                for k, v in out.items()}
    return out[start:stop]
