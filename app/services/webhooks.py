"""Webhooks: a project's URLs and the events they want; deliveries written with the event
(an outbox, in the transaction that ends the job) and sent after commit by app.webhook_sender.

The signature, the envelope and the SSRF rule are decided here, once.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.db.tables import Job, Webhook, WebhookDelivery, new_id, utcnow
from app.errors import field_error
from app.services import comparison_results, owned, page

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
# What each kind of job is called in event names; kinds not named here are `job`.
EVENT_PREFIX = {"batch": "batch"}
ENDINGS = ("succeeded", "failed", "cancelled")
GROUPS = ("job", "batch", "sweep", "comparison")
EVENTS = tuple(f"{group}.{end}" for group in GROUPS for end in ENDINGS)
TEST_EVENT = "webhook.test"  # sent by POST /v1/webhooks/{id}/test only, whatever it subscribes
MAX_EVENTS = 32
MIN_SECRET = 16
# Metrics carried in a job event: the scalar ones (a confusion matrix stays at GET /v1/jobs).
_SCALARS = (int, float, str, bool)


# ------------------------------------------------------------------------- registration


def create(*, session: Session, project: str, url: str, events: list[str],
           secret: str | None, allow_private: bool) -> Webhook:
    """Check and insert a webhook; a secret is made when none is given. The caller commits."""
    check_url(url, allow_private=allow_private)
    chosen = check_events(events)
    if secret is not None and len(secret) < MIN_SECRET:
        raise field_error("secret", f"at least {MIN_SECRET} characters")
    row = Webhook(id=new_id("wh"), project=project, url=url, events=chosen,
                  secret=secret or secrets.token_hex(32), active=True, created_at=utcnow())
    session.add(row)
    session.flush()
    return row


def check_events(events: list[str]) -> list[str]:
    """The event names, each known or a wildcard (`job.*`, `*`); 422 naming events[i]."""
    if not 1 <= len(events) <= MAX_EVENTS:
        raise field_error("events", f"give 1 to {MAX_EVENTS} event names")
    for i, name in enumerate(events):
        if not (name == "*" or name in EVENTS or name.removesuffix(".*") in GROUPS):
            raise field_error(f"events[{i}]", f"unknown event {name!r}; events: "
                              f"{', '.join(EVENTS)}, or a group's wildcard such as job.*")
    return list(dict.fromkeys(events))


def check_url(url: str, *, allow_private: bool) -> None:
    """422 naming `url` unless it is http(s) to a host whose every address is public."""
    reason = url_refusal(url, allow_private=allow_private)
    if reason:
        raise field_error("url", reason)


def url_refusal(url: str, *, allow_private: bool) -> str | None:
    """Why url must not be called (None: it may): not http(s), no host, a host that does not
    resolve, or one with a loopback, link-local, private, unspecified or multicast address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "an http:// or https:// URL with a host"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError, UnicodeError):
        return f"host {parts.hostname} does not resolve"
    if allow_private:
        return None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if _internal(address):
            return (f"host {parts.hostname} resolves to {address}, an internal address "
                    "(loopback, link-local, private, unspecified or multicast); "
                    "PRETRAINER_WEBHOOK_ALLOW_PRIVATE=true allows it")
    return None


def _internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return bool(address.is_loopback or address.is_link_local or address.is_private
                or address.is_unspecified or address.is_multicast or address.is_reserved)


def get(*, session: Session, project: str, webhook_id: str) -> Webhook:
    """One webhook of the project, or NotFound."""
    return owned(session, Webhook, webhook_id, project=project, what="webhook")


def list_(*, session: Session, project: str, limit: int,
          offset: int) -> tuple[list[Webhook], int]:
    """A page of the project's webhooks, newest first, and the total count."""
    return page(session, Webhook, [Webhook.project == project], limit=limit, offset=offset)


def remove(*, session: Session, project: str, webhook_id: str) -> None:
    """Delete a webhook and its deliveries (those not sent yet are never sent)."""
    row = get(session=session, project=project, webhook_id=webhook_id)
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == row.id))
    session.delete(row)
    session.flush()


def deliveries(*, session: Session, project: str, webhook_id: str, limit: int,
               offset: int) -> tuple[list[WebhookDelivery], int]:
    """A page of a webhook's deliveries, newest first."""
    row = get(session=session, project=project, webhook_id=webhook_id)
    return page(session, WebhookDelivery, [WebhookDelivery.webhook_id == row.id],
                limit=limit, offset=offset)


# ------------------------------------------------------------------------- events (outbox)


def matches(wanted: list[str], event: str) -> bool:
    """Whether a webhook subscribed to `wanted` gets `event`."""
    group = event.split(".", 1)[0]
    return any(w in ("*", event, f"{group}.*") for w in wanted)


