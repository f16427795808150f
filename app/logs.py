"""Structured logs: JSON lines through structlog, one format for the API and the worker.

Log calls through the standard library (uvicorn, Celery, our older `logging` loggers) and
through structlog end in the same JSON renderer, and both carry the context bound with
structlog.contextvars — `request_id` for an HTTP request, `request_id` and `job_id` in the
worker while it trains a job.
"""

from __future__ import annotations

import logging
import logging.config
import os
import re
from typing import Any

import structlog

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _shared() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]


def configure_structlog() -> None:
    """Route structlog loggers into the standard library (safe to call more than once)."""
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *_shared(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def json_formatter() -> logging.Formatter:
    """The formatter that renders every record as one JSON object."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.JSONRenderer()])


def dict_config(level: str) -> dict[str, Any]:
    """A logging.config dict: the root logger writes JSON lines to stderr.

    Also handed to uvicorn as its log_config, so its worker processes log the same way.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": json_formatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            **{name: {"handlers": [], "propagate": True}
               for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery")},
            "alembic.runtime.plugins": {"level": "WARNING"},  # a line per plugin at each start
        },
    }


def configure(level: str) -> None:
    """Configure the process: JSON lines on stderr at level."""
    configure_structlog()
    logging.config.dictConfig(dict_config(level))
    logging.captureWarnings(True)  # warnings become JSON lines too, not bare stderr text


def request_id(given: str | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a fresh one."""
    if given and _SAFE_ID.match(given):
        return given
    return os.urandom(16).hex()  # as unique as a uuid4, at a fifth of its cost per request


def current_request_id() -> str | None:
    """The request id bound to this context (the HTTP request being served), if any."""
    value = structlog.contextvars.get_contextvars().get("request_id")
    return str(value) if value else None


def get_logger(name: str) -> Any:
    """A structlog logger: `log.info("job.started", job_id=...)`."""
    return structlog.get_logger(name)
