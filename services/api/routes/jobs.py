from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse

from orchestrator import budgets, idempotency, jobs, layout, liveness, repository
from orchestrator.errors import Conflict, InvalidRequest, NotFound
from orchestrator.lifecycle import JobStatus
from orchestrator.models import Job, utcnow
from services.api import downloads
from services.api.budget_schemas import JobPatch, RequeueFrom, RequeueIn
from services.api.deps import CurrentKey, CurrentTenant, SessionDep, SettingsDep, StoreDep
from services.api.event_stream import event_stream
from services.api.idempotent import IdempotencyKeyHeader, once_per_key
from services.api.presenters import job_out
from services.api.schemas import CheckpointOut, EventOut, JobCreate, JobList, JobOut

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

# Query integers are bounded like the columns they reach: a larger one is a 422, never an
# overflow in the database driver.
MAX_QUERY_INT = 2**31 - 1


@router.post("", status_code=201, response_model=JobOut)
def create_job(
    body: JobCreate,
    session: SessionDep,
    tenant: CurrentTenant,
    settings: SettingsDep,
    store: StoreDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobOut | JSONResponse:
    """Submit a fine-tuning job; its first phase is queued when the request commits."""

    def submit() -> JobOut:
        job = jobs.submit_job(
            session,
            store,
            tenant_id=tenant.id,
            dataset_id=body.dataset_id,
            validation_dataset_id=body.validation_dataset_id,
            base_model=body.base_model or settings.default_base_model,
            hyperparameters=body.hyperparameters.model_dump(),
            pools=body.pools,
            metadata=body.metadata,
            max_cost=body.max_cost,
        )
        return job_out(job, repository.pools_by_name(session))

    return once_per_key(
        session,
        tenant_id=tenant.id,
        route="POST /v1/jobs",
        key=idempotency_key,
        request_hash=lambda: idempotency.hash_json(body.model_dump(mode="json")),
        status_code=201,
        create=submit,
    )


@router.get("", response_model=JobList)
def list_jobs(
    session: SessionDep,
    tenant: CurrentTenant,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_QUERY_INT)] = 0,
) -> JobList:
    """List this tenant's jobs, newest first."""
    rows, total = repository.list_jobs(
        session, tenant.id, status=status, limit=limit, offset=offset
    )
    pools = repository.pools_to_show(session)
    served = liveness.served_queues_to_show(session, utcnow())
    return JobList(
        data=[job_out(j, pools, served) for j in rows], total=total, limit=limit, offset=offset
    )


@router.get("/{job_id}", response_model=JobOut)
def read_job(job_id: str, session: SessionDep, tenant: CurrentTenant) -> JobOut:
    """One job with per-phase status, progress and cost."""
    job = repository.job_for_tenant(session, tenant.id, job_id)
    return job_out(
        job, repository.pools_to_show(session), liveness.served_queues_to_show(session, utcnow())
    )


@router.get(
    "/{job_id}/events",
    response_model=list[EventOut],
    responses={200: {"content": {"text/event-stream": {}}}},
)
def read_events(
    job_id: str,
    session: SessionDep,
    tenant: CurrentTenant,
    api_key: CurrentKey,  # the same lookup as the tenant's: a stream checks it again later
    after: Annotated[int, Query(ge=0, le=MAX_QUERY_INT)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    stream: bool = False,
    last_event_id: Annotated[
        int | None, Header(alias="Last-Event-ID", ge=0, le=MAX_QUERY_INT)
    ] = None,
) -> list[EventOut] | EventSourceResponse:
    """The job's timeline; pass the last id seen as `after` to follow it. `stream=true`
    follows it live as Server-Sent Events (resuming after `Last-Event-ID` or `after`) until
    the job is finished, or until the key is revoked or expires (an `error` event then)."""
    repository.job_for_tenant(session, tenant.id, job_id)
    if stream:
        resume_after = after if last_event_id is None else last_event_id
        return event_stream(job_id, after=resume_after, key_id=api_key.id)
    rows = repository.events(session, job_id, after=after, limit=limit)
    return [EventOut.model_validate(e, from_attributes=True) for e in rows]


@router.get("/{job_id}/checkpoints", response_model=list[CheckpointOut])
def read_checkpoints(
    job_id: str, session: SessionDep, tenant: CurrentTenant
) -> list[CheckpointOut]:
    """Checkpoints recorded by the job's phases (only complete ones are recorded)."""
    repository.job_for_tenant(session, tenant.id, job_id)
    rows = repository.checkpoints(session, job_id)
    return [CheckpointOut.model_validate(c, from_attributes=True) for c in rows]


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, session: SessionDep, tenant: CurrentTenant) -> JobOut:
    """Cancel: waiting phases stop now, a running phase at its next step."""
    job = jobs.cancel_job(session, tenant.id, job_id)
    return job_out(job, repository.pools_by_name(session))


