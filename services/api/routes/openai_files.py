"""OpenAI's Files API for fine-tuning: a file is a relaytune data set, under the same id."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, UploadFile
from fastapi.responses import JSONResponse

from orchestrator import idempotency
from orchestrator.datasets import dataset_of_tenant, datasets_after, delete_dataset
from orchestrator.errors import InvalidRequest
from services.api.deps import CurrentTenant, SessionDep, SettingsDep, StoreDep
from services.api.idempotent import IdempotencyKeyHeader, once_per_key
from services.api.openai_presenters import file_object
from services.api.openai_schemas import FileDeleted, FileList, FileObject
from services.api.routes.datasets import dataset_from_upload

router = APIRouter(prefix="/v1/files", tags=["openai"])

PURPOSE = "fine-tune"


@router.post("", response_model=FileObject)
def create_file(
    file: UploadFile,
    purpose: Annotated[str, Form()],
    session: SessionDep,
    tenant: CurrentTenant,
    settings: SettingsDep,
    store: StoreDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> FileObject | JSONResponse:
    """Upload training data (purpose fine-tune): an OpenAI chat .jsonl with images as base64
    data URLs, or a zip in any format POST /v1/datasets takes. It becomes a data set."""
    if purpose != PURPOSE:
        raise InvalidRequest(
            f"purpose must be {PURPOSE}, not '{purpose}'",
            param="purpose",
            code="unsupported_purpose",
        )

    def create() -> FileObject:
        return file_object(dataset_from_upload(file, session, tenant.id, settings, store))

    return once_per_key(
        session,
        tenant_id=tenant.id,
        route="POST /v1/files",
        key=idempotency_key,
        request_hash=lambda: idempotency.hash_upload(file.file, file.filename or ""),
        status_code=200,
        create=create,
    )


@router.get("", response_model=FileList)
def list_files(
    session: SessionDep,
    tenant: CurrentTenant,
    purpose: str | None = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
) -> FileList:
    """This tenant's files (data sets), by creation time; `after` is the last id seen."""
    if purpose not in (None, PURPOSE):
        return FileList(data=[], has_more=False, first_id=None, last_id=None)
    rows = datasets_after(
        session, tenant.id, after=after, limit=limit + 1, newest_first=order == "desc"
    )
    data = [file_object(d) for d in rows[:limit]]
    return FileList(
        data=data,
        has_more=len(rows) > limit,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.get("/{file_id}", response_model=FileObject)
def retrieve_file(file_id: str, session: SessionDep, tenant: CurrentTenant) -> FileObject:
    """One file."""
    return file_object(dataset_of_tenant(session, tenant.id, file_id, param="file_id"))


@router.delete("/{file_id}", response_model=FileDeleted)
def remove_file(
    file_id: str, session: SessionDep, tenant: CurrentTenant, store: StoreDep
) -> FileDeleted:
    """Delete a file; refused (409) while an unfinished job trains on it."""
    delete_dataset(session, store, tenant.id, file_id)
    return FileDeleted(id=file_id, deleted=True)
