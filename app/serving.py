"""Serving: an LRU cache of loaded models in the API process, micro-batching, and the bounded
pool that heavy serving work runs in, off the event loop."""

from __future__ import annotations

import asyncio
import functools
import gc
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.ml import registry
from app.ml.base import Trained
from app.storage import BlobStore


def settle_heap(*, thaw: bool = False) -> None:
    """Collect, then exempt everything alive from future garbage collections (gc.freeze).

    The API process holds torch, scikit-learn, pandas and the loaded models: a few hundred
    thousand long-lived objects that every full collection walks again, ~0.2 s with the GIL held
    while every queued request waits (p99 over a second under load). Called once the app has
    started and after each model load. Frozen objects are still freed when nothing refers to
    them, but a frozen reference cycle is not: after an eviction, `thaw` first returns the frozen
    objects to the collector, so an evicted model's cycles go with this one full collection.
    """
    if thaw:
        gc.unfreeze()
    gc.collect()
    gc.freeze()


class ServingPool:
    """A fixed number of threads for heavy serving work; the rest queue for a turn.

    Starlette's shared thread pool (40 threads) also runs every plain `def` route: heavy
    requests there would both crowd out those routes and run 40 CPU-bound jobs at once on a
    few cores. Here a heavy request waits its turn while the event loop keeps answering others.
    """

    def __init__(self, threads: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="serving")

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs) in the pool, awaited."""
        call = functools.partial(fn, *args, **kwargs) if kwargs else (
            functools.partial(fn, *args) if args else fn)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        """Stop taking work (at shutdown); running calls finish."""
        self._executor.shutdown(wait=False, cancel_futures=True)


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
        batch, rows = [], 0
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
        except Exception as exc:
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


@dataclass
class Loaded:
    """A loaded model with the row facts needed to answer without touching the database."""

    model_id: str
    project: str
    algorithm: str
    family: str
    capabilities: tuple[str, ...]
    schema: dict[str, Any]
    trained: Trained
    checked_at: float
    batchers: dict[str, MicroBatcher] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.schema.get("kind", "tabular"))

    @property
    def features(self) -> list[str]:
        return [f["name"] for f in self.schema.get("features", [])]

    @property
    def dtype(self) -> str:
        return str(self.schema.get("dtype", "float64"))


class ModelCache:
    """Bounded LRU of loaded models; loads happen outside the lock so one slow load blocks nobody."""

    def __init__(self, store: BlobStore, size: int, *, batch_max_size: int = 64,
                 batch_max_wait: float = 0.002, pool: ServingPool | None = None,
                 inline: int = 0) -> None:
        self.store = store
        self.size = size
        self.batch_max_size = batch_max_size
        self.batch_max_wait = batch_max_wait
        self.pool = pool or ServingPool(2)
        self.inline = inline
        self._items: OrderedDict[str, Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.hits = 0
        self.misses = 0
        self._thaw_due = False

    def peek(self, model_id: str) -> Loaded | None:
        """The cached entry, marked recently used, or None."""
        with self._lock:
            entry = self._items.get(model_id)
            if entry is not None:
                self._items.move_to_end(model_id)
                self.hits += 1
            return entry

    def load(self, row: Any) -> Loaded:
        """Load the model of a database row and cache it; concurrent callers share one load.

        Without this, the first burst of requests to a cold model would each read and build it.
        """
        with self._lock:
            gate = self._loading.setdefault(row.id, threading.Lock())
        with gate:
            with self._lock:
                entry = self._items.get(row.id)
            if entry is not None and entry.project == row.project:
                return entry
            entry = self._build(row)
        with self._lock:
            self._loading.pop(row.id, None)
        return entry

    def _build(self, row: Any) -> Loaded:
        path = self.store.require(row.artifact_key, what=f"model {row.id}", field="model_id")
        trained = registry.load_trained(row.algorithm, path)
        entry = Loaded(
            model_id=row.id, project=row.project, algorithm=row.algorithm, family=row.family,
            capabilities=tuple(row.capabilities), schema=dict(row.input_schema), trained=trained,
            checked_at=time.monotonic(),
        )
        with self._lock:
            self.misses += 1
            self._items[row.id] = entry
            self._items.move_to_end(row.id)
            thaw, self._thaw_due = self._thaw_due or len(self._items) > self.size, False
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        settle_heap(thaw=thaw)  # the model's objects, and the modules its loading imported
        return entry

    def batcher(self, entry: Loaded, op: str) -> MicroBatcher:
        """The micro-batcher of one model's predict or embed (created on first use).

        A scikit-learn call is cheap next to its fixed cost (validation, thread-pool limits):
        its batches take what is already waiting, with no added wait, and run on the loop when
        small. Torch models wait up to batch_max_wait for company and always run in the pool.
        """
        if op not in entry.batchers:
            fn = getattr(entry.trained, op)
            quick = entry.family == "unsupervised"
            entry.batchers[op] = MicroBatcher(
                fn, self.batch_max_size, 0.0 if quick else self.batch_max_wait, pool=self.pool,
                inline=self.inline if quick else 0)
        return entry.batchers[op]

    def evict(self, model_id: str) -> None:
        """Forget a model (deleted)."""
        with self._lock:
            if self._items.pop(model_id, None) is not None:
                self._thaw_due = True  # its frozen cycles go at the next load's collection

    def __len__(self) -> int:
        return len(self._items)
