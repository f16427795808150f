"""Sending webhook deliveries from the API process: a daemon thread claims what is due, POSTs
each (signed, with a short timeout) from a small thread pool, and records the answer.

Jobs only write delivery rows when they end (app.services.webhooks, an outbox), so a receiver
that is down or slow costs this thread pool time, never a job or the event loop. Several API
processes may run this loop: each delivery is claimed by one conditional UPDATE.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from app import __version__, logs
from app.config import Settings
from app.db.session import session_scope
from app.db.tables import utcnow
from app.services import webhooks
from app.services.webhooks import Outgoing

log = logs.get_logger("pretrainer.webhooks")
# A claimed delivery is not taken again for this long past the POST's own timeout: a process
# that dies mid-send leaves it to be retried by another after that.
HOLD_SLACK_SECONDS = 30.0


def deliver_due(settings: Settings, pool: ThreadPoolExecutor | None = None) -> int:
    """Send every delivery that is due now (up to a batch); returns how many were tried."""
    with session_scope(settings.resolved_database_url) as s:
        claimed = webhooks.claim_due(
            session=s, now=utcnow(), limit=settings.webhook_concurrency * 4,
            hold_seconds=settings.webhook_timeout_seconds + HOLD_SLACK_SECONDS)
    if pool is None:
        for out in claimed:
            deliver(settings, out)
    else:
        list(pool.map(lambda out: deliver(settings, out), claimed))
    return len(claimed)


def deliver(settings: Settings, out: Outgoing) -> None:
    """POST one claimed delivery and record the answer."""
    code, error = _post(settings, out)
    with session_scope(settings.resolved_database_url) as s:
        webhooks.record(session=s, delivery_id=out.delivery_id, status_code=code, error=error,
                        now=utcnow(), max_attempts=settings.webhook_max_attempts,
                        backoff_seconds=settings.webhook_backoff_seconds)
    log.info("webhook.sent", delivery_id=out.delivery_id, attempt=out.attempt, status_code=code,
             error=error)


def _post(settings: Settings, out: Outgoing) -> tuple[int | None, str | None]:
    """(status code, None) of the receiver's answer, or (None, why no answer came).

    The reason is ours, never the exception's text: it is shown to the webhook's project and
    must not carry this network's internals. The host is resolved and checked again here (DNS
    may have changed since registration), and redirects are not followed.
    """
    refusal = webhooks.url_refusal(out.url, allow_private=settings.webhook_allow_private)
    if refusal:
        return None, "refused: " + refusal
    headers = {"Content-Type": "application/json", "User-Agent": f"Pretrainer/{__version__}",
               "Pretrainer-Event": out.event, "Pretrainer-Delivery": out.delivery_id,
               "Pretrainer-Signature": webhooks.signature(out.secret, int(time.time()), out.body)}
    try:
        r = httpx.post(out.url, content=out.body, headers=headers,
                       timeout=settings.webhook_timeout_seconds, follow_redirects=False)
    except httpx.TimeoutException:
        return None, f"no answer within {settings.webhook_timeout_seconds:g} s"
    except httpx.HTTPError:
        return None, "could not connect"
    return r.status_code, None if r.is_success else f"answered HTTP {r.status_code}"


def start(settings: Settings) -> threading.Event:
    """Send due deliveries every PRETRAINER_WEBHOOK_POLL_SECONDS in a daemon thread (none when
    0); set the event to stop it."""
    stop = threading.Event()
    if settings.webhook_poll_seconds <= 0:
        return stop
    thread = threading.Thread(target=_loop, args=(settings, stop), daemon=True, name="webhooks")
    thread.start()
    return stop


def _loop(settings: Settings, stop: threading.Event) -> None:
    with ThreadPoolExecutor(settings.webhook_concurrency, thread_name_prefix="webhook") as pool:
        while not stop.wait(settings.webhook_poll_seconds):
            try:
                while deliver_due(settings, pool) and not stop.is_set():
                    pass  # a full batch: more may be due
            except Exception:  # a DB blip must not end the loop; the next round retries
                log.warning("webhooks.failed", exc_info=True)
