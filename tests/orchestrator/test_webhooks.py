"""The webhook outbox: deliveries are written in the event's transaction, and signed bodies."""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import func, select

from orchestrator import dispatch, webhooks
from orchestrator.db import get_sessionmaker, session_scope
from orchestrator.events import EventType, emit
from orchestrator.models import WebhookDelivery
from tests.orchestrator.relay_helpers import new_tenant, submit


def _deliveries() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(WebhookDelivery)) or 0


def test_a_delivery_exists_exactly_when_its_event_was_committed(
    clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    tenant = new_tenant()
    job_id = submit(tenant)
    with session_scope() as session:
        webhooks.create_webhook(
            session, tenant_id=tenant, url="http://example.com/h", job_id=None, event_types=None
        )
    rolled_back = get_sessionmaker()()
    try:
        emit(rolled_back, job_id, EventType.METRICS, step=1)
        rolled_back.flush()
        rolled_back.rollback()
    finally:
        rolled_back.close()
    assert _deliveries() == 0

    with session_scope() as session:
        emit(session, job_id, EventType.METRICS, step=2)
    assert _deliveries() == 1


def test_the_signature_is_an_hmac_of_the_timestamp_and_the_body() -> None:
    header = webhooks.signature("whsec_x", 1700000000, b'{"id":1}')
    expected = hmac.new(b"whsec_x", b'1700000000.{"id":1}', hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
