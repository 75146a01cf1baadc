"""Registered base models, in the shape of OpenAI's `GET /v1/models`, with relaytune's own
fields beside: what a job may name as `base_model`."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from orchestrator.model_registry import list_models
from orchestrator.models import RegisteredModel
from services.api.deps import CurrentTenant, SessionDep

router = APIRouter(prefix="/v1/models", tags=["models"])


class ModelOut(BaseModel):
    id: str  # the name a job gives as base_model
    object: Literal["model"] = "model"
    created: int  # Unix seconds, as OpenAI's clients expect
    owned_by: str = "relaytune"
    architecture: str
    parameter_count: int
    dtype: str
    total_bytes: int
    digest: str  # sha256 of the stored files: the same digest, the same weights
    lora_target_modules: list[str]


class ModelListOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


def model_out(model: RegisteredModel) -> ModelOut:
    return ModelOut(
        id=model.name,
        created=int(model.created_at.timestamp()),
        architecture=model.architecture,
        parameter_count=model.parameter_count,
        dtype=model.dtype,
        total_bytes=model.total_bytes,
        digest=model.digest,
        lora_target_modules=model.lora_target_modules,
    )


@router.get("", response_model=ModelListOut)
def get_models(session: SessionDep, _: CurrentTenant) -> ModelListOut:
    """The registered models any job may name as base_model, by name."""
    return ModelListOut(data=[model_out(m) for m in list_models(session)])
