"""The bounded pool that heavy serving work runs in, off the event loop."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


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
