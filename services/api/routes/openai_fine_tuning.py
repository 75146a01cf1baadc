"""OpenAI's fine-tuning jobs API over relaytune's jobs: the same jobs, in OpenAI's shapes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from orchestrator import idempotency, jobs, openai_pages, repository
from orchestrator.openai_compat import create_fine_tuning_job
from services.api.deps import CurrentTenant, SessionDep, StoreDep
from services.api.idempotent import IdempotencyKeyHeader, once_per_key
from services.api.openai_presenters import (
    fine_tuning_job,
    fine_tuning_request,
    job_checkpoint,
    job_event,
)
from services.api.openai_schemas import (
    FineTuningJob,
    FineTuningJobCheckpointList,
    FineTuningJobCreate,
    FineTuningJobEventList,
    FineTuningJobList,
)

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["openai"])

Cursor = Annotated[str | None, Query(max_length=64)]
Limit = Annotated[int, Query(ge=1, le=100)]


@router.post("", response_model=FineTuningJob)
def create_job(
    body: FineTuningJobCreate,
    session: SessionDep,
    tenant: CurrentTenant,
    store: StoreDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> FineTuningJob | JSONResponse:
    """Create a fine-tuning job: a relaytune job on the training file, queued at commit."""

    def submit() -> FineTuningJob:
        job = create_fine_tuning_job(session, store, tenant.id, fine_tuning_request(body))
        return fine_tuning_job(job, repository.pools_by_name(session))

    return once_per_key(
        session,
        tenant_id=tenant.id,
        route="POST /v1/fine_tuning/jobs",
        key=idempotency_key,
        request_hash=lambda: idempotency.hash_json(body.model_dump(mode="json")),
        status_code=200,
        create=submit,
    )


@router.get("", response_model=FineTuningJobList)
def list_jobs(
    session: SessionDep, tenant: CurrentTenant, after: Cursor = None, limit: Limit = 20
) -> FineTuningJobList:
    """This tenant's jobs, newest first; `after` is the last id of the previous page."""
    page = openai_pages.jobs_after(session, tenant.id, after=after, limit=limit)
    pools = repository.pools_by_name(session)
    return FineTuningJobList(
        data=[fine_tuning_job(j, pools) for j in page.items], has_more=page.has_more
    )


@router.get("/{job_id}", response_model=FineTuningJob)
def retrieve_job(job_id: str, session: SessionDep, tenant: CurrentTenant) -> FineTuningJob:
    """One job."""
    job = repository.job_for_tenant(session, tenant.id, job_id)
    return fine_tuning_job(job, repository.pools_by_name(session))


@router.post("/{job_id}/cancel", response_model=FineTuningJob)
def cancel_job(job_id: str, session: SessionDep, tenant: CurrentTenant) -> FineTuningJob:
    """Cancel: waiting phases stop now, a running phase at its next step."""
    job = jobs.cancel_job(session, tenant.id, job_id)
    return fine_tuning_job(job, repository.pools_by_name(session))


@router.get("/{job_id}/events", response_model=FineTuningJobEventList)
def list_events(
    job_id: str, session: SessionDep, tenant: CurrentTenant, after: Cursor = None, limit: Limit = 20
) -> FineTuningJobEventList:
    """The job's events, newest first; `after` is the last id of the previous page."""
    repository.job_for_tenant(session, tenant.id, job_id)
    page = openai_pages.events_before(session, job_id, after=after, limit=limit)
    return FineTuningJobEventList(data=[job_event(e) for e in page.items], has_more=page.has_more)


@router.get("/{job_id}/checkpoints", response_model=FineTuningJobCheckpointList)
def list_checkpoints(
    job_id: str, session: SessionDep, tenant: CurrentTenant, after: Cursor = None, limit: Limit = 10
) -> FineTuningJobCheckpointList:
    """The job's training checkpoints, newest first."""
    job = repository.job_for_tenant(session, tenant.id, job_id)
    page = openai_pages.checkpoints_after(session, job_id, after=after, limit=limit)
    data = [job_checkpoint(job, c) for c in page.items]
    return FineTuningJobCheckpointList(
        data=data,
        has_more=page.has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )
