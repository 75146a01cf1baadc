"""Wire models of webhooks and of their deliveries."""

from __future__ import annotations

from typing import Annotated

from pydantic import AnyUrl, BaseModel, Field, UrlConstraints

from orchestrator.events import EventType
from orchestrator.models import Webhook, WebhookDelivery
from orchestrator.webhooks import DeliveryStatus
from services.api.schemas import RequestBody, UtcDatetime

WebhookUrl = Annotated[
    AnyUrl, UrlConstraints(max_length=2048, allowed_schemes=["http", "https"], host_required=True)
]


class WebhookCreate(RequestBody):
    url: WebhookUrl = Field(
        description="Where the events are POSTed: an http or https URL, not into the service's"
        " own networks (loopback, private, link-local, ...)"
    )
    job_id: str | None = Field(
        None, max_length=36, description="Only this job's events; null: every job of the tenant"
    )
    event_types: list[EventType] | None = Field(
        None, min_length=1, description="Only events of these types; null: every type"
    )


class WebhookOut(BaseModel):
    id: str
    url: str
    job_id: str | None
    event_types: list[str] | None
    created_at: UtcDatetime


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="Signs every delivery (Relaytune-Signature); shown only in this response"
    )


class AttemptOut(BaseModel):
    attempt: int
    status_code: int | None = Field(description="The receiver's answer; null when none came")
    error: str | None
    attempted_at: UtcDatetime
    next_attempt_at: UtcDatetime | None = Field(
        description="When the delivery is tried again after this attempt; null: no retry"
    )


class DeliveryOut(BaseModel):
    id: int
    event_id: int
    event_type: str
    status: DeliveryStatus
    next_attempt_at: UtcDatetime | None
    delivered_at: UtcDatetime | None
    created_at: UtcDatetime
    attempts: list[AttemptOut]


def webhook_out(webhook: Webhook) -> WebhookOut:
    return WebhookOut.model_validate(webhook, from_attributes=True)


def delivery_out(delivery: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        event_id=delivery.event_id,
        event_type=delivery.event.type,
        status=DeliveryStatus(delivery.status),
        next_attempt_at=delivery.next_attempt_at,
        delivered_at=delivery.delivered_at,
        created_at=delivery.created_at,
        attempts=[AttemptOut.model_validate(a, from_attributes=True) for a in delivery.tries],
    )
