"""The job and phase lifecycle: one transition table; every other move is an error.

orchestrator.phase_moves applies these moves to stored phases."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from orchestrator.errors import IllegalTransition


class PhaseStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


P = PhaseStatus

# (from, to) -> why the move exists. Anything missing here raises IllegalTransition.
PHASE_TRANSITIONS: dict[tuple[PhaseStatus, PhaseStatus], str] = {
    (P.PENDING, P.QUEUED): "the previous phase succeeded (or this is the first phase)",
    (P.PENDING, P.CANCELLED): "the job was cancelled before this phase ran",
    (P.QUEUED, P.RUNNING): "a worker claimed the phase",
    (P.QUEUED, P.CANCELLED): "the job was cancelled while the phase waited in its queue",
    (P.QUEUED, P.FAILED): "the phase could not be dispatched or ran out of attempts",
    (P.RUNNING, P.SUCCEEDED): "the worker finished and recorded its output",
    (P.RUNNING, P.FAILED): "the worker reported an error",
    (P.RUNNING, P.CANCELLED): "the worker saw the cancel request and stopped",
    (P.RUNNING, P.QUEUED): "the lease expired and the reaper re-queued the phase",
    (P.FAILED, P.QUEUED): "requeue",
    (P.CANCELLED, P.QUEUED): "requeue",
    (P.SUCCEEDED, P.QUEUED): "requeue of a finished phase",
    (P.SUCCEEDED, P.PENDING): "an earlier phase was requeued; this one runs again after it",
    (P.FAILED, P.PENDING): "an earlier phase was requeued; this one runs again after it",
    (P.CANCELLED, P.PENDING): "an earlier phase was requeued; this one runs again after it",
}

TERMINAL_PHASE = frozenset({P.SUCCEEDED, P.FAILED, P.CANCELLED})
TERMINAL_JOB = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def check_phase_transition(name: str, current: str, target: str) -> None:
    if (PhaseStatus(current), PhaseStatus(target)) not in PHASE_TRANSITIONS:
        raise IllegalTransition(
            f"phase '{name}' cannot move from {current} to {target}", param=name
        )


def derive_job_status(phase_statuses: Sequence[str], *, cancel_requested: bool) -> JobStatus:
    """A job's status follows from its phases (in order) and whether a cancel is pending."""
    statuses = [PhaseStatus(s) for s in phase_statuses]
    if all(s is P.SUCCEEDED for s in statuses):
        return JobStatus.SUCCEEDED
    if P.RUNNING in statuses:
        return JobStatus.CANCELLING if cancel_requested else JobStatus.RUNNING
    if P.FAILED in statuses:
        return JobStatus.FAILED
    if P.CANCELLED in statuses:
        return JobStatus.CANCELLED
    if cancel_requested:
        return JobStatus.CANCELLED
    # Pending/queued phases after a succeeded one: the relay is under way.
    if P.SUCCEEDED in statuses:
        return JobStatus.RUNNING
    return JobStatus.QUEUED
