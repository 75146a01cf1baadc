"""Wire models of budgets: a job's max_cost, requeue's starting point, tenants' limits."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.api.schemas import Money

# Numeric(14, 6) in the store: eight digits before the point, six after.
Amount = Decimal


class JobPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_cost: Amount | None = Field(
        ...,
        ge=0,
        max_digits=14,
        decimal_places=6,
        description="Most the whole job may cost, in the pools' currency; null lifts the cap",
    )


RequeueFrom = Literal["checkpoint", "input"]


class RequeueIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    start_from: RequeueFrom | None = Field(
        None,
        alias="from",
        description="checkpoint: continue from the phase's latest checkpoint (the default for "
        "a failed or cancelled phase); input: start the phase over",
    )


class SpendingLimitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Amount | None = Field(
        ..., ge=0, max_digits=14, decimal_places=6, description="null removes the limit"
    )
    period_days: int = Field(30, ge=1, le=3660)


class SpendingOut(BaseModel):
    tenant: str
    limit: Money | None
    period_days: int | None
    spent: Money = Field(description="What the jobs submitted in the period cost so far")
    remaining: Money | None
