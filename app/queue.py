"""The Celery app as both sides see it: the API only sends, the worker also consumes."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from celery import Celery
from kombu.entity import Exchange, Queue
from kombu.transport import filesystem
from kombu.utils.json import dumps

from app.config import Settings

TRAIN_TASK = "jobs.train"


class _AtomicFilesystemChannel(filesystem.Channel):
    """kombu's filesystem channel, but a message file appears only once it is whole.

    kombu writes the file in place while a polling consumer may already move and parse it;
    an empty read crashes the worker and loses the message. Write aside, then rename.
    """

    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        staged = os.path.join(self.data_folder_out, f".{name}.tmp")  # not a `<queue>.msg` name
        with open(staged, "wb") as fh:
            fh.write(dumps(payload).encode())  # type: ignore[no-untyped-call]
        os.replace(staged, final)


class AtomicFilesystemTransport(filesystem.Transport):
    """The embedded broker: kombu's filesystem transport with atomic message files."""

    Channel = _AtomicFilesystemChannel
QUEUES = ("cpu", "gpu")


def _queue(name: str) -> Queue:
    # kombu ships no types: its constructors are untyped calls.
    return Queue(name, Exchange(name, type="direct"), routing_key=name)  # type: ignore[no-untyped-call]


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by producer and worker; see DESIGN.md's reliability notes."""
    transport: dict[str, Any] = {}
    url = settings.resolved_broker_url
    if url.startswith("filesystem"):
        folder = settings.broker_dir
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        transport = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            # The filesystem transport polls; keep dispatch latency low on the embedded default.
            "polling_interval": 0.02,
        }
    elif url.startswith(("redis", "rediss")):
        transport = {"visibility_timeout": settings.visibility_timeout}
    return {
        "broker_url": url,
        "broker_transport": f"{__name__}:AtomicFilesystemTransport" if url.startswith("filesystem") else None,
        "broker_transport_options": transport,
        # The Redis docs name three places for the visibility timeout; set all three.
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout},
        "visibility_timeout": settings.visibility_timeout,
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,  # the job row is the truth, not a result backend
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,  # bounded by the job row's attempt count
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "cpu",
        # Each queue its own exchange and key: a bare Queue(name) would borrow the default's.
        "task_queues": [_queue(name) for name in QUEUES],
        "task_default_exchange": "cpu",
        "task_default_routing_key": "cpu",
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_hijack_root_logger": False,
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "broker_pool_limit": 10,
    }


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured from settings."""
    app = Celery("pretrainer")
    app.conf.update(celery_config(settings))
    return app


_producers: dict[str, Celery] = {}


def _producer(settings: Settings) -> Celery:
    """One producer app per broker (and data dir) per process, so connections are pooled."""
    key = f"{settings.resolved_broker_url}|{settings.data_dir}"
    if key not in _producers:
        _producers[key] = make_celery(settings)
    return _producers[key]


def enqueue_train(settings: Settings, job_id: str, queue: str, *,
                  request_id: str | None = None, countdown: float | None = None) -> None:
    """Send the job id to its queue; called only after the job row is committed.

    The request id travels as a task argument so the worker's log lines of the job carry it.
    countdown: deliver it no sooner than this many seconds from now.
    """
    kwargs = {"request_id": request_id} if request_id else {}
    _producer(settings).send_task(TRAIN_TASK, args=[job_id], kwargs=kwargs, queue=queue,
                                  countdown=countdown)


def ping_broker(settings: Settings, timeout: float = 2.0) -> None:
    """Raise unless the broker accepts a connection (readiness probe)."""
    with _producer(settings).connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)


def ping_workers(settings: Settings, *, host: str, timeout: float = 5.0) -> list[str]:
    """Names of the workers on host that answer a Celery control ping (a container healthcheck)."""
    replies = _producer(settings).control.ping(timeout=timeout) or []
    return [name for reply in replies for name in reply if name.endswith(f"@{host}")]
