"""The lifecycle's moves applied to stored phases, shared by user actions, worker reports and
the reaper. Each move is checked against the transition table (orchestrator.lifecycle), then
does what it entails: a queued attempt's task is sent after commit, a failure becomes the job's
error, and the job's status follows its phases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from orchestrator import dispatch
from orchestrator.events import EventType, emit, emit_for_phase
from orchestrator.lifecycle import (
    TERMINAL_JOB,
    JobStatus,
    PhaseStatus,
    check_phase_transition,
    derive_job_status,
)
from orchestrator.models import Job, Phase, Pool, utcnow
from orchestrator.pools import pool_queue, queue_of


def move(phase: Phase, target: str) -> None:
    """The only place a phase's status changes; the transition table decides."""
    check_phase_transition(phase.name, phase.status, target)
    phase.status = target


def queue_phase(session: Session, job: Job, phase: Phase, *, now: datetime, reason: str) -> None:
    """Queue a new attempt of the phase and send its task once the transaction commits."""
    move(phase, PhaseStatus.QUEUED)
    phase.attempt += 1
    phase.queued_at = now
    phase.started_at = None
    phase.finished_at = None
    phase.worker_id = None
    phase.lease_expires_at = None
    phase.heartbeat_at = None
    phase.error_code = phase.error_message = None
    phase.step = 0
    phase.total_steps = 0
    phase.sent_at, phase.sends = now, 1
    emit_for_phase(
        session,
        phase,
        EventType.PHASE_QUEUED,
        pool=phase.pool,
        reason=reason,
    )
    dispatch.defer(session, phase_message(session, phase))


def phase_message(
    session: Session, phase: Phase, pool: Pool | None = None
) -> dispatch.PhaseMessage:
    """The task for the phase's current attempt, routed to its pool's queue as stored now
    (`pool`: its row, read in this transaction already)."""
    return dispatch.PhaseMessage(
        job_id=phase.job_id,
        phase=phase.name,
        attempt=phase.attempt,
        pool=phase.pool,
        queue=pool_queue(pool) if pool is not None else queue_of(session, phase.pool),
    )


def cancel_waiting(session: Session, job: Job, phase: Phase, *, now: datetime) -> None:
    """A pending or queued phase of a job being cancelled stops before it runs; a phase
    already closed is left as it is, so a cancel and a finishing run never collide."""
    if phase.status not in (PhaseStatus.PENDING, PhaseStatus.QUEUED):
        return
    was_queued = phase.status == PhaseStatus.QUEUED
    move(phase, PhaseStatus.CANCELLED)
    phase.finished_at = now
    if was_queued:
        emit_for_phase(session, phase, EventType.PHASE_CANCELLED)


def mark_failed(
    session: Session,
    phase: Phase,
    *,
    code: str,
    message: str,
    now: datetime,
    details: list[dict[str, Any]] | None = None,
) -> None:
    """Fail the phase for good and make its error the job's error."""
    move(phase, PhaseStatus.FAILED)
    phase.finished_at = now
    phase.lease_expires_at = None
    phase.error_code, phase.error_message = code, message
    job = phase.job
    job.error_code, job.error_message, job.error_param = code, message, phase.name
    emit_for_phase(
        session,
        phase,
        EventType.PHASE_FAILED,
        code=code,
        message=message,
        **({"details": details} if details else {}),
    )


def refresh_job_status(session: Session, job: Job, now: datetime | None = None) -> None:
    """Recompute the stored job status from its phases; emit the job's terminal event once."""
    now = now or utcnow()
    before = job.status
    status = derive_job_status(
        [p.status for p in job.phases], cancel_requested=job.cancel_requested_at is not None
    )
    job.status = status.value
    job.updated_at = now
    if status in TERMINAL_JOB:
        job.finished_at = job.finished_at or now
    else:
        job.finished_at = None
    if status != before and status in TERMINAL_JOB:
        terminal_event = {
            JobStatus.SUCCEEDED: EventType.JOB_SUCCEEDED,
            JobStatus.FAILED: EventType.JOB_FAILED,
            JobStatus.CANCELLED: EventType.JOB_CANCELLED,
        }[status]
        emit(session, job.id, terminal_event)
