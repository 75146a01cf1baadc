"""Typed job events: the timeline a user watches."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from orchestrator.models import Event, Phase, utcnow


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
    session.add(
        Event(
            job_id=job_id,
            phase=phase,
            attempt=attempt,
            type=type_.value,
            data=data,
            created_at=utcnow(),
        )
    )


def emit_for_phase(session: Session, phase: Phase, type_: EventType, **data: Any) -> None:
    """An event about the phase's current attempt, filed under its job."""
    emit(session, phase.job_id, type_, phase=phase.name, attempt=phase.attempt, **data)
