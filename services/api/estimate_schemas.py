"""The wire format of estimates and profiles (API v1)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from services.api.schemas import Money


class PhaseEstimateOut(BaseModel):
    phase: str
    pool: str
    gpu_model: str
    precision: str | None
    micro_batch: int | None
    gradient_checkpointing: bool | None
    seconds: dict[str, float] = Field(description="Billed seconds by component")
    total_seconds: float
    cost: Money
    peak_memory_bytes: int | None
    feasible: bool
    reason: str
    samples: int = Field(description="Samples the phase handles, every epoch counted")
    checkpoints: int = Field(description="Checkpoints (and artifacts) the phase uploads")
    sources: list[str] = Field(
        description="Where the figures come from: measured, bench, derived or default"
    )


class PlanOut(BaseModel):
    name: str
    pools: dict[str, str]
    cost: Money
    total_seconds: float
    feasible: bool
    reason: str
    phases: list[PhaseEstimateOut]


class SavingOut(BaseModel):
    against: str
    amount: Money
    percent: float


class PoolQueueOut(BaseModel):
    pool: str
    queued_phases: int
    expected_wait_s: float = Field(description="Queued phases x the pool's median phase time")


class EstimateOut(BaseModel):
    base_model: str
    model_key: str
    dataset: dict[str, Any]
    validation_dataset: dict[str, Any] | None = Field(
        None,
        description="The validation data set named, held out whole (the training data set "
        "then trains whole); null when samples of dataset_id are held out instead",
    )
    chosen: str = Field(description="The requested plan, or the planner's pick for pools auto")
    cheapest: str | None
    top_tier: str | None
    saving_vs_top_tier: SavingOut | None
    max_cost: Money | None
    within_budget: bool | None
    plans: list[PlanOut]
    queues: list[PoolQueueOut]


class ProfileOut(BaseModel):
    base_model: str = Field(description="The name the profile is for, as a job gives it")
    model_key: str
    phase: str
    pool: str
    gpu_model: str
    precision: str | None
    micro_batch: int | None
    gradient_checkpointing: bool | None
    feasible: bool
    reason: str
    lora_targets: str | None = None
    startup_s: float | None = None
    model_fetch_s: float | None = Field(
        default=None,
        description="Seconds to fetch a registered model into a worker node's cache before the "
        "phase (preprocessing: every file but the weights); 0 for a model the server holds",
    )
    download_bytes_per_s: float | None = None
    checkpoint_upload_s: float | None = None
    preprocess_s_per_sample: float | None = None
    train_samples_per_s: float | None = None
    evaluate_s_per_validation_sample: float | None = None
    export_s: float | None = None
    peak_memory_bytes: int | None = None
    source: str | None
    sources: dict[str, str]
    runs: int
