from __future__ import annotations

from fastapi import APIRouter, UploadFile

from orchestrator.dataset_uploads import create_dataset
from orchestrator.errors import InvalidDataset
from services.api.deps import CurrentTenant, SessionDep, SettingsDep, StoreDep
from services.api.schemas import DatasetOut

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.post("", status_code=201, response_model=DatasetOut)
async def upload_dataset(
    file: UploadFile,
    session: SessionDep,
    tenant: CurrentTenant,
    settings: SettingsDep,
    store: StoreDep,
) -> DatasetOut:
    """Upload a zip of `images/` and `annotations.json`; it is validated before it is stored."""
    data = await file.read(settings.max_upload_bytes + 1)
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
