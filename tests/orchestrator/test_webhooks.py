"""The webhook outbox: deliveries are written in the event's transaction, and signed bodies."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from sqlalchemy import event, func, select

from orchestrator import dispatch, webhooks
from orchestrator.db import get_sessionmaker, session_scope
from orchestrator.events import EventType, emit
from orchestrator.models import Job, WebhookDelivery
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


def test_a_transaction_reads_its_tenants_webhooks_once_and_each_job_gets_its_own(
    clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    tenant = new_tenant()
    first, second = submit(tenant), submit(tenant)
    with session_scope() as session:
        for job_id in (None, first):  # one for every job of the tenant, one for the first
            webhooks.create_webhook(
                session,
                tenant_id=tenant,
                url="http://example.com/h",
                job_id=job_id,
                event_types=None,
            )
    reads: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM webhooks" in statement:
            reads.append(statement)

    session = get_sessionmaker()()
    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", note)
    try:
        # Loaded and held, as the reaper's and a run's jobs are (the session's map is weak).
        loaded = [session.get(Job, job_id) for job_id in (first, second)]
        for job_id in (first, second):
            emit(session, job_id, EventType.METRICS, step=1)
            emit(session, job_id, EventType.METRICS, step=2)
        session.commit()
        assert len(reads) == 1
        assert _deliveries() == 2 * 2 + 2 * 1

        # The copy ends with its transaction: a webhook added since is owed the next event.
        with session_scope() as other:
            webhooks.create_webhook(
                other,
                tenant_id=tenant,
                url="http://example.com/new",
                job_id=second,
                event_types=None,
            )
        loaded = [session.get(Job, second)]
        emit(session, second, EventType.METRICS, step=3)
        session.commit()
        assert _deliveries() == 6 + 2 and loaded
    finally:
        event.remove(engine, "before_cursor_execute", note)
        session.close()