def emit(*, session: Session, project: str, event: str, data: dict[str, Any]) -> list[str]:
    """Write a delivery of event to every active webhook of the project that wants it; sent
    after the caller's commit. Returns the delivery ids."""
    hooks = session.scalars(select(Webhook).where(Webhook.project == project,
                                                  Webhook.active.is_(True))).all()
    return [_enqueue(session, hook, event, data).id
            for hook in hooks if matches(hook.events, event)]


def _enqueue(session: Session, hook: Webhook, event: str, data: dict[str, Any]) -> WebhookDelivery:
    now = utcnow()
    delivery_id = new_id("dlv")
    body = {"id": delivery_id, "event": event, "created_at": now.isoformat(), "data": data}
    row = WebhookDelivery(id=delivery_id, webhook_id=hook.id, event=event, body=body,
                          status=PENDING, attempts=0, next_attempt_at=now, created_at=now)
    session.add(row)
    return row


def send_test(*, session: Session, project: str, webhook_id: str) -> WebhookDelivery:
    """Queue a `webhook.test` delivery to one webhook. The caller commits."""
    hook = get(session=session, project=project, webhook_id=webhook_id)
    return _enqueue(session, hook, TEST_EVENT, {"webhook_id": hook.id, "url": hook.url})


def job_ended(*, session: Session, job: Job) -> None:
    """The job_end listener: its event (`job.*`, `batch.*`), and `comparison.*` when it was
    the last job of a comparison."""
    event = f"{EVENT_PREFIX.get(job.kind or 'train', 'job')}.{job.status}"
    emit(session=session, project=job.project, event=event, data={"job": job_data(job)})
    if job.parent_id and comparison_results.is_child(job):
        status = comparison_results.ended_status(session=session, comparison_id=job.parent_id)
        if status is not None:
            emit(session=session, project=job.project, event=f"comparison.{status}",
                 data={"comparison": {"id": job.parent_id, "status": status}})


def job_data(job: Job) -> dict[str, Any]:
    """What an event says about a job (GET /v1/jobs/{id} has the rest)."""
    metrics = {k: v for k, v in (job.metrics or {}).items() if isinstance(v, _SCALARS)}
    error = {"type": job.error_type, "message": job.error_message or ""} if job.error_type else None
    return {"id": job.id, "kind": job.kind, "status": job.status, "algorithm": job.algorithm,
            "dataset_id": job.dataset_id, "model_id": job.model_id, "parent_id": job.parent_id,
            "name": job.name, "metrics": metrics, "error": error,
            "created_at": _iso(job.created_at), "finished_at": _iso(job.finished_at)}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# ------------------------------------------------------------------------- sending


def body_bytes(delivery: WebhookDelivery) -> bytes:
    """The exact bytes POSTed (and signed) for a delivery."""
    return json.dumps(delivery.body, separators=(",", ":"), sort_keys=True).encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The Pretrainer-Signature header: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


@dataclass(frozen=True)
class Outgoing:
    """A claimed delivery, with what sending it needs (no ORM object crosses threads)."""

    delivery_id: str
    attempt: int
    url: str
    secret: str
    event: str
    body: bytes


def claim_due(*, session: Session, now: datetime, limit: int,
              hold_seconds: float) -> list[Outgoing]:
    """Claim up to limit due deliveries: each by a conditional UPDATE that moves its
    next_attempt_at hold_seconds on, so of several API processes only one wins each."""
    due = session.execute(
        select(WebhookDelivery, Webhook).join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at).limit(limit)).all()
    claimed = []
    for delivery, hook in due:
        won = session.execute(
            update(WebhookDelivery).where(
                WebhookDelivery.id == delivery.id, WebhookDelivery.status == PENDING,
                WebhookDelivery.next_attempt_at == delivery.next_attempt_at)
            .values(next_attempt_at=now + timedelta(seconds=hold_seconds)))
        if won.rowcount == 1:  # type: ignore[attr-defined]
            claimed.append(Outgoing(delivery.id, delivery.attempts + 1, hook.url, hook.secret,
                                    delivery.event, body_bytes(delivery)))
    return claimed


def record(*, session: Session, delivery_id: str, status_code: int | None, error: str | None,
           now: datetime, max_attempts: int, backoff_seconds: float) -> None:
    """Record one try: delivered on a 2xx; else retried after backoff * 2**(tries-1), or
    failed after max_attempts."""
    row = session.get(WebhookDelivery, delivery_id)
    if row is None:  # the webhook was deleted while its delivery was in flight
        return
    row.attempts += 1
    row.last_status_code = status_code
    row.last_error = error[:255] if error else None
    if status_code is not None and 200 <= status_code < 300:
        row.status, row.delivered_at, row.last_error = DELIVERED, now, None
    elif row.attempts >= max_attempts:
        row.status = FAILED
    else:
        row.next_attempt_at = now + timedelta(seconds=backoff_seconds * 2 ** (row.attempts - 1))
    session.flush()

