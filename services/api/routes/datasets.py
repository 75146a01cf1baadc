from __future__ import annotations

from fastapi import APIRouter, UploadFile
from fastapi.responses import JSONResponse

from orchestrator import idempotency
from orchestrator.datasets import create_dataset
from orchestrator.errors import InvalidDataset
from services.api.deps import CurrentTenant, SessionDep, SettingsDep, StoreDep
from services.api.idempotent import IdempotencyKeyHeader, respond
from services.api.schemas import DatasetOut

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


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
    """Upload a zip of `images/` and `annotations.json`; it is validated before it is stored."""

    def create() -> DatasetOut:
        data = file.file.read(settings.max_upload_bytes + 1)
        if not data:
            raise InvalidDataset("the uploaded file is empty", param="file")
        dataset = create_dataset(
            session,
            store,
            settings,
            tenant_id=tenant.id,
            filename=file.filename or "dataset.zip",
            data=data,
        )
        return DatasetOut.model_validate(dataset, from_attributes=True)

    if idempotency_key is None:
        return create()
    # Hashed from the spooled file before anything is read into memory: a retry is answered
    # without reading its upload again.
    request_hash = idempotency.hash_upload(file.file, file.filename or "")
    return respond(
        idempotency.run_once(
            session,
            tenant_id=tenant.id,
            route="POST /v1/datasets",
            key=idempotency_key,
            request_hash=request_hash,
            create=lambda: idempotency.Result(201, create().model_dump(mode="json")),
        )
    )
