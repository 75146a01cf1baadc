"""What a worker does through the orchestrator: claim a phase, report, record, finish.

Every write of a run is fenced by its attempt: a stale or duplicate run raises LeaseLost
instead of overwriting newer state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, update
from sqlalchemy.orm import Session

from orchestrator import layout, repository
from orchestrator.cost import close_meter
from orchestrator.errors import LeaseLost, PhaseNotClaimable
from orchestrator.events import EventType, emit_for_phase
from orchestrator.hyperparameters import Hyperparameters
from orchestrator.layout import RESUMABLE_KINDS, CheckpointKind
from orchestrator.lifecycle import PhaseStatus
from orchestrator.models import Checkpoint, Dataset, Phase, utcnow
from orchestrator.phase_moves import (
    cancel_waiting,
    mark_failed,
    move,
    queue_phase,
    refresh_job_status,
)
from orchestrator.plan import epoch_range, next_phase, previous_phase
from orchestrator.timings import RunTiming, record_run_timing


@dataclass(frozen=True)
class Claim:
    """Everything a worker needs to run one attempt of a phase."""

    job_id: str
    phase: str
    attempt: int
    pool: str
    base_model: str
    # Validated once here: a job stored before a field existed gets that field's default.
    hyperparameters: Hyperparameters
    # Keys in the object store (see orchestrator.layout).
    input_key: str  # the previous phase's recorded output (or the dataset for preprocess)
    artifact_key: str  # the preprocess phase's recorded output ("" for preprocess itself)
    resume_key: str  # a checkpoint of an earlier run of this phase to continue from, or ""
    # The job's best checkpoint as this run starts (the warmup's, or an earlier attempt's of
    # this phase), or "": what a final phase exports when its own epochs never beat it.
    best_key: str
    run_prefix: str  # where this attempt writes its checkpoints and its output
    start_epoch: int
    end_epoch: int
    # For the exported adapter's model card: the data set the job was submitted with.
    dataset_id: str = ""
    dataset_name: str = ""  # the uploaded file's name ("" once the upload is deleted)
    # The job's copy of its validation data set, every sample of it held out, and that data
    # set's id; both "" when preprocess holds out samples of the training data set instead.
    validation_input_key: str = ""
    validation_dataset_id: str = ""


def claim_phase(
    session: Session, *, job_id: str, phase: str, attempt: int, worker_id: str, lease_seconds: int
) -> Claim:
    now = utcnow()
    # The conditional update is the claim: of two deliveries, exactly one sees rowcount 1.
    result = session.execute(
        update(Phase)
        .where(
            Phase.job_id == job_id,
            Phase.name == phase,
            Phase.attempt == attempt,
            Phase.status == PhaseStatus.QUEUED,
        )
        .values(
            status=PhaseStatus.RUNNING,
            worker_id=worker_id,
            started_at=now,
            heartbeat_at=now,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
        )
        .execution_options(synchronize_session=False)
    )
    if cast(CursorResult[Any], result).rowcount != 1:
        raise PhaseNotClaimable(f"phase {phase} of job {job_id} attempt {attempt} is not queued")
    job = repository.job_by_id(session, job_id)
    session.refresh(job)
    for p in job.phases:
        session.refresh(p)
    row = next(p for p in job.phases if p.name == phase)
    prev = previous_phase(phase)
    input_key = layout.job_dataset_key(job_id)
    if prev is not None:
        prev_row = next(p for p in job.phases if p.name == prev)
        if prev_row.status != PhaseStatus.SUCCEEDED or not prev_row.output_key:
            raise PhaseNotClaimable(f"phase {prev} of job {job_id} has no recorded output")
        input_key = prev_row.output_key
    artifact_key = "" if phase == "preprocess" else (job.phases[0].output_key or "")
    emit_for_phase(session, row, EventType.PHASE_STARTED, worker_id=worker_id, pool=row.pool)
    refresh_job_status(session, job, now)
    hyperparameters = Hyperparameters.model_validate(job.hyperparameters)
    epochs = epoch_range(phase, hyperparameters)
    dataset = session.get(Dataset, job.dataset_id)
    return Claim(
        job_id=job_id,
        phase=phase,
        attempt=attempt,
        pool=row.pool,
        base_model=job.base_model,
        hyperparameters=hyperparameters,
        input_key=input_key,
        artifact_key=artifact_key,
        resume_key=row.resume_key or "",
        best_key=_best_key(session, job_id, start=row.resume_key or input_key),
        run_prefix=layout.run_prefix(job_id, phase, attempt),
        start_epoch=epochs.start,
        end_epoch=epochs.end,
        dataset_id=job.dataset_id,
        dataset_name=dataset.filename if dataset is not None else "",
        validation_input_key=(
            layout.job_validation_dataset_key(job_id) if job.validation_dataset_id else ""
        ),
        validation_dataset_id=job.validation_dataset_id or "",
    )


def _best_key(session: Session, job_id: str, *, start: str) -> str:
    """The best checkpoint that the checkpoint a run starts from names: every checkpoint's
    manifest carries the job's best so far (an artifact or a data set names none)."""
    row = repository.checkpoint_by_key(session, job_id, start)
    step = ((row.manifest or {}).get("best") or {}).get("step") if row else None
    best = repository.best_checkpoint(session, job_id, step) if step is not None else None
    return best.key if best else ""


