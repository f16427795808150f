"""Prometheus metrics of one API process: requests per route, jobs, queues, model cache, GPU.

Request counters and latencies are observed by the middleware in app.observe. Everything about
jobs is computed at scrape time from the database (one GROUP BY, and the finished jobs'
durations), so it is the same whichever API process answers and needs no multiprocess mode;
queue depth comes from the broker (Redis LLEN, or the filesystem broker's message files).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from app import logs
from app.config import Settings
from app.db.session import session_scope
from app.queue import QUEUES
from app.services import jobs

log = logs.get_logger("pretrainer.metrics")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600)


class Metrics:
    """One registry per app: the request metrics it observes and the collectors it scrapes."""

    def __init__(self, settings: Settings, cache: Any) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("pretrainer_http_requests", "HTTP requests by route template",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("pretrainer_http_request_duration_seconds",
                                 "HTTP request latency by route template", ["method", "route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(StateCollector(settings, cache))
        # Label children by (method, route, status): .labels() costs more than the count itself.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        key = (method, route, status)
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (self.requests.labels(method, route, str(status)),
                                          self.latency.labels(method, route))
        pair[0].inc()
        pair[1].observe(seconds)


class StateCollector(Collector):
    """Jobs, queues, model cache and GPU, read when Prometheus scrapes."""

    def __init__(self, settings: Settings, cache: Any) -> None:
        self.settings = settings
        self.cache = cache

    def collect(self) -> Iterator[Any]:
        yield from self._jobs()
        yield from self._queues()
        yield from self._cache()
        yield from _gpu()

    def _jobs(self) -> Iterator[Any]:
        try:
            with session_scope(self.settings.resolved_database_url) as s:
                counts = jobs.count_by_state(session=s)
                spans = jobs.durations(session=s)
        except Exception:  # a scrape reports what it can; the database has its own probe
            log.warning("metrics.jobs_unavailable", exc_info=True)
            return
        state = GaugeMetricFamily("pretrainer_jobs", "Jobs by state and queue",
                                  labels=["status", "queue"])
        for status, queue, n in counts:
            state.add_metric([status, queue], n)
        yield state
        yield _histogram("pretrainer_job_duration_seconds",
                         "Run time (started to finished) of ended jobs", spans)

    def _queues(self) -> Iterator[Any]:
        depth = GaugeMetricFamily("pretrainer_queue_depth", "Messages waiting in the broker",
                                  labels=["queue"])
        try:
            for queue, n in queue_depths(self.settings).items():
                depth.add_metric([queue], n)
        except Exception:
            log.warning("metrics.broker_unavailable", exc_info=True)
            return
        yield depth

    def _cache(self) -> Iterator[Any]:
        for name, value, text in (("hits", self.cache.hits, "Model cache hits"),
                                  ("misses", self.cache.misses, "Model cache misses (loads)")):
            counter = CounterMetricFamily(f"pretrainer_model_cache_{name}", text)
            counter.add_metric([], value)
            yield counter
        size = GaugeMetricFamily("pretrainer_model_cache_models", "Models loaded in this process")
        size.add_metric([], len(self.cache))
        yield size


def _histogram(name: str, text: str, spans: list[tuple[str, str, float]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, text, labels=["status", "queue"])
    groups: dict[tuple[str, str], list[float]] = {}
    for status, queue, seconds in spans:
        groups.setdefault((status, queue), []).append(seconds)
    for (status, queue), values in sorted(groups.items()):
        buckets = [(str(b), sum(v <= b for v in values)) for b in JOB_BUCKETS]
        buckets.append(("+Inf", len(values)))
        family.add_metric([status, queue], buckets, sum(values))
    return family


def queue_depths(settings: Settings) -> dict[str, int]:
    """Messages waiting in each queue: Redis list lengths, or filesystem broker files."""
    url = settings.resolved_broker_url
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            with client.pipeline(transaction=False) as pipe:
                for q in QUEUES:
                    pipe.llen(q)
                return dict(zip(QUEUES, (int(n) for n in pipe.execute()), strict=True))
        finally:
            client.close()
    if url.startswith("filesystem"):
        folder = settings.broker_dir / "queue"
        names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        return {q: sum(n.endswith(f".{q}.msg") for n in names) for q in QUEUES}
    return {}


def _gpu() -> Iterator[Any]:
    # Only where the process already uses torch: the API must not import it to be scraped.
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return
    memory = GaugeMetricFamily("pretrainer_gpu_memory_bytes", "GPU memory held by this process",
                               labels=["device", "kind"])
    util = GaugeMetricFamily("pretrainer_gpu_utilization_ratio", "GPU utilization (0..1)",
                             labels=["device"])
    for i in range(torch.cuda.device_count()):
        memory.add_metric([str(i), "allocated"], torch.cuda.memory_allocated(i))
        memory.add_metric([str(i), "reserved"], torch.cuda.memory_reserved(i))
        try:
            util.add_metric([str(i)], torch.cuda.utilization(i) / 100)
        except (ImportError, RuntimeError, ModuleNotFoundError):  # needs pynvml
            log.debug("metrics.gpu_utilization_unavailable", exc_info=True)
    yield memory
    yield util
