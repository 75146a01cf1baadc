"""Webhooks over HTTP: a tenant's URLs that receive its jobs' events, signed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from orchestrator import webhooks
from services.api.deps import CurrentTenant, SessionDep
from services.api.webhook_schemas import (
    DeliveryOut,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
    delivery_out,
    webhook_out,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


@router.post("", status_code=201, response_model=WebhookCreated)
def create_webhook(
    body: WebhookCreate, session: SessionDep, tenant: CurrentTenant
) -> WebhookCreated:
    """Send events written from now on to `url`; the response is the only time the signing
    secret is shown."""
    webhook = webhooks.create_webhook(
        session,
        tenant_id=tenant.id,
        url=str(body.url),
        job_id=body.job_id,
        event_types=body.event_types,
    )
    return WebhookCreated(**webhook_out(webhook).model_dump(), secret=webhook.secret)


@router.get("", response_model=list[WebhookOut])
def list_webhooks(session: SessionDep, tenant: CurrentTenant) -> list[WebhookOut]:
    """This tenant's webhooks, newest first, never their secrets."""
    return [webhook_out(w) for w in webhooks.tenant_webhooks(session, tenant.id)]


@router.delete("/{webhook_id}", status_code=204, response_class=Response)
def delete_webhook(webhook_id: str, session: SessionDep, tenant: CurrentTenant) -> Response:
    """Stop sending to the webhook; deliveries still owed are dropped with it."""
    webhooks.delete_webhook(session, tenant.id, webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryOut])
def list_deliveries(
    webhook_id: str,
    session: SessionDep,
    tenant: CurrentTenant,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> list[DeliveryOut]:
    """Deliveries newest first, each with its attempts; `before` (a delivery id) pages back."""
    webhooks.webhook_for_tenant(session, tenant.id, webhook_id)
    rows = webhooks.deliveries(session, webhook_id, limit=limit, before=before)
    return [delivery_out(d) for d in rows]
