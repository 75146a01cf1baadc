"""Finds runs whose lease expired (worker died) and queued phases whose message was lost."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.orm import Session

from orchestrator import dispatch, repository
from orchestrator.cost import close_meter
from orchestrator.events import EventType, emit
from orchestrator.models import utcnow
from orchestrator.relay import mark_failed, phase_message, queue_phase, refresh_job_status
from orchestrator.timings import record_run_timing

logger = logging.getLogger(__name__)


def reap(session: Session, *, max_attempts: int, resend_after_seconds: int) -> int:
    """Re-queue (bounded by max_attempts) or fail expired runs; re-send stale queued phases."""
    now = utcnow()
    pools = repository.pools_by_name(session)
    handled = 0
    for phase in repository.expired_leases(session, now):
        job = phase.job
        billed = close_meter(phase, pools[phase.pool], now)
        retry = phase.attempt < max_attempts
        # The dead worker's measurements died with it; the billed seconds must not.
        record_run_timing(session, phase, outcome="queued" if retry else "failed",
                          billed_s=billed, timing=None, now=now)
        emit(
            session,
            job.id,
            EventType.LEASE_EXPIRED,
            phase=phase.name,
            attempt=phase.attempt,
            worker_id=phase.worker_id,
        )
        if not retry:
            message = (f"the worker stopped renewing its lease; {phase.attempt} attempts used "
                       f"of {max_attempts}")
            mark_failed(session, phase, code="lease_expired", message=message, now=now)
        else:
            queue_phase(session, job, phase, now=now, reason="lease_expired")
        refresh_job_status(session, job, now)
        handled += 1
    # A message lost between commit and send (or a broker flush) would leave a phase queued
    # forever; sending it again is safe because only one delivery can claim the attempt.
    for phase in repository.stale_queued(session, now - timedelta(seconds=resend_after_seconds)):
        dispatch.defer(session, phase_message(session, phase))
        phase.queued_at = now
        handled += 1
    if handled:
        logger.info("reaper handled %d phases", handled)
    return handled
