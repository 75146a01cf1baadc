"""Every query of the job store lives here."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, delete, func, select
from sqlalchemy.orm import Session, joinedload, selectinload

from orchestrator import read_cache
from orchestrator.errors import NotFound
from orchestrator.layout import CheckpointKind, job_dataset_key, job_validation_dataset_key
from orchestrator.lifecycle import PhaseStatus
from orchestrator.models import (
    ApiKey,
    Checkpoint,
    Dataset,
    Event,
    IdempotencyKey,
    Job,
    Phase,
    PhaseTiming,
    Pool,
    Tenant,
    Worker,
)
from orchestrator.timings import COMPONENTS


def pools(session: Session) -> Sequence[Pool]:
    return session.scalars(select(Pool).order_by(Pool.hourly_price)).all()


def pools_by_name(session: Session) -> dict[str, Pool]:
    return {pool.name: pool for pool in pools(session)}


_pool_copies: read_cache.TtlCache[dict[str, Pool]] = read_cache.new_cache()


def pools_to_show(session: Session) -> dict[str, Pool]:
    """Pools by name as a job read shows them: detached copies at most a few seconds old (see
    orchestrator.read_cache), not rows of `session`; never for billing or for changing pools."""
    return _pool_copies.get(session, lambda: _detached_copies(pools(session)))


def _detached_copies(rows: Sequence[Pool]) -> dict[str, Pool]:
    # Transient instances: their attributes never expire, whichever session is gone.
    columns = [c.key for c in Pool.__table__.columns]
    return {row.name: Pool(**{c: getattr(row, c) for c in columns}) for row in rows}


def job_counts(session: Session) -> list[tuple[str, int]]:
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return [(status, count) for status, count in rows]


def phase_counts(session: Session) -> list[tuple[str, str, int]]:
    rows = session.execute(
        select(Phase.pool, Phase.status, func.count()).group_by(Phase.pool, Phase.status)
    ).all()
    return [(pool, status, count) for pool, status, count in rows]


def billed_cost(session: Session) -> list[tuple[str, str, float]]:
    """Cost of finished runs per pool (the meters of running phases are not closed yet)."""
    rows = session.execute(
        select(Phase.pool, Pool.currency, func.coalesce(func.sum(Phase.cost_amount), 0))
        .join(Pool, Pool.name == Phase.pool)
        .group_by(Phase.pool, Pool.currency)
    ).all()
    return [(pool, currency, float(amount)) for pool, currency, amount in rows]


def timing_totals(session: Session) -> list[Row[Any]]:
    """Per (phase, pool): runs, their billed, queue-wait and component seconds, and work done."""
    t = PhaseTiming
    return list(
        session.execute(
            select(
                t.phase,
                t.pool,
                func.count().label("runs"),
                *(
                    func.coalesce(func.sum(getattr(t, f"{name}_s")), 0.0).label(name)
                    for name in (*COMPONENTS, "other", "billed", "queue_wait")
                ),
                func.coalesce(func.sum(t.samples), 0).label("samples"),
                func.coalesce(func.sum(t.tokens), 0).label("tokens"),
            ).group_by(t.phase, t.pool)
        ).all()
    )


def timing_outcomes(session: Session) -> list[tuple[str, str, str, int]]:
    rows = session.execute(
        select(PhaseTiming.phase, PhaseTiming.pool, PhaseTiming.outcome, func.count()).group_by(
            PhaseTiming.phase, PhaseTiming.pool, PhaseTiming.outcome
        )
    ).all()
    return [(phase, pool, outcome, count) for phase, pool, outcome, count in rows]


def api_key_with_hash(session: Session, key_hash: str) -> ApiKey | None:
    """The key with this hash, revoked or expired ones too (their 401 says which), with its
    tenant in the same query: every request asks for both."""
    return session.scalar(
        select(ApiKey).options(joinedload(ApiKey.tenant)).where(ApiKey.key_hash == key_hash)
    )


def api_keys(session: Session, tenant_id: str | None = None) -> Sequence[ApiKey]:
    """Keys, of one tenant or of all, newest first, with their tenants loaded."""
    query = select(ApiKey).options(selectinload(ApiKey.tenant))
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    return session.scalars(query.order_by(ApiKey.created_at.desc(), ApiKey.id)).all()


def api_keys_matching(session: Session, prefix_or_id: str) -> Sequence[ApiKey]:
    """Keys whose id is this, or whose shown prefix starts with it."""
    return session.scalars(
        select(ApiKey)
        .options(selectinload(ApiKey.tenant))
        .where(
            (ApiKey.id == prefix_or_id) | ApiKey.prefix.startswith(prefix_or_id, autoescape=True)
        )
        .order_by(ApiKey.created_at)
    ).all()


def idempotency_record(
    session: Session, tenant_id: str, route: str, key: str
) -> IdempotencyKey | None:
    return session.scalar(
        select(IdempotencyKey).where(
            IdempotencyKey.tenant_id == tenant_id,
            IdempotencyKey.route == route,
            IdempotencyKey.key == key,
        )
    )


def delete_idempotency_records_before(session: Session, before: datetime, *, limit: int) -> None:
    """Forget up to `limit` results recorded before `before`, skipping rows another
    transaction holds (it is replacing them), so the clean-up never waits on a request."""
    old = (
        select(IdempotencyKey.id)
        .where(IdempotencyKey.created_at < before)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.id.in_(old.scalar_subquery())))


def dataset_for_tenant(session: Session, tenant_id: str, dataset_id: str) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    # An empty storage_key: deleted, its row kept for the jobs that name it (orchestrator.datasets).
    if dataset is None or dataset.tenant_id != tenant_id or not dataset.storage_key:
        raise NotFound(f"dataset {dataset_id} not found", param="dataset_id")
    return dataset


def job_for_tenant(session: Session, tenant_id: str, job_id: str) -> Job:
    """The job with what a read shows of it: its phases joined in, its runs' timings in a
    second query (joining both would multiply the rows), whatever their number."""
    job = (
        session.scalars(
            select(Job)
            .where(Job.id == job_id)
            .options(joinedload(Job.phases), selectinload(Job.timings))
        )
        .unique()
        .one_or_none()
    )
    if job is None or job.tenant_id != tenant_id:
        raise NotFound(f"job {job_id} not found", param="job_id")
    return job


def job_by_id(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found", param="job_id")
    return job


def list_jobs(
    session: Session, tenant_id: str, *, status: str | None, limit: int, offset: int
) -> tuple[Sequence[Job], int]:
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status:
        query = query.where(Job.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    jobs = session.scalars(
        query.options(selectinload(Job.phases), selectinload(Job.timings))
        .order_by(Job.created_at.desc(), Job.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return jobs, total


def phase_of(session: Session, job_id: str, name: str, *, lock: bool = False) -> Phase | None:
    query = select(Phase).where(Phase.job_id == job_id, Phase.name == name)
    if lock:
        query = query.with_for_update()
    return session.scalar(query)


def events(session: Session, job_id: str, *, after: int, limit: int) -> Sequence[Event]:
    return session.scalars(
        select(Event)
        .where(Event.job_id == job_id, Event.id > after)
        .order_by(Event.id)
        .limit(limit)
    ).all()


def checkpoints(session: Session, job_id: str) -> Sequence[Checkpoint]:
    return session.scalars(
        select(Checkpoint)
        .where(Checkpoint.job_id == job_id)
        .order_by(Checkpoint.created_at, Checkpoint.step)
    ).all()


def checkpoint_by_key(session: Session, job_id: str, key: str) -> Checkpoint | None:
    return session.scalar(
        select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.key == key)
    )


def best_checkpoint(session: Session, job_id: str, step: int) -> Checkpoint | None:
    return session.scalar(
        select(Checkpoint)
        .where(
            Checkpoint.job_id == job_id,
            Checkpoint.kind == CheckpointKind.BEST,
            Checkpoint.step == step,
        )
        .order_by(Checkpoint.created_at.desc())
        .limit(1)
    )


def checkpoints_of_kinds(
    session: Session, job_id: str, phase: str, kinds: Collection[str]
) -> Sequence[Checkpoint]:
    """The phase's checkpoints of these kinds, newest first."""
    return session.scalars(
        select(Checkpoint)
        .where(Checkpoint.job_id == job_id, Checkpoint.phase == phase, Checkpoint.kind.in_(kinds))
        .order_by(Checkpoint.created_at.desc(), Checkpoint.step.desc())
    ).all()


def expired_leases(session: Session, now: datetime, limit: int | None = None) -> Sequence[Phase]:
    """Running phases whose lease ran out, longest expired first, each with its job and the
    job's phases (the reaper reads both for every one)."""
    return session.scalars(
        select(Phase)
        .where(Phase.status == PhaseStatus.RUNNING, Phase.lease_expires_at < now)
        .order_by(Phase.lease_expires_at)
        .limit(limit)
        .options(selectinload(Phase.job).selectinload(Job.phases))
        .with_for_update(skip_locked=True)
    ).all()


def stale_queued(session: Session, before: datetime) -> Sequence[Phase]:
    """Queued phases whose message was last sent before `before`."""
    return session.scalars(
        select(Phase).where(
            Phase.status == PhaseStatus.QUEUED,
            func.coalesce(Phase.sent_at, Phase.queued_at) < before,
        )
    ).all()


def tenants(session: Session) -> Sequence[Tenant]:
    return session.scalars(select(Tenant).order_by(Tenant.name)).all()


def tenant_by_name(session: Session, name: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.name == name))


def tenant_billed_cost(session: Session, tenant_id: str, since: datetime) -> Decimal:
    """Cost already billed to phases of the tenant's jobs submitted since `since`."""
    amount = session.scalar(
        select(func.coalesce(func.sum(Phase.cost_amount), 0))
        .join(Job, Job.id == Phase.job_id)
        .where(Job.tenant_id == tenant_id, Job.created_at >= since)
    )
    return Decimal(amount or 0)


