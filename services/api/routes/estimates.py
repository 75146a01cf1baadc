from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from orchestrator import quote
from services.api.deps import CurrentTenant, SessionDep, SettingsDep
from services.api.estimate_schemas import EstimateOut, ProfileOut
from services.api.schemas import JobCreate

router = APIRouter(prefix="/v1", tags=["estimates"])


@router.post("/estimates", response_model=EstimateOut)
def create_estimate(
    body: JobCreate, session: SessionDep, tenant: CurrentTenant, settings: SettingsDep
) -> EstimateOut:
    """What the job would take and cost on each plan, side by side; nothing is created."""
    answer = quote.quote_job(
        session,
        tenant_id=tenant.id,
        dataset_id=body.dataset_id,
        validation_dataset_id=body.validation_dataset_id,
        base_model=body.base_model or settings.default_base_model,
        hyperparameters=body.hyperparameters.model_dump(),
        pools=body.pools,
        max_cost=body.max_cost,
    )
    return EstimateOut.model_validate(answer)


@router.get("/profiles", response_model=list[ProfileOut])
def list_profiles(
    session: SessionDep,
    _: CurrentTenant,
    base_model: Annotated[str | None, Query(description="One model; default: all known")] = None,
    batch_size: Annotated[int | None, Query(ge=1, le=64)] = None,
    all_linear: Annotated[bool, Query(description="all-linear LoRA instead of q/v")] = False,
) -> list[ProfileOut]:
    """Throughput, start-up and transfer figures per model and pool, with their source."""
    hyperparameters: dict[str, object] = {}
    if batch_size:
        hyperparameters["batch_size"] = batch_size
    if all_linear:
        hyperparameters["target_modules"] = "all-linear"
    rows = quote.list_profiles(session, base_model=base_model, hyperparameters=hyperparameters)
    return [ProfileOut.model_validate(r) for r in rows]
