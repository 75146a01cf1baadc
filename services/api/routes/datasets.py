from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, UploadFile
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from orchestrator import idempotency
from orchestrator.datasets import create_dataset, dataset_of_tenant, delete_dataset, list_datasets
from orchestrator.models import Dataset
from orchestrator.settings import Settings
from orchestrator.storage import ObjectStore
from services.api.dataset_schemas import DatasetList
from services.api.deps import CurrentTenant, SessionDep, SettingsDep, StoreDep
from services.api.idempotent import IdempotencyKeyHeader, once_per_key
from services.api.routes.jobs import MAX_QUERY_INT
from services.api.schemas import DatasetOut

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def dataset_from_upload(
    file: UploadFile, session: Session, tenant_id: str, settings: Settings, store: ObjectStore
) -> Dataset:
    """Read the spooled upload (one byte past the limit, to tell an oversized one) and store it."""
    return create_dataset(
        session,
        store,
        settings,
        tenant_id=tenant_id,
        filename=file.filename or "dataset.zip",
        data=file.file.read(settings.max_upload_bytes + 1),
    )


# A plain `def`: FastAPI runs it in its thread pool, so reading the spooled upload, decoding
# every image and the object-store put never block the event loop that serves other requests.
@router.post("", status_code=201, response_model=DatasetOut)
def upload_dataset(
    file: UploadFile,
    session: SessionDep,
    tenant: CurrentTenant,
    settings: SettingsDep,
    store: StoreDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> DatasetOut | JSONResponse:
    """Upload a zip (annotations.json and images/, or a .json/.jsonl data file) or an OpenAI
    chat .jsonl with embedded images; it is validated before it is stored."""

    def create() -> DatasetOut:
        dataset = dataset_from_upload(file, session, tenant.id, settings, store)
        return DatasetOut.model_validate(dataset, from_attributes=True)

    # Hashed from the spooled file before anything is read into memory: a retry is answered
    # without reading its upload again.
    return once_per_key(
        session,
        tenant_id=tenant.id,
        route="POST /v1/datasets",
        key=idempotency_key,
        request_hash=lambda: idempotency.hash_upload(file.file, file.filename or ""),
        status_code=201,
        create=create,
    )


@router.get("", response_model=DatasetList)
def read_datasets(
    session: SessionDep,
    tenant: CurrentTenant,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_QUERY_INT)] = 0,
) -> DatasetList:
    """This tenant's data sets, newest first."""
    rows, total = list_datasets(session, tenant.id, limit=limit, offset=offset)
    data = [DatasetOut.model_validate(d, from_attributes=True) for d in rows]
    return DatasetList(data=data, total=total, limit=limit, offset=offset)


@router.get("/{dataset_id}", response_model=DatasetOut)
def read_dataset(dataset_id: str, session: SessionDep, tenant: CurrentTenant) -> DatasetOut:
    """One data set."""
    dataset = dataset_of_tenant(session, tenant.id, dataset_id)
    return DatasetOut.model_validate(dataset, from_attributes=True)


@router.delete("/{dataset_id}", status_code=204, response_class=Response)
def remove_dataset(
    dataset_id: str, session: SessionDep, tenant: CurrentTenant, store: StoreDep
) -> Response:
    """Delete a data set and its stored objects; refused (409) while an unfinished job uses it.
    Jobs that used it keep their own copy."""
    delete_dataset(session, store, tenant.id, dataset_id)
    return Response(status_code=204)
