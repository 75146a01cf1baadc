"""Typed job events: the timeline a user watches."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.models import Event, Phase, utcnow
from orchestrator.webhooks import owe


class EventType(StrEnum):
    JOB_SUBMITTED = "job_submitted"
    PHASE_QUEUED = "phase_queued"
    PHASE_STARTED = "phase_started"
    PHASE_FUSED = "phase_fused"
    MODEL_LOADED = "model_loaded"
    METRICS = "metrics"
    CHECKPOINT_SAVED = "checkpoint_saved"
    OOM_RECOVERED = "oom_recovered"
    EVALUATION = "evaluation"
    PHASE_SUCCEEDED = "phase_succeeded"
    PHASE_FAILED = "phase_failed"
    PHASE_CANCELLED = "phase_cancelled"
    PHASE_REQUEUED = "phase_requeued"
    PHASE_RETRYING = "phase_retrying"
    LEASE_EXPIRED = "lease_expired"
    CANCEL_REQUESTED = "cancel_requested"
    BUDGET_CHANGED = "budget_changed"
    JOB_SUCCEEDED = "job_succeeded"
    JOB_FAILED = "job_failed"
    JOB_CANCELLED = "job_cancelled"


def emit(
    session: Session,
    job_id: str,
    type_: EventType,
    *,
    phase: str | None = None,
    attempt: int | None = None,
    **data: Any,
) -> None:
    event = Event(
        job_id=job_id,
        phase=phase,
        attempt=attempt,
        type=type_.value,
        data=data,
        created_at=utcnow(),
    )
    session.add(event)
    owe(session, event)  # the webhook deliveries commit (or roll back) with the event


def emit_for_phase(session: Session, phase: Phase, type_: EventType, **data: Any) -> None:
    """An event about the phase's current attempt, filed under its job."""
    emit(session, phase.job_id, type_, phase=phase.name, attempt=phase.attempt, **data)


def late_events(
    session: Session, job_id: str, *, above: int, upto: int, seen: Collection[int]
) -> Sequence[Event]:
    """The job's events with ids in (above, upto] that are not in `seen`: ones whose
    transaction committed after a later id's did (an id is taken at insert, seen at commit)."""
    ids = session.scalars(
        select(Event.id).where(Event.job_id == job_id, Event.id > above, Event.id <= upto)
    ).all()
    missing = sorted(set(ids) - set(seen))
    if not missing:
        return []
    return session.scalars(select(Event).where(Event.id.in_(missing)).order_by(Event.id)).all()