def tenant_running_phases(session: Session, tenant_id: str, since: datetime) -> Sequence[Phase]:
    return session.scalars(
        select(Phase)
        .join(Job, Job.id == Phase.job_id)
        .where(
            Job.tenant_id == tenant_id, Job.created_at >= since, Phase.status == PhaseStatus.RUNNING
        )
    ).all()


def workers_seen_since(session: Session, since: datetime) -> Sequence[Worker]:
    return session.scalars(select(Worker).where(Worker.last_seen_at >= since)).all()


def forget_workers_seen_before(session: Session, before: datetime) -> None:
    session.execute(delete(Worker).where(Worker.last_seen_at < before))


def attempt_is_queued(session: Session, job_id: str, phase: str, attempt: int) -> bool:
    """Whether a delivery of this attempt could still claim the phase."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Phase)
            .where(
                Phase.job_id == job_id,
                Phase.name == phase,
                Phase.attempt == attempt,
                Phase.status == PhaseStatus.QUEUED,
            )
        )
        == 1
    )


def recent_timings(
    session: Session,
    phases: Collection[str],
    pool: str,
    model_key: str,
    lora_targets: str | None,
    micro_batch: int | None,
    *,
    limit: int,
) -> Sequence[PhaseTiming]:
    """The newest successful runs of these phases on a pool for a model (and, when given, the
    same LoRA targets and micro-batch): what learned profiles are made of."""
    query = select(PhaseTiming).where(
        PhaseTiming.phase.in_(phases),
        PhaseTiming.pool == pool,
        PhaseTiming.model_key == model_key,
        PhaseTiming.outcome == PhaseStatus.SUCCEEDED,
    )
    if lora_targets is not None:
        query = query.where(PhaseTiming.lora_targets == lora_targets)
    if micro_batch is not None:
        query = query.where(PhaseTiming.micro_batch == micro_batch)
    return session.scalars(
        query.order_by(PhaseTiming.created_at.desc(), PhaseTiming.id.desc()).limit(limit)
    ).all()


def recent_artifact_sizes(session: Session, model_key: str, *, limit: int) -> list[tuple[int, int]]:
    """(artifact bytes, samples) of the model's newest successful preprocess runs."""
    query = (
        select(Checkpoint.bytes, PhaseTiming.samples)
        .join(
            Checkpoint,
            (Checkpoint.job_id == PhaseTiming.job_id)
            & (Checkpoint.phase == PhaseTiming.phase)
            & (Checkpoint.attempt == PhaseTiming.attempt),
        )
        .where(
            PhaseTiming.phase == "preprocess",
            PhaseTiming.model_key == model_key,
            PhaseTiming.outcome == PhaseStatus.SUCCEEDED,
            Checkpoint.kind == CheckpointKind.ARTIFACT,
        )
    )
    rows = session.execute(
        query.order_by(PhaseTiming.created_at.desc(), PhaseTiming.id.desc()).limit(limit)
    )
    return [(int(nbytes), int(samples)) for nbytes, samples in rows]


def measured_model_keys(session: Session) -> list[str]:
    rows = session.scalars(
        select(PhaseTiming.model_key)
        .where(PhaseTiming.model_key.is_not(None), PhaseTiming.outcome == PhaseStatus.SUCCEEDED)
        .distinct()
    )
    return sorted(k for k in rows if k)


def queued_phases_by_pool(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Phase.pool, func.count())
        .where(Phase.status == PhaseStatus.QUEUED)
        .group_by(Phase.pool)
    ).all()
    return {pool: count for pool, count in rows}


def recent_billed_seconds(session: Session, pool: str, *, limit: int) -> list[float]:
    """Billed seconds of the pool's newest finished runs, for queue-wait estimates."""
    return list(
        session.scalars(
            select(PhaseTiming.billed_s)
            .where(PhaseTiming.pool == pool, PhaseTiming.billed_s > 0)
            .order_by(PhaseTiming.created_at.desc(), PhaseTiming.id.desc())
            .limit(limit)
        ).all()
    )


def stored_object_refs(session: Session) -> tuple[list[str | None], list[tuple[str, str, int]]]:
    """Every object key or prefix a row points to (checkpoints, phase outputs and resume
    points, served adapters), and (job, phase, attempt) of every run queued or in progress."""
    refs: list[str | None] = list(session.scalars(select(Checkpoint.key)))
    for output, resume in session.execute(select(Phase.output_key, Phase.resume_key)):
        refs += [output, resume]
    refs += list(session.scalars(select(Job.adapter_key)))
    for job_id, validation_dataset_id in session.execute(select(Job.id, Job.validation_dataset_id)):
        refs.append(job_dataset_key(job_id))
        if validation_dataset_id is not None:
            refs.append(job_validation_dataset_key(job_id))
    in_flight = (PhaseStatus.QUEUED, PhaseStatus.RUNNING)
    live = session.execute(
        select(Phase.job_id, Phase.name, Phase.attempt).where(Phase.status.in_(in_flight))
    ).all()
    return refs, [(job_id, name, attempt) for job_id, name, attempt in live]
