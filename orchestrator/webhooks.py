"""Webhooks: job events POSTed to a tenant's URLs, signed, retried, every attempt recorded.

An outbox: `emit` (orchestrator.events) calls `owe` in the transaction that writes the event,
so a delivery exists exactly when its event does. The API's deliverer round
(services/api/webhook_sender.py) takes due deliveries with `claim_due`, POSTs them outside any
transaction, and files each outcome with `record`. A claimed delivery's next_attempt_at moves
CLAIM_SECONDS ahead, so a replica that dies mid-send leaves it to a later round, and `record`
is fenced by the attempt number, so a late outcome never overwrites a newer attempt's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import event, or_, select
from sqlalchemy.orm import Session, selectinload

from orchestrator import webhook_addresses
from orchestrator.cost import as_utc
from orchestrator.errors import NotFound
from orchestrator.models import Event, Job, Webhook, WebhookAttempt, WebhookDelivery

MAX_ATTEMPTS = 8
FIRST_RETRY_SECONDS = 10.0
MAX_RETRY_SECONDS = 3600.0
# Longer than a round's sends take (BATCH deliveries, a few at a time, each bounded by the
# sender's timeouts).
CLAIM_SECONDS = 120.0
BATCH = 32


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


def retry_delay(attempt: int) -> timedelta:
    """The wait after failed attempt `attempt` (1, 2, …): doubling from FIRST_RETRY_SECONDS,
    capped at MAX_RETRY_SECONDS."""
    return timedelta(seconds=min(FIRST_RETRY_SECONDS * 2 ** (attempt - 1), MAX_RETRY_SECONDS))


def create_webhook(
    session: Session,
    *,
    tenant_id: str,
    url: str,
    job_id: str | None,
    event_types: Sequence[str] | None,
) -> Webhook:
    """A webhook with a new secret; `job_id` must be one of the tenant's jobs, and `url` may
    not point into the service's own networks (orchestrator.webhook_addresses)."""
    webhook_addresses.check_new_url(url)
    if job_id is not None:
        job = session.get(Job, job_id)
        if job is None or job.tenant_id != tenant_id:
            raise NotFound(f"job {job_id} not found", param="job_id")
    webhook = Webhook(
        tenant_id=tenant_id,
        url=url,
        job_id=job_id,
        event_types=sorted(set(event_types)) if event_types is not None else None,
        secret=f"whsec_{secrets.token_urlsafe(32)}",
    )
    session.add(webhook)
    session.flush()
    return webhook


def tenant_webhooks(session: Session, tenant_id: str) -> Sequence[Webhook]:
    return session.scalars(
        select(Webhook).where(Webhook.tenant_id == tenant_id).order_by(Webhook.created_at.desc())
    ).all()


def webhook_for_tenant(session: Session, tenant_id: str, webhook_id: str) -> Webhook:
    webhook = session.get(Webhook, webhook_id)
    if webhook is None or webhook.tenant_id != tenant_id:
        raise NotFound(f"webhook {webhook_id} not found", param="webhook_id")
    return webhook


def delete_webhook(session: Session, tenant_id: str, webhook_id: str) -> None:
    """The webhook goes, with the deliveries still owed to it and their record."""
    session.delete(webhook_for_tenant(session, tenant_id, webhook_id))
    session.flush()


def deliveries(
    session: Session, webhook_id: str, *, limit: int, before: int | None
) -> Sequence[WebhookDelivery]:
    """Newest first; `before` pages back from a delivery id."""
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    if before is not None:
        query = query.where(WebhookDelivery.id < before)
    return session.scalars(
        query.options(selectinload(WebhookDelivery.tries), selectinload(WebhookDelivery.event))
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    ).all()


def owe(session: Session, event: Event) -> None:
    """Add a pending delivery of `event` for each of its job's tenant's webhooks that wants it.
    Called by emit, before the event is flushed; the lookup must not flush it early."""
    for hook in _hooks_of_job(session, event.job_id):
        if hook.event_types is None or event.type in hook.event_types:
            session.add(
                WebhookDelivery(
                    webhook_id=hook.id,
                    event=event,
                    status=DeliveryStatus.PENDING,
                    attempts=0,
                    next_attempt_at=event.created_at,
                )
            )


