"""Finds runs whose lease expired (worker died) and queued phases whose message was lost.

Every action is logged with its job, phase and attempt, besides the job event a user sees.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from orchestrator import dispatch, repository
from orchestrator.cost import as_utc, close_meter
from orchestrator.db import session_scope
from orchestrator.events import EventType, emit_for_phase
from orchestrator.leader import Round, take_round
from orchestrator.lifecycle import PhaseStatus
from orchestrator.liveness import record_workers
from orchestrator.models import Phase, Pool, utcnow
from orchestrator.phase_moves import (
    mark_failed,
    move,
    phase_message,
    queue_phase,
    refresh_job_status,
)
from orchestrator.runs import attempts_used
from orchestrator.timings import record_run_timing

logger = logging.getLogger(__name__)


def reap(session: Session, *, max_attempts: int, resend_after_seconds: int) -> int:
    """Close (cancel pending), re-queue (bounded by max_attempts) or fail expired runs, all in
    this transaction; re-send stale queued phases."""
    now = utcnow()
    dispatcher = dispatch.get_dispatcher()
    _record_live_workers(session, dispatcher, now)
    handled = reap_expired(session, max_attempts=max_attempts, now=now)
    return handled + _resend_lost(
        session, dispatcher, now=now, resend_after=timedelta(seconds=resend_after_seconds)
    )


def reap_in_rounds(
    *, max_attempts: int, resend_after_seconds: int, batch: int, max_rounds: int = 1000
) -> int | None:
    """The API's reaper round: expired runs in transactions of at most `batch` each, every one
    under the reaper's leader lock, so that a mass expiry (a pool's workers all gone) neither
    holds one transaction and its row locks for the whole of it nor waits for all of it before
    the first re-queued phase is sent; then stale queued phases. Returns how many were
    handled, or None when another replica holds the round."""
    dispatcher = dispatch.get_dispatcher()
    handled = 0
    for round_number in range(max_rounds):
        with session_scope() as session:
            if not take_round(session, Round.REAPER):
                return handled if round_number else None
            now = utcnow()
            if round_number == 0:
                _record_live_workers(session, dispatcher, now)
            count = reap_expired(session, max_attempts=max_attempts, now=now, limit=batch)
            handled += count
            if count < batch:
                resend_after = timedelta(seconds=resend_after_seconds)
                return handled + _resend_lost(
                    session, dispatcher, now=now, resend_after=resend_after
                )
    logger.warning("reaper: expired runs still left after %d transactions", max_rounds)
    return handled


def _record_live_workers(session: Session, dispatcher: dispatch.Dispatcher, now: datetime) -> None:
    seen = dispatcher.live_workers()
    if seen is not None:
        record_workers(session, seen, now)


def reap_expired(
    session: Session, *, max_attempts: int, now: datetime, limit: int | None = None
) -> int:
    """The expired runs (at most `limit`, longest expired first): each closed as cancelled,
    re-queued or failed."""
    pools = repository.pools_by_name(session)
    expired = repository.expired_leases(session, now, limit)
    for phase in expired:
        _reap_expired(session, phase, pools[phase.pool], now=now, max_attempts=max_attempts)
    return len(expired)


def _resend_lost(
    session: Session, dispatcher: dispatch.Dispatcher, *, now: datetime, resend_after: timedelta
) -> int:
    """A message lost between commit and send (or in a broker flush) would leave its phase
    queued forever. Sending it again is safe (only one delivery can claim the attempt) but
    not free: every duplicate costs a worker a delivery. So a message is sent again only when
    the broker no longer holds it, or, where the broker cannot be asked, with a doubling
    interval between sends."""
    stale = repository.stale_queued(session, now - resend_after)
    if not stale:
        return 0
    pools = repository.pools_by_name(session)  # one read, not one per phase
    messages = [(phase, phase_message(session, phase, pools.get(phase.pool))) for phase in stale]
    waiting = dispatcher.waiting_task_ids({message.route for _, message in messages})
    resent = 0
    for phase, message in messages:
        if waiting is not None and message.task_id in waiting:
            continue  # in its queue (behind other work, or no worker serves it): not lost
        if waiting is None and not _backoff_over(phase, now, resend_after):
            continue
        dispatch.defer(session, message)
        phase.sent_at, phase.sends = now, (phase.sends or 0) + 1
        logger.info(
            "reaper: re-sent job %s phase %s attempt %d to %s (%s; send %d)",
            phase.job_id,
            phase.name,
            phase.attempt,
            message.route,
            "not in the broker" if waiting is not None else "broker not asked",
            phase.sends,
        )
        resent += 1
    return resent


def _backoff_over(phase: Phase, now: datetime, resend_after: timedelta) -> bool:
    last: datetime = as_utc(phase.sent_at or phase.queued_at or now)
    doublings = min(max((phase.sends or 1) - 1, 0), 6)
    return bool(now - last >= resend_after * 2**doublings)


def _reap_expired(
    session: Session, phase: Phase, pool: Pool, *, now: datetime, max_attempts: int
) -> None:
    job = phase.job
    billed = close_meter(phase, pool, now)
    if job.cancel_requested_at is not None:
        outcome = PhaseStatus.CANCELLED  # the user asked to stop: never run it again
    elif attempts_used(phase) < max_attempts:  # hand-backs use no attempt
        outcome = PhaseStatus.QUEUED
    else:
        outcome = PhaseStatus.FAILED
    # The dead worker's measurements died with it; the billed seconds must not.
    record_run_timing(session, phase, outcome=outcome, billed_s=billed, timing=None, now=now)
    emit_for_phase(session, phase, EventType.LEASE_EXPIRED, worker_id=phase.worker_id)
    if outcome is PhaseStatus.CANCELLED:
        move(phase, PhaseStatus.CANCELLED)
        phase.finished_at = now
        phase.lease_expires_at = None
        emit_for_phase(
            session, phase, EventType.PHASE_CANCELLED, step=phase.step, reason="lease_expired"
        )
    elif outcome is PhaseStatus.FAILED:
        message = (
            f"the worker stopped renewing its lease; {attempts_used(phase)} attempts used "
            f"of {max_attempts}"
        )
        mark_failed(session, phase, code="lease_expired", message=message, now=now)
    logger.warning(
        "reaper: lease of job %s phase %s attempt %d (worker %s) expired; %s",
        job.id,
        phase.name,
        phase.attempt,
        phase.worker_id,
        {
            PhaseStatus.CANCELLED: "closed as cancelled, the job has a cancel request",
            PhaseStatus.FAILED: f"failed, {max_attempts} attempts used",
            PhaseStatus.QUEUED: "re-queued",
        }[outcome],
    )
    if outcome is PhaseStatus.QUEUED:
        queue_phase(session, job, phase, now=now, reason="lease_expired")
    refresh_job_status(session, job, now)
