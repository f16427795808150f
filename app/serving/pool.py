"""The bounded pools that heavy serving work runs in, off the event loop: threads for model
calls, processes for decoding inputs."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import multiprocessing as mp
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any


class ServingPool:
    """A fixed number of threads for heavy serving work; the rest queue for a turn.

    Starlette's shared thread pool (40 threads) also runs every plain `def` route: heavy
    requests there would both crowd out those routes and run 40 CPU-bound jobs at once on a
    few cores. Here a heavy request waits its turn while the event loop keeps answering others.
    """

    def __init__(self, threads: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="serving",
                                            initializer=_lower_thread_priority)

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs) in the pool, awaited."""
        call = functools.partial(fn, *args, **kwargs) if kwargs else (
            functools.partial(fn, *args) if args else fn)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        """Stop taking work (at shutdown); running calls finish."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class DecodePool:
    """A few processes for the input work that holds the GIL: parsing big JSON bodies, building
    their matrices, decoding images.

    In a thread that work holds the API's one GIL for milliseconds at a time and the event loop
    waits for it on every turn: one project's 80-image embed or 60 MB body slows every other
    project's small predict. In a process it shares only the CPU, and at a lower priority
    (nice 10), so the loop gets a core as soon as it has something to do. The processes are
    spawned on the first heavy request (an API that never gets one never starts them); at most
    `queue` calls are handed to them at once, the rest wait their turn on the loop. Whatever a
    call raises is raised here, rebuilt with its attributes (a problem's status, field, headers).
    """

    def __init__(self, processes: int, queue: int | None = None) -> None:
        self.processes = processes
        self._executor: ProcessPoolExecutor | None = None
        self._turns = asyncio.Semaphore(queue or 2 * processes)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) in a decode process, awaited; fn and args must pickle."""
        async with self._turns:
            executor = self._started()
            try:
                ok, value = await asyncio.get_running_loop().run_in_executor(
                    executor, _guarded, fn, args)
            except BrokenProcessPool:  # a process died (killed for memory?): the next call
                if self._executor is executor:  # starts a new one rather than failing too
                    self._executor = None
                    executor.shutdown(wait=False, cancel_futures=True)
                raise
        if ok:
            return value
        raise _rebuilt(*value)

    def _started(self) -> ProcessPoolExecutor:
        if self._executor is None:  # spawn, not fork: the API process runs threads
            self._executor = ProcessPoolExecutor(self.processes, mp.get_context("spawn"),
                                                 initializer=_lower_priority)
        return self._executor

    def close(self) -> None:
        """Stop the processes (at shutdown)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


def _lower_priority() -> None:
    os.nice(10)


def _lower_thread_priority() -> None:
    """Run this pool thread (and the OpenMP/BLAS threads it starts, which inherit it) at nice
    10: on Linux a thread has its own priority, so a big model call yields the CPU to the event
    loop thread, which answers the small calls. Elsewhere the thread keeps its priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: its allocator is left as it is
        return None


_LIBC = _libc()


def _give_back_memory() -> None:
    """Return the freed heap of a call to the system (glibc keeps it otherwise).

    Decoding one 6000x6000 image takes ~36 MB that stays resident after it is freed: two decode
    processes would each hold it between heavy requests.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _guarded(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
    """fn(*args) in the decode process: (True, result), or (False, what rebuilds its error).

    Exceptions pickle as their class and args only, which loses the attributes set by keyword
    (a problem's errors and headers): they travel as class, args and attributes instead.
    """
    try:
        return True, fn(*args)
    except Exception as exc:  # noqa: BLE001 - every error is the caller's to map
        return False, (type(exc), exc.args, dict(vars(exc)))
    finally:
        _give_back_memory()


def _rebuilt(cls: type[Exception], args: tuple[Any, ...], attrs: dict[str, Any]) -> Exception:
    exc = cls.__new__(cls)
    exc.args = args
    vars(exc).update(attrs)
    return exc