def attempts_used(phase: Phase) -> int:
    """Attempts that count against max_attempts: every run so far (the current one included)
    but those a stopping worker handed back, which were not the phase's fault."""
    return phase.attempt - (phase.handbacks or 0)


def _fenced_phase(session: Session, claim: Claim) -> Phase:
    phase = repository.phase_of(session, claim.job_id, claim.phase, lock=True)
    if phase is None or phase.attempt != claim.attempt or phase.status != PhaseStatus.RUNNING:
        raise LeaseLost(
            f"phase {claim.phase} of job {claim.job_id} attempt {claim.attempt} "
            "is no longer this run's"
        )
    return phase


def heartbeat(session: Session, claim: Claim, *, lease_seconds: int) -> bool:
    """Renew the lease; returns True when the user asked to cancel the job."""
    phase = _fenced_phase(session, claim)
    _renew(phase, lease_seconds)
    return phase.job.cancel_requested_at is not None


def _renew(phase: Phase, lease_seconds: int) -> None:
    now = utcnow()
    phase.heartbeat_at = now
    phase.lease_expires_at = now + timedelta(seconds=lease_seconds)


def report_progress(
    session: Session,
    claim: Claim,
    *,
    step: int,
    total_steps: int,
    epoch: int,
    metrics: dict[str, float],
    lease_seconds: int,
) -> bool:
    phase = _fenced_phase(session, claim)
    phase.step, phase.total_steps, phase.epoch = step, total_steps, epoch
    _renew(phase, lease_seconds)
    emit_for_phase(
        session,
        phase,
        EventType.METRICS,
        step=step,
        total_steps=total_steps,
        epoch=epoch,
        **metrics,
    )
    return phase.job.cancel_requested_at is not None


def record_checkpoint(
    session: Session,
    claim: Claim,
    *,
    kind: str,
    key: str,
    step: int,
    size: int,
    manifest: dict[str, Any],
) -> None:
    """Called after every object of the checkpoint is uploaded: only now does it exist."""
    kind = CheckpointKind(kind)
    phase = _fenced_phase(session, claim)
    if kind in RESUMABLE_KINDS:  # a best, the artifact and the export are outputs instead
        phase.resume_key = key
    # A step redone after an out-of-memory rollback writes its checkpoint again: same key.
    row = repository.checkpoint_by_key(session, claim.job_id, key) or Checkpoint(
        job_id=claim.job_id, key=key
    )
    row.phase, row.attempt, row.kind = claim.phase, claim.attempt, kind
    row.step, row.bytes, row.manifest = step, size, manifest
    session.add(row)
    emit_for_phase(
        session,
        phase,
        EventType.CHECKPOINT_SAVED,
        kind=kind,
        key=key,
        step=step,
        bytes=size,
    )


def prune_checkpoints(session: Session, claim: Claim, *, keep: int) -> list[str]:
    """Forget all but the newest `keep` resumable checkpoints of the phase (every attempt) and
    all but its newest best (a best is written only on improvement, so the newest is the best);
    returns their keys so the caller deletes the objects once this commits."""
    _fenced_phase(session, claim)
    # A phase's final checkpoint is its output, not a candidate for pruning.
    rolling = repository.checkpoints_of_kinds(
        session, claim.job_id, claim.phase, RESUMABLE_KINDS - {CheckpointKind.FINAL}
    )
    bests = repository.checkpoints_of_kinds(
        session, claim.job_id, claim.phase, {CheckpointKind.BEST}
    )
    stale = [*rolling[keep:], *bests[1:]]
    for row in stale:
        session.delete(row)
    return [row.key for row in stale]


def record_event(session: Session, claim: Claim, type_: EventType, data: dict[str, Any]) -> None:
    """An event from inside a run (e.g. an out-of-memory recovery), fenced like every write."""
    emit_for_phase(session, _fenced_phase(session, claim), type_, **data)


