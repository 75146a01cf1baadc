"""The wire format of API v1."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from orchestrator.events import EventType
from orchestrator.hyperparameters import Hyperparameters
from orchestrator.layout import CheckpointKind
from orchestrator.lifecycle import JobStatus, PhaseStatus


def as_utc(moment: datetime) -> datetime:
    """Stored times are UTC; SQLite hands them back without a zone, so a naive one is UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# Every timestamp on the wire: timezone-aware, in UTC (serialized with a trailing Z).
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


class Money(BaseModel):
    amount: Decimal
    currency: str


class ErrorInfo(BaseModel):
    code: str
    message: str
    param: str | None = None


class DatasetOut(BaseModel):
    id: str
    format: str
    num_samples: int
    num_images: int
    bytes: int
    filename: str
    created_at: UtcDatetime


# The most a Numeric(14, 6) column holds: a larger amount would fail the insert, not the request.
MAX_AMOUNT = Decimal("99999999.999999")


# As OpenAI bounds it: small labels, not a place to store documents.
Metadata = dict[
    Annotated[str, StringConstraints(max_length=64)],
    Annotated[str, StringConstraints(max_length=512)],
]


class RequestBody(BaseModel):
    """A request body: a misspelt or unknown field is refused, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class JobCreate(RequestBody):
    # Merged with RequestBody's config: unknown fields stay refused.
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "dataset_id": "0b9f6c1e-5d2a-4c1e-9a55-3f0d2b7e8a41",
                    "base_model": "tiny-qwen3-vl",
                    "hyperparameters": {"total_epochs": 8, "warmup_epochs": 5},
                    "pools": "auto",
                    "max_cost": "5.00",
                    "metadata": {"team": "inspection"},
                }
            ]
        },
    )
    dataset_id: str
    validation_dataset_id: str | None = Field(
        None,
        description="Another data set of yours to validate and evaluate on, every sample of "
        "it; without one, hyperparameters.validation_samples of dataset_id are held out "
        "(give one or the other)",
    )
    base_model: str | None = Field(
        None,
        max_length=512,
        description="A registered model's name (GET /v1/models), or another name the server "
        "knows (a directory under its model root, a name its operator allowed); defaults to "
        "the tiny Qwen3-VL. Anything else is 422 unknown_model, listing the known names",
    )
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters,
        description="Training settings; every field has a default, so name only those to change",
    )
    pools: dict[str, str] | str | None = Field(
        None, description='Phase -> pool, or "auto" for the cheapest plan that fits'
    )
    metadata: Metadata | None = Field(
        None,
        max_length=16,
        description="Up to 16 string pairs of your own (keys ≤ 64, values ≤ 512 characters), "
        "echoed back with the job",
    )
    max_cost: Decimal | None = Field(
        None,
        ge=0,
        le=MAX_AMOUNT,
        description="Budget for the whole job in the pools' currency; refused at submit when "
        "even the cheapest plan's estimate exceeds it",
    )


class Progress(BaseModel):
    step: int = Field(description="Optimizer steps done, counted over the whole job")
    total_steps: int = Field(description="Optimizer steps of the whole job (0 before training)")
    epoch: int = Field(description="0-based index of the epoch in progress")


BILLING_INTERVAL = (
    "A run is billed from the moment a worker claims the phase until it releases it: startup "
    "(imports, base model load), downloads and checkpoint uploads are billed like training, "
    "since the GPU is held throughout. Waiting in the queue is not billed."
)


class PhaseTimingOut(BaseModel):
    """Where the phase's latest run spent its time; the *_s components and other_s add up to
    billed_s."""

    attempt: int
    outcome: str = Field(description="The phase status the run ended in")
    runs: int = Field(description="Runs of this phase recorded so far, this one included")
    billing: Literal["claim_to_release"] = Field("claim_to_release", description=BILLING_INTERVAL)
    billed_s: float = Field(description="Seconds billed for this run: claim to release")
    queue_wait_s: float = Field(description="Queued to claimed; not billed")
    startup_s: float = Field(
        description="Imports, base model load, resume state; model_fetch_s excluded"
    )
    model_fetch_s: float = Field(
        0.0,
        description="Making a registered base model local on the worker: download and "
        "verify on a cache miss, lock and look on a hit",
    )
    model_cache_hit: bool | None = Field(
        None,
        description="Whether the worker's model cache already held the registered base model; "
        "null for a model that is not fetched from the object store",
    )
    input_download_s: float = Field(description="Dataset, artifact and checkpoint downloads")
    train_s: float = Field(
        description="The training loop with its in-loop validation, "
        "checkpoint uploads excluded; building the artifact for preprocess"
    )
    evaluate_s: float = Field(description="The final phase's base-vs-adapter evaluation")
    export_s: float = Field(description="Writing the adapter (and merged model)")
    checkpoint_upload_s: float = Field(description="Publishing checkpoints, artifact, adapter")
    other_s: float = Field(
        description="Billed seconds no component covers (job-store writes, clean-up)"
    )
    samples: int = Field(description="Training samples processed, every epoch counted")
    tokens: int = Field(description="Input tokens of those samples")
    validation_samples: int = Field(description="Held-out samples scored, every pass counted")
    checkpoints: int = Field(description="Checkpoints uploaded")
    input_bytes: int = Field(description="Bytes downloaded")
    peak_memory_bytes: int | None = Field(
        description="Peak CUDA memory allocated, or the process's peak resident memory on CPU"
    )
    precision: str | None
    device: str | None
    micro_batch: int | None
    lora_targets: str | None
    model_key: str | None
    fused: bool = Field(
        False,
        description="Run by the worker that ran the previous phase, in "
        "the same process (same pool): no start-up, no download",
    )


class PhaseOut(BaseModel):
    name: str
    pool: str
    gpu_model: str
    status: PhaseStatus
    status_detail: Literal["stalled", "waiting_for_worker"] | None = Field(
        None,
        description="stalled: running, but its worker stopped renewing the lease (its "
        "meter stopped at the last heartbeat); waiting_for_worker: queued, and no worker "
        "serving its pool has been seen lately",
    )
    attempt: int
    progress: Progress
    cost: Money
    started_at: UtcDatetime | None
    last_heartbeat_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None
    error: ErrorInfo | None = None
    timing: PhaseTimingOut | None = Field(
        None, description="The latest run's time by component; null before a run ends"
    )
    estimate: dict[str, Any] | None = Field(
        None, description="Seconds by component and cost predicted at submit"
    )


class JobOut(BaseModel):
    id: str
    status: JobStatus
    dataset_id: str
    validation_dataset_id: str | None = Field(
        None, description="The data set validated on whole; null: held out of dataset_id"
    )
    base_model: str
    hyperparameters: dict[str, Any]
    metadata: dict[str, Any]
    created_at: UtcDatetime
    finished_at: UtcDatetime | None
    phases: list[PhaseOut]
    cost: Money
    max_cost: Money | None = Field(None, description="The job's budget; none when uncapped")
    error: ErrorInfo | None = None
    plan: dict[str, Any] | None = Field(
        None, description="Which plan runs the job and why, with its estimated cost"
    )


class JobList(BaseModel):
    data: list[JobOut]
    total: int
    limit: int
    offset: int


class EventOut(BaseModel):
    id: int
    type: EventType
    phase: str | None
    attempt: int | None
    data: dict[str, Any]
    created_at: UtcDatetime


class CheckpointOut(BaseModel):
    id: str
    phase: str
    attempt: int
    kind: CheckpointKind
    step: int
    key: str
    bytes: int
    created_at: UtcDatetime


class PoolWorkerOut(BaseModel):
    hostname: str = Field(description="The worker's Celery hostname, e.g. t4@host")
    last_seen_at: UtcDatetime = Field(
        description="When the reaper last saw it consume the pool's queue"
    )


class PoolOut(BaseModel):
    name: str
    queue: str
    gpu_model: str
    gpu_memory_gb: int
    supports_bf16: bool
    peak_tflops: float
    memory_bandwidth_gbs: float
    hourly_price: Money
    live_workers: int = Field(
        0,
        description="Workers seen consuming the pool's queue lately "
        "(within a few reaper rounds); 0: its phases wait until one starts",
    )
    workers: list[PoolWorkerOut] = Field(
        default_factory=list, description="Those workers, by hostname"
    )
