"""ORM rows to wire models; cost is computed at read time so a running meter moves."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from orchestrator.cost import phase_cost
from orchestrator.lifecycle import PhaseStatus
from orchestrator.liveness import phase_detail
from orchestrator.models import Job, Phase, PhaseTiming, Pool, utcnow
from orchestrator.pools import pool_queue
from services.api.schemas import ErrorInfo, JobOut, Money, PhaseOut, PhaseTimingOut, Progress


def timing_out(runs: list[PhaseTiming]) -> PhaseTimingOut | None:
    """The latest of a phase's recorded runs, with how many there were."""
    if not runs:
        return None
    latest = max(runs, key=lambda row: (row.attempt, row.id))
    return PhaseTimingOut.model_validate(
        {
            **{k: getattr(latest, k) for k in PhaseTimingOut.model_fields if hasattr(latest, k)},
            "runs": len(runs),
        }
    )


def phase_out(
    phase: Phase,
    pool: Pool,
    runs: list[PhaseTiming] | None = None,
    served_queues: frozenset[str] | None = None,
) -> PhaseOut:
    """`served_queues`: queues a worker was seen on lately, or None when not looked up."""
    now = utcnow()
    error = (
        ErrorInfo(code=phase.error_code, message=phase.error_message or "", param=phase.name)
        if phase.error_code
        else None
    )
    return PhaseOut(
        name=phase.name,
        pool=phase.pool,
        gpu_model=pool.gpu_model,
        status=phase.status,
        status_detail=phase_detail(phase, pool_queue(pool), served_queues, now),
        attempt=phase.attempt,
        progress=Progress(step=phase.step, total_steps=phase.total_steps, epoch=phase.epoch),
        cost=Money(amount=phase_cost(phase, pool, now), currency=pool.currency),
        started_at=phase.started_at,
        last_heartbeat_at=phase.heartbeat_at if phase.status == PhaseStatus.RUNNING else None,
        finished_at=phase.finished_at,
        error=error,
        timing=timing_out(runs or []),
        estimate=phase.estimate,
    )


def job_out(
    job: Job, pools: dict[str, Pool], served_queues: frozenset[str] | None = None
) -> JobOut:
    runs: dict[str, list[PhaseTiming]] = defaultdict(list)
    for row in job.timings:
        runs[row.phase].append(row)
    phases = [phase_out(p, pools[p.pool], runs[p.name], served_queues) for p in job.phases]
    currency = phases[0].cost.currency if phases else "CNY"
    error = (
        ErrorInfo(code=job.error_code, message=job.error_message or "", param=job.error_param)
        if job.error_code
        else None
    )
    return JobOut(
        id=job.id,
        status=job.status,
        dataset_id=job.dataset_id,
        validation_dataset_id=job.validation_dataset_id,
        base_model=job.base_model,
        hyperparameters=job.hyperparameters,
        metadata=job.job_metadata or {},
        created_at=job.created_at,
        finished_at=job.finished_at,
        phases=phases,
        cost=Money(amount=sum((p.cost.amount for p in phases), Decimal(0)), currency=currency),
        max_cost=None if job.max_cost is None else Money(amount=job.max_cost, currency=currency),
        error=error,
        plan=job.plan,
    )