def _release(
    session: Session, claim: Claim, outcome: PhaseStatus, timing: RunTiming | None
) -> tuple[Phase, datetime]:
    """Close the run's meter and write its timing row, before the phase moves to `outcome`."""
    phase = _fenced_phase(session, claim)
    now = utcnow()
    billed = close_meter(phase, repository.pools_by_name(session)[phase.pool], now)
    record_run_timing(session, phase, outcome=outcome, billed_s=billed, timing=timing, now=now)
    return phase, now


def _finish(session: Session, claim: Claim, status: PhaseStatus, timing: RunTiming | None) -> Phase:
    phase, now = _release(session, claim, status, timing)
    move(phase, status)
    phase.finished_at = now
    phase.lease_expires_at = None
    return phase


def complete_phase(
    session: Session,
    claim: Claim,
    *,
    output_key: str,
    summary: dict[str, Any],
    timing: RunTiming | None = None,
) -> None:
    """Record the output; queue the next phase (sent after commit) unless a cancel is pending."""
    phase = _finish(session, claim, PhaseStatus.SUCCEEDED, timing)
    phase.output_key = output_key
    job = phase.job
    emit_for_phase(
        session,
        phase,
        EventType.PHASE_SUCCEEDED,
        output_key=output_key,
        cost=str(phase.cost_amount),
        **summary,
    )
    following = next_phase(phase.name)
    if following is None:  # the relay's last phase: its output is the adapter served now
        job.adapter_key = output_key
    else:
        nxt = next(p for p in job.phases if p.name == following)
        if job.cancel_requested_at is not None:
            # cancel_job has usually closed it already; only a phase still waiting moves.
            cancel_waiting(session, job, nxt, now=phase.finished_at or utcnow())
        else:
            queue_phase(session, job, nxt, now=phase.finished_at or utcnow(), reason="handoff")
    refresh_job_status(session, job)


def fail_phase(
    session: Session,
    claim: Claim,
    *,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    timing: RunTiming | None = None,
) -> None:
    phase, now = _release(session, claim, PhaseStatus.FAILED, timing)
    mark_failed(session, phase, code=code, message=message, now=now, details=details)
    refresh_job_status(session, phase.job, now)


def retry_or_fail_phase(
    session: Session,
    claim: Claim,
    *,
    code: str,
    message: str,
    max_attempts: int,
    timing: RunTiming | None = None,
) -> bool:
    """A failure that another attempt may not meet (a store that stopped answering): queue the
    next attempt, which resumes from the latest recorded checkpoint, while attempts remain and
    nobody asked to cancel; otherwise fail the phase. True when it was queued again."""
    phase = _fenced_phase(session, claim)
    if phase.job.cancel_requested_at is not None or attempts_used(phase) >= max_attempts:
        fail_phase(session, claim, code=code, message=message, timing=timing)
        return False
    phase, now = _release(session, claim, PhaseStatus.QUEUED, timing)
    emit_for_phase(
        session,
        phase,
        EventType.PHASE_RETRYING,
        code=code,
        message=message,
        attempts=f"{attempts_used(phase)} of {max_attempts}",
    )
    queue_phase(session, phase.job, phase, now=now, reason=code)
    refresh_job_status(session, phase.job, now)
    return True


def acknowledge_cancel(session: Session, claim: Claim, *, timing: RunTiming | None = None) -> None:
    """The run saw the cancel request, saved its state and stopped."""
    phase = _finish(session, claim, PhaseStatus.CANCELLED, timing)
    emit_for_phase(session, phase, EventType.PHASE_CANCELLED, step=phase.step)
    refresh_job_status(session, phase.job)


def hand_back_phase(
    session: Session,
    claim: Claim,
    *,
    reason: str = "worker_shutdown",
    timing: RunTiming | None = None,
) -> None:
    """The worker is going away (preemption, scale-down): the run saved a checkpoint and stopped,
    and the phase is queued again as a new attempt that resumes from it elsewhere. The run is
    billed up to now, once. It is not the phase's fault, so it is queued again whatever
    attempts it has used, and it uses none: the attempt number (the fencing token) goes up,
    and so does the phase's count of hand-backs, which every check of attempts left subtracts
    (attempts_used). A job with a cancel request is cancelled instead."""
    phase = _fenced_phase(session, claim)
    if phase.job.cancel_requested_at is not None:
        acknowledge_cancel(session, claim, timing=timing)
        return
    phase, now = _release(session, claim, PhaseStatus.QUEUED, timing)
    phase.handbacks = (phase.handbacks or 0) + 1
    emit_for_phase(
        session,
        phase,
        EventType.PHASE_REQUEUED,
        reason=reason,
        step=phase.step,
        resume_key=phase.resume_key,
        worker_id=phase.worker_id,
    )
    queue_phase(session, phase.job, phase, now=now, reason=reason)
    refresh_job_status(session, phase.job, now)
