"""The micro-batcher: concurrent callers share forward passes and each gets its own rows back."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from app.serving.batcher import MicroBatcher


class Counting:
    """A model stand-in that records the size of every batch it is given."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()

    def embed(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            self.batches.append(len(x))
        time.sleep(self.delay)
        return x * 2

    def predict(self, x: np.ndarray) -> dict:
        return {"predictions": (x[:, 0] + 1).tolist(), "reconstruction_error": x[:, 1].tolist(),
                "note": "same for all"}


def test_concurrent_requests_are_batched_and_split_back():
    model = Counting(delay=0.02)

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(model.embed, max_size=16, max_wait=0.01)
        rows = [np.full((1, 3), i, dtype=np.float32) for i in range(32)]
        return await asyncio.gather(*(batcher.submit(r) for r in rows))

    out = asyncio.run(main())
    for i, got in enumerate(out):
        np.testing.assert_array_equal(got, np.full((1, 3), 2 * i))
    assert sum(model.batches) == 32
    assert max(model.batches) <= 16 and len(model.batches) <= 4  # not 32 separate passes


def test_dict_answers_are_split_per_caller():
    model = Counting()

    async def main() -> list[dict]:
        batcher = MicroBatcher(model.predict, max_size=8, max_wait=0.005)
        return await asyncio.gather(*(batcher.submit(np.array([[i, 10 * i]] * (i + 1), dtype=float))
                                      for i in range(3)))

    out = asyncio.run(main())
    for i, got in enumerate(out):
        assert got["predictions"] == [i + 1.0] * (i + 1)
        assert got["reconstruction_error"] == [10.0 * i] * (i + 1)
        assert got["note"] == "same for all"


def test_an_error_reaches_every_caller_of_the_batch():
    def boom(x: np.ndarray) -> np.ndarray:
        raise ValueError("bad batch")

    async def main() -> list:
        batcher = MicroBatcher(boom, max_size=4, max_wait=0.005)
        return await asyncio.gather(*(batcher.submit(np.zeros((1, 2))) for _ in range(3)),
                                    return_exceptions=True)

    out = asyncio.run(main())
    assert all(isinstance(e, ValueError) for e in out)


def test_a_lone_request_waits_no_longer_than_max_wait():
    model = Counting()

    async def main() -> float:
        batcher = MicroBatcher(model.embed, max_size=64, max_wait=0.01)
        t0 = time.perf_counter()
        await batcher.submit(np.ones((1, 2)))
        return time.perf_counter() - t0

    assert asyncio.run(main()) == pytest.approx(0.01, abs=0.05)


def test_a_burst_on_a_cold_model_loads_it_once(settings, client, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from app.ml import registry
    from app.serving.cache import ModelCache
    from app.storage import BlobStore
    from tests.api.test_models import train

    job = train(client, settings, "kmeans", {"n_clusters": 3})
    from app.db.session import get_sessionmaker
    from app.services import models

    with get_sessionmaker(settings.resolved_database_url)() as s:
        row = models.get(session=s, project="default", model_id=job["model_id"])
    calls = []
    real = registry.load_trained

    def slow_load(*args):
        calls.append(1)
        time.sleep(0.2)
        return real(*args)

    monkeypatch.setattr(registry, "load_trained", slow_load)
    cache = ModelCache(BlobStore(settings.blob_dir), 4)
    with ThreadPoolExecutor(8) as pool:
        entries = list(pool.map(lambda _: cache.load(row), range(8)))
    assert len(calls) == 1 and all(e is entries[0] for e in entries)


def test_loaded_models_are_kept_out_of_garbage_collections_and_evicted_ones_freed(settings, client):
    import gc
    import weakref

    from app.db.session import get_sessionmaker
    from app.services import models
    from app.serving.cache import ModelCache
    from app.storage import BlobStore
    from tests.api.test_models import train

    ids = [train(client, settings, "kmeans", {"n_clusters": k})["model_id"] for k in (2, 3)]
    with get_sessionmaker(settings.resolved_database_url)() as s:
        rows = [models.get(session=s, project="default", model_id=i) for i in ids]
    cache = ModelCache(BlobStore(settings.blob_dir), 1)
    gc.unfreeze()
    first = cache.load(rows[0])
    assert gc.get_freeze_count() > 0  # the heap, this model's objects in it, is frozen
    # A reference cycle through the model: only the cyclic collector can ever free it.
    first.trained.cycle = first.trained
    gone = weakref.ref(first.trained)
    del first
    second = cache.load(rows[1])  # evicts the first: the frozen heap is collected once more
    assert gone() is None and cache.peek(ids[0]) is None and len(cache) == 1
    second.trained.cycle = second.trained
    gone = weakref.ref(second.trained)
    del second
    cache.evict(ids[1])  # a deleted model: its cycles go with the next load's collection
    cache.load(rows[0])
    assert gone() is None
    gc.unfreeze()


def test_a_serving_route_refuses_an_endpoint_that_would_need_fastapi_to_solve_parameters():
    from fastapi import APIRouter, Request

    from app.api.models import ServingRoute

    router = APIRouter(route_class=ServingRoute)

    async def fine(model_id: str, request: Request) -> None: ...

    async def wants_more(model_id: str, request: Request, limit: int = 5) -> None: ...

    router.add_api_route("/{model_id}/fine", fine, methods=["POST"])
    with pytest.raises(TypeError, match="takes \\(model_id, request\\)"):
        router.add_api_route("/{model_id}/more", wants_more, methods=["POST"])
