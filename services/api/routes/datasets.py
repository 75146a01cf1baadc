from __future__ import annotations

from fastapi import APIRouter, UploadFile

from orchestrator.dataset_uploads import create_dataset
from orchestrator.errors import InvalidDataset
from services.api.deps import CurrentTenant, SessionDep, SettingsDep, StoreDep
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
) -> DatasetOut:
    """Upload a zip of `images/` and `annotations.json`; it is validated before it is stored."""
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
