"""/v1/webhooks: register URLs for job, batch, sweep and comparison events; list deliveries."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from app.api.deps import Limit, Offset, ProjectDep, SessionDep, SettingsDep
from app.db.tables import Webhook, WebhookDelivery
from app.schemas import DeliveryList, DeliveryOut, Page, WebhookCreate, WebhookList, WebhookOut
from app.services import webhooks

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such webhook"}}


def _out(row: Webhook, *, with_secret: bool = False) -> WebhookOut:
    return WebhookOut(id=row.id, url=row.url, events=row.events, active=row.active,
                      created_at=row.created_at, secret=row.secret if with_secret else None)


def _delivery(row: WebhookDelivery) -> DeliveryOut:
    pending = row.status == webhooks.PENDING
    return DeliveryOut(id=row.id, webhook_id=row.webhook_id, event=row.event, status=row.status,
                       attempts=row.attempts, last_status_code=row.last_status_code,
                       last_error=row.last_error,
                       next_attempt_at=row.next_attempt_at if pending else None,
                       created_at=row.created_at, delivered_at=row.delivered_at, body=row.body)


@router.post("", status_code=201, response_model=WebhookOut, responses={
    422: {"description": "a URL that is not http(s), does not resolve or resolves to an "
                         "internal address (url), or an unknown event (events[i])"}})
def create_webhook(body: WebhookCreate, session: SessionDep, settings: SettingsDep,
                   project: ProjectDep) -> WebhookOut:
    """Register a URL for events. Each delivery is a signed POST: `Pretrainer-Signature:
    t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with the secret shown once here."""
    row = webhooks.create(session=session, project=project, url=body.url, events=body.events,
                          secret=body.secret, allow_private=settings.webhook_allow_private)
    session.commit()
    return _out(row, with_secret=True)


@router.get("", response_model=WebhookList)
def list_webhooks(session: SessionDep, project: ProjectDep, limit: Limit = 50,
                  offset: Offset = 0) -> WebhookList:
    """The project's webhooks, newest first (secrets are not shown)."""
    rows, total = webhooks.list_(session=session, project=project, limit=limit, offset=offset)
    return WebhookList(items=[_out(r) for r in rows], total=total,
                       next=Page.next_offset(offset, len(rows), total))


@router.get("/{webhook_id}", response_model=WebhookOut, responses=NOT_FOUND)
def get_webhook(webhook_id: str, session: SessionDep, project: ProjectDep) -> WebhookOut:
    """One webhook: its URL and events."""
    return _out(webhooks.get(session=session, project=project, webhook_id=webhook_id))


@router.delete("/{webhook_id}", status_code=204, responses=NOT_FOUND)
def delete_webhook(webhook_id: str, session: SessionDep, project: ProjectDep) -> Response:
    """Delete a webhook and its deliveries; nothing more is sent to it."""
    webhooks.remove(session=session, project=project, webhook_id=webhook_id)
    session.commit()
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryList, responses=NOT_FOUND)
def list_deliveries(webhook_id: str, session: SessionDep, project: ProjectDep,
                    limit: Limit = 50, offset: Offset = 0) -> DeliveryList:
    """A webhook's deliveries, newest first: status, attempts, last response code and body."""
    rows, total = webhooks.deliveries(session=session, project=project, webhook_id=webhook_id,
                                      limit=limit, offset=offset)
    return DeliveryList(items=[_delivery(r) for r in rows], total=total,
                        next=Page.next_offset(offset, len(rows), total))


@router.post("/{webhook_id}/test", status_code=202, response_model=DeliveryOut,
             responses=NOT_FOUND)
def test_webhook(webhook_id: str, session: SessionDep, project: ProjectDep) -> DeliveryOut:
    """Queue a `webhook.test` delivery to this webhook, to check the receiver and signature."""
    row = webhooks.send_test(session=session, project=project, webhook_id=webhook_id)
    session.commit()
    return _delivery(row)