def _hooks_of_job(session: Session, job_id: str) -> list[Webhook]:
    """The webhooks that may want the job's events. Where the job is loaded in this session
    already, its tenant's webhooks are read once per transaction (a reaper batch emits a few
    events for each of many jobs); webhooks are created and deleted in transactions of their
    own, so a copy never outlives the transaction that read it."""
    job = session.identity_map.get(session.identity_key(Job, job_id))
    with session.no_autoflush:
        if not isinstance(job, Job):  # not loaded: one query, without loading the job
            tenant = select(Job.tenant_id).where(Job.id == job_id).scalar_subquery()
            return list(
                session.scalars(
                    select(Webhook).where(
                        Webhook.tenant_id == tenant,
                        or_(Webhook.job_id.is_(None), Webhook.job_id == job_id),
                    )
                )
            )
        copies: dict[str, list[Webhook]] = session.info.setdefault(_TENANT_HOOKS, {})
        if job.tenant_id not in copies:
            copies[job.tenant_id] = list(
                session.scalars(select(Webhook).where(Webhook.tenant_id == job.tenant_id))
            )
    return [h for h in copies[job.tenant_id] if h.job_id is None or h.job_id == job_id]


_TENANT_HOOKS = "relaytune.tenant_webhooks"


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _forget_tenant_hooks(session: Session) -> None:
    session.info.pop(_TENANT_HOOKS, None)


def payload(event: Event) -> bytes:
    """The body POSTed: the event as the events route lists it, with its job's id."""
    body: dict[str, Any] = {
        "id": event.id,
        "job_id": event.job_id,
        "type": event.type,
        "phase": event.phase,
        "attempt": event.attempt,
        "data": event.data,
        "created_at": as_utc(event.created_at).isoformat().replace("+00:00", "Z"),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The Relaytune-Signature header: `t=<unix ts>,v1=<hex HMAC-SHA256(secret, "t.body")>`."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass(frozen=True)
class Outgoing:
    """One claimed attempt, everything its POST needs, detached from the session."""

    delivery_id: int
    attempt: int
    event_id: int
    url: str
    secret: str
    body: bytes


@dataclass(frozen=True)
class Outcome:
    delivery_id: int
    attempt: int
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def claim_due(session: Session, now: datetime) -> list[Outgoing]:
    """Take up to BATCH due deliveries as their next attempt."""
    due = session.scalars(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= now,
        )
        .options(selectinload(WebhookDelivery.event), selectinload(WebhookDelivery.webhook))
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(BATCH)
        .with_for_update(skip_locked=True, of=WebhookDelivery)
    ).all()
    claimed = []
    for delivery in due:
        delivery.attempts += 1
        delivery.next_attempt_at = now + timedelta(seconds=CLAIM_SECONDS)
        claimed.append(
            Outgoing(
                delivery_id=delivery.id,
                attempt=delivery.attempts,
                event_id=delivery.event_id,
                url=delivery.webhook.url,
                secret=delivery.webhook.secret,
                body=payload(delivery.event),
            )
        )
    return claimed


def record(session: Session, outcome: Outcome, now: datetime) -> None:
    """File an attempt's outcome: delivered, retried after retry_delay, or failed for good."""
    delivery = session.get(WebhookDelivery, outcome.delivery_id, with_for_update=True)
    if delivery is None or delivery.attempts != outcome.attempt:
        return  # deleted with its webhook, or taken again after its claim ran out
    if outcome.ok:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = now
        delivery.next_attempt_at = None
    elif outcome.attempt >= MAX_ATTEMPTS:
        delivery.status = DeliveryStatus.FAILED
        delivery.next_attempt_at = None
    else:
        delivery.next_attempt_at = now + retry_delay(outcome.attempt)
    delivery.tries.append(
        WebhookAttempt(
            attempt=outcome.attempt,
            status_code=outcome.status_code,
            error=outcome.error,
            attempted_at=now,
            next_attempt_at=delivery.next_attempt_at,
        )
    )