@router.patch("/{job_id}", response_model=JobOut)
def update_job(job_id: str, body: JobPatch, session: SessionDep, tenant: CurrentTenant) -> JobOut:
    """Change the job's max_cost (null lifts it), e.g. to continue a phase stopped by it."""
    job = budgets.set_max_cost(session, tenant.id, job_id, body.max_cost)
    return job_out(job, repository.pools_by_name(session))


@router.post("/{job_id}/phases/{phase}/requeue", response_model=JobOut)
def requeue_phase(
    job_id: str,
    phase: str,
    session: SessionDep,
    tenant: CurrentTenant,
    start_from: Annotated[RequeueFrom | None, Query(alias="from")] = None,
    body: RequeueIn | None = None,
) -> JobOut:
    """Run a phase again; the later phases follow. A failed or cancelled phase continues from
    its latest checkpoint unless `from` is "input"."""
    chosen = {c for c in (start_from, body.start_from if body else None) if c is not None}
    if len(chosen) > 1:
        raise InvalidRequest("the query and the body give different 'from' values", param="from")
    job = jobs.requeue_phase(session, tenant.id, job_id, phase, start_from=next(iter(chosen), None))
    return job_out(job, repository.pools_by_name(session))


def _export(job: Job, what: str) -> str:
    """The export of the last final run that succeeded (see orchestrator.layout): it stays
    served while the final phase runs again."""
    if not job.adapter_key:
        final = next(p for p in job.phases if p.name == "final")
        raise Conflict(
            f"job {job.id} has no {what} yet (final phase is {final.status})",
            param="job_id",
            code=f"{what}_not_ready",
        )
    return job.adapter_key


@router.get("/{job_id}/evaluation")
def read_evaluation(
    job_id: str, session: SessionDep, tenant: CurrentTenant, store: StoreDep
) -> dict[str, Any]:
    """Held-out evaluation of the base model and of the adapter (evaluation.json)."""
    job = repository.job_for_tenant(session, tenant.id, job_id)
    report: dict[str, Any] = json.loads(
        store.get_bytes(layout.evaluation_key(_export(job, "evaluation")))
    )
    return report


@router.get(
    "/{job_id}/adapter",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
def download_adapter(
    job_id: str,
    session: SessionDep,
    tenant: CurrentTenant,
    store: StoreDep,
    kind: downloads.DownloadKind = downloads.DownloadKind.ADAPTER,
    checkpoint: Annotated[str | None, Query(max_length=36)] = None,
) -> Response:
    """The final LoRA adapter in PEFT format, as a zip. `kind=merged`: the merged model the job
    exported (hyperparameter export_merged), streamed; `checkpoint`: the adapter of one of the
    job's checkpoints (GET /v1/jobs/{id}/checkpoints)."""
    job = repository.job_for_tenant(session, tenant.id, job_id)
    if checkpoint is not None:
        if kind == downloads.DownloadKind.MERGED:
            raise InvalidRequest(
                "a checkpoint holds an adapter only: leave out 'kind' or 'checkpoint'",
                param="checkpoint",
            )
        rows = repository.checkpoints(session, job.id)
        adapter = downloads.checkpoint_adapter(rows, job.id, checkpoint)
        name = f"relaytune-{job_id}-checkpoint-{checkpoint}-adapter.zip"
        gone = NotFound(f"checkpoint {checkpoint} is no longer stored", param="checkpoint")
        return downloads.adapter_zip(store, adapter, name, if_gone=gone)
    if kind == downloads.DownloadKind.MERGED:
        return downloads.merged_zip(store, _export(job, "merged"), job.id)
    adapter = layout.adapter_prefix(_export(job, "adapter"))
    return downloads.adapter_zip(store, adapter, f"relaytune-{job_id}-adapter.zip")
