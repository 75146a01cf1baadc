"""Same-pool fusion: when the next phase runs on the pool that just finished one, the worker that
finished it runs the next phase too, in the same process (no queue round trip, no second
process start or model load, no download of what it already holds).

Both phases stay phases in SQL: their own attempt, progress, cost, events, and the boundary
checkpoint is published as usual, so either can be re-queued on its own. The fused claim is
taken in the transaction that completes the first phase, and the message that would have sent
the next phase to its queue is withdrawn; if the worker dies afterwards, the lease it now holds
expires and the reaper re-queues the phase as for any other run.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from orchestrator import dispatch, repository
from orchestrator.events import EventType, emit_for_phase
from orchestrator.lifecycle import PhaseStatus
from orchestrator.plan import next_phase
from orchestrator.runs import Claim, claim_phase


def continue_on_same_pool(
    session: Session, finished: Claim, *, worker_id: str, lease_seconds: int
) -> Claim | None:
    """Call after `complete_phase` in the same transaction. Returns the next phase's claim for
    this worker when that phase was queued on the same pool, else None (it goes to its queue)."""
    following = next_phase(finished.phase)
    if following is None:
        return None
    nxt = repository.phase_of(session, finished.job_id, following, lock=True)
    if nxt is None or nxt.status != PhaseStatus.QUEUED or nxt.pool != finished.pool:
        return None
    if not dispatch.withdraw(session, job_id=nxt.job_id, phase=nxt.name, attempt=nxt.attempt):
        return None  # queued by someone else's transaction: its message is already out
    emit_for_phase(session, nxt, EventType.PHASE_FUSED, after=finished.phase, pool=nxt.pool)
    return claim_phase(
        session,
        job_id=nxt.job_id,
        phase=nxt.name,
        attempt=nxt.attempt,
        worker_id=worker_id,
        lease_seconds=lease_seconds,
    )
