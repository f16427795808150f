"""The serving pool: heavy model calls run below the event loop's priority."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest

from app.serving.pool import ServingPool


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_a_pool_thread_yields_the_cpu_to_the_event_loop():
    pool = ServingPool(1)

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    try:
        loop_nice = niceness()
        pool_nice = asyncio.run(pool.run(niceness))
    finally:
        pool.close()
    assert pool_nice == max(10, loop_nice)  # nice 10, or lower still if the API already is
    assert niceness() == loop_nice  # the calling thread keeps its own
