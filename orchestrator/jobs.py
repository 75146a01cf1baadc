"""What a user does with jobs: submit, cancel, requeue a phase."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from orchestrator import repository
from orchestrator.base_models import check_fits_model, resolve_base_model
from orchestrator.budgets import check_spending_limit
from orchestrator.datasets import dataset_of_tenant
from orchestrator.errors import Conflict, InvalidRequest, NotFound
from orchestrator.events import EventType, emit, emit_for_phase
from orchestrator.hyperparameters import Hyperparameters
from orchestrator.layout import job_dataset_key, job_validation_dataset_key
from orchestrator.lifecycle import TERMINAL_JOB, JobStatus, PhaseStatus
from orchestrator.models import Dataset, Job, Phase, utcnow
from orchestrator.phase_moves import cancel_waiting, move, queue_phase, refresh_job_status
from orchestrator.plan import DEFAULT_POOLS, PHASES
from orchestrator.planner import AUTO, plan_job
from orchestrator.settings import get_settings
from orchestrator.storage import ObjectStore


def parse_hyperparameters(raw: dict[str, Any] | None) -> Hyperparameters:
    try:
        return Hyperparameters.model_validate(raw or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in ("hyperparameters", *first["loc"]))
        reason = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise InvalidRequest(f"{where}: {reason}", param=where) from exc


def resolve_pools(session: Session, requested: dict[str, str] | str | None) -> dict[str, str] | str:
    """Phase -> pool name with the defaults filled in, or "auto" for the planner to choose."""
    if isinstance(requested, str):
        if requested != AUTO:
            raise InvalidRequest(
                f"pools must be \"auto\" or an object of phase to pool, not '{requested}'",
                param="pools",
            )
        return AUTO
    known = repository.pools_by_name(session)
    pools = dict(DEFAULT_POOLS)
    for phase, pool in (requested or {}).items():
        if phase not in PHASES:
            raise InvalidRequest(
                f"unknown phase '{phase}' in pools; phases are {', '.join(PHASES)}",
                param=f"pools.{phase}",
            )
        if pool not in known:
            raise InvalidRequest(
                f"unknown pool '{pool}'; pools are {', '.join(sorted(known))}",
                param=f"pools.{phase}",
                code="unknown_pool",
            )
        pools[phase] = pool
    return pools


def submit_warnings(hp: Hyperparameters) -> list[str]:
    """What a job may do but its user should know at submit: settings that limit where its
    adapter can be served."""
    warnings = []
    if hp.modules_to_save:
        warnings.append(
            f"modules_to_save ({', '.join(hp.modules_to_save)}) makes the adapter unservable by "
            "vLLM, which refuses LoRA adapters with modules_to_save; load it with transformers "
            "+ peft, or leave modules_to_save empty to serve it with vLLM"
        )
    return warnings


def validation_dataset(
    session: Session,
    tenant_id: str,
    training: Dataset,
    hp: Hyperparameters,
    validation_dataset_id: str,
    *,
    param: str,
) -> Dataset:
    """The data set whose every sample a job validates on, checked like its training data."""
    validation = dataset_of_tenant(session, tenant_id, validation_dataset_id, param=param)
    if validation.id == training.id:
        raise InvalidRequest(
            f"{param} names the training data set {training.id}; a validation data set must be "
            "another one (or leave it out to hold out samples of the training data set)",
            param=param,
        )
    if hp.validation_samples is not None:
        raise InvalidRequest(
            "hyperparameters.validation_samples holds out samples of the training data set, "
            f"and {param} names a validation data set to use whole: give one or the other",
            param="hyperparameters.validation_samples",
        )
    return validation


def submit_job(
    session: Session,
    store: ObjectStore,
    *,
    tenant_id: str,
    dataset_id: str,
    base_model: str,
    hyperparameters: dict[str, Any] | None,
    pools: dict[str, str] | str | None,
    metadata: dict[str, Any] | None,
    max_cost: Decimal | None = None,
    validation_dataset_id: str | None = None,
    validation_param: str = "validation_dataset_id",
) -> Job:
    """Create the job and its phases, and queue the first phase after commit. The plan (and
    with it each phase's estimate) is chosen first, so a refused plan creates nothing.
    `validation_param` is the request field that named the validation data set, for errors."""
    hp = parse_hyperparameters(hyperparameters)
    requested = resolve_pools(session, pools)
    check_spending_limit(session, tenant_id, amount=max_cost)
    dataset = repository.dataset_for_tenant(session, tenant_id, dataset_id)
    validation = (
        None
        if validation_dataset_id is None
        else validation_dataset(
            session, tenant_id, dataset, hp, validation_dataset_id, param=validation_param
        )
    )
    model = resolve_base_model(base_model, get_settings(), session)
    check_fits_model(hp, model)
    base_model = model.name  # the registered name: a server path is never stored or shown
    planned = plan_job(
        session,
        base_model=base_model,
        hp=hp,
        dataset=dataset,
        requested=requested,
        max_cost=max_cost,
        validation=validation,
    )
    phase_pools = planned.pools
    now = utcnow()
    job = Job(
        tenant_id=tenant_id,
        dataset_id=dataset.id,
        validation_dataset_id=validation.id if validation else None,
        base_model=base_model,
        hyperparameters=hp.model_dump(),
        job_metadata=metadata or {},
        status=JobStatus.QUEUED,
        created_at=now,
        updated_at=now,
        max_cost=max_cost,
        plan=planned.plan,
    )
    job.phases = [
        Phase(
            name=name,
            position=i,
            pool=phase_pools[name],
            status=PhaseStatus.PENDING,
            attempt=0,
            estimate=planned.estimates.get(name),
        )
        for i, name in enumerate(PHASES)
    ]
    session.add(job)
    session.flush()
    warnings = submit_warnings(hp)
    # Only a job with something to warn about carries the key.
    extra: dict[str, Any] = {"warnings": warnings} if warnings else {}
    # The job owns a copy of its data under its own prefix; the upload may be deleted later.
    store.put_bytes(job_dataset_key(job.id), store.get_bytes(dataset.storage_key))
    if validation is not None:
        extra["validation_dataset_id"] = validation.id
        store.put_bytes(job_validation_dataset_key(job.id), store.get_bytes(validation.storage_key))
    emit(
        session,
        job.id,
        EventType.JOB_SUBMITTED,
        dataset_id=dataset.id,
        base_model=base_model,
        pools=phase_pools,
        **extra,
    )
    queue_phase(session, job, job.phases[0], now=now, reason="submitted")
    refresh_job_status(session, job, now)
    return job


def cancel_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """Queued and pending phases stop at once; a running phase stops at its next step."""
    job = repository.job_for_tenant(session, tenant_id, job_id)
    if job.status in TERMINAL_JOB:
        raise Conflict(f"job {job_id} is already {job.status}", param="job_id", code="job_finished")
    now = utcnow()
    job.cancel_requested_at = job.cancel_requested_at or now
    emit(session, job.id, EventType.CANCEL_REQUESTED)
    for phase in job.phases:
        cancel_waiting(session, job, phase, now=now)
    refresh_job_status(session, job, now)
    return job


REQUEUE_FROM = ("checkpoint", "input")


def requeue_phase(
    session: Session, tenant_id: str, job_id: str, phase_name: str, start_from: str | None = None
) -> Job:
    """Run a phase again; the phases after it follow. A failed or cancelled phase (stopped by
    its budget, say) continues from its latest resumable checkpoint unless `start_from` is
    "input"; a succeeded phase starts over from its input unless it is "checkpoint"."""
    if start_from is not None and start_from not in REQUEUE_FROM:
        raise InvalidRequest(
            f"from must be one of {', '.join(REQUEUE_FROM)}, got '{start_from}'", param="from"
        )
    job = repository.job_for_tenant(session, tenant_id, job_id)
    by_name = {p.name: p for p in job.phases}
    if phase_name not in by_name:
        raise NotFound(
            f"job {job_id} has no phase '{phase_name}'; phases are {', '.join(PHASES)}",
            param="phase",
            code="unknown_phase",
        )
    busy = [p.name for p in job.phases if p.status in (PhaseStatus.QUEUED, PhaseStatus.RUNNING)]
    if busy:
        raise Conflict(
            f"phase '{busy[0]}' of job {job_id} is {by_name[busy[0]].status}; "
            "cancel it or wait before requeueing",
            param=phase_name,
            code="phase_in_progress",
        )
    phase = by_name[phase_name]
    if phase.status == PhaseStatus.PENDING:
        raise Conflict(
            f"phase '{phase_name}' has not run yet", param=phase_name, code="phase_not_started"
        )
    earlier = [p for p in job.phases if p.position < phase.position]
    if any(p.status != PhaseStatus.SUCCEEDED for p in earlier):
        raise Conflict(
            f"phase '{phase_name}' needs every earlier phase to have succeeded",
            param=phase_name,
            code="input_missing",
        )
    now = utcnow()
    job.cancel_requested_at = None
    job.error_code = job.error_message = job.error_param = None
    if start_from is None:
        start_from = "input" if phase.status == PhaseStatus.SUCCEEDED else "checkpoint"
    for later in job.phases:
        if later.position > phase.position:
            if later.status != PhaseStatus.PENDING:
                move(later, PhaseStatus.PENDING)
            later.output_key = None
            later.resume_key = None  # its checkpoints grew from an input that is replaced
    if start_from == "input":
        phase.resume_key = None
    emit_for_phase(
        session, phase, EventType.PHASE_REQUEUED, start_from=start_from, resume_key=phase.resume_key
    )
    queue_phase(session, job, phase, now=now, reason="requeue")
    refresh_job_status(session, job, now)
    return job
