"""OpenAI's wire format for files and fine-tuning jobs, as the official `openai` package reads
it; relaytune's own fields ride along as extras the package keeps."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from orchestrator.hyperparameters import MAX_SEED
from services.api.schemas import MAX_AMOUNT, ErrorInfo, JobOut, Metadata, RequestBody

Auto = Literal["auto"]


class FileObject(BaseModel):
    id: str = Field(description="The data set's id: a file is a relaytune data set")
    object: Literal["file"] = "file"
    bytes: int = Field(description="Size of the stored data set (a .jsonl is stored as a zip)")
    created_at: int
    filename: str
    purpose: Literal["fine-tune"] = "fine-tune"
    status: Literal["processed"] = Field(
        "processed", description="Always processed: an upload is checked before it is stored"
    )
    expires_at: int | None = None
    status_details: str | None = None
    format: str = Field(description="relaytune: the detected data set format")
    num_samples: int
    num_images: int


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool
    first_id: str | None
    last_id: str | None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class OpenAIHyperparametersIn(RequestBody):
    # Strict, as relaytune's own hyperparameters: `true` is not 1 and "8" is not 8.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    n_epochs: Annotated[int, Field(ge=1, le=1000)] | Auto | None = None
    batch_size: Annotated[int, Field(ge=1, le=64)] | Auto | None = None
    # relaytune's learning rate is 2e-4 times this, at most 1.
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=5000)] | Auto | None = None

    @field_validator("*", mode="wrap")
    @classmethod
    def _one_message(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """A refusal names the field, not the branch of `number | "auto"` that refused it."""
        try:
            return handler(value)
        except ValidationError as exc:
            reasons = [e["msg"] for e in exc.errors() if e["type"] != "literal_error"]
            raise ValueError(f'{reasons[0] if reasons else "invalid"}, or "auto"') from None


class SupervisedIn(RequestBody):
    hyperparameters: OpenAIHyperparametersIn | None = None


class MethodIn(RequestBody):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedIn | None = None
    dpo: dict[str, Any] | None = None
    reinforcement: dict[str, Any] | None = None


class FineTuningJobCreate(RequestBody):
    model: str = Field(max_length=512, description="A base model the server knows")
    training_file: str = Field(max_length=64, description="A file (data set) id")
    validation_file: str | None = Field(
        None,
        max_length=64,
        description="A file (data set) id whose every sample is held out for validation and "
        "evaluation; without one, a few samples of the training file are held out",
    )
    hyperparameters: OpenAIHyperparametersIn | None = Field(
        None, description="Legacy place of method.supervised.hyperparameters"
    )
    method: MethodIn | None = None
    suffix: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        None, description="Becomes part of fine_tuned_model: ft:<model>:<suffix>:<job id>"
    )
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    metadata: Metadata | None = Field(None, max_length=16)
    integrations: list[dict[str, Any]] | None = Field(
        None, description="Not supported; an empty list or null only"
    )
    pools: dict[str, str] | str | None = Field(
        None, description='relaytune: phase -> pool, or "auto" (as in POST /v1/jobs)'
    )
    max_cost: Decimal | None = Field(
        None, ge=0, le=MAX_AMOUNT, description="relaytune: the job's budget (as in POST /v1/jobs)"
    )


class OpenAIHyperparameters(BaseModel):
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float


class SupervisedOut(BaseModel):
    hyperparameters: OpenAIHyperparameters


class MethodOut(BaseModel):
    type: Literal["supervised"] = "supervised"
    supervised: SupervisedOut


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None
    error: ErrorInfo | None
    fine_tuned_model: str | None = Field(
        description="ft:<model>[:<suffix>]:<job id> once the job succeeded; its adapter is "
        "GET /v1/jobs/{id}/adapter"
    )
    hyperparameters: OpenAIHyperparameters
    method: MethodOut
    model: str
    organization_id: str = Field(description="The tenant's id")
    result_files: list[str]
    seed: int
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    trained_tokens: int | None
    training_file: str
    validation_file: str | None = Field(None, description="The file validated on, if any")
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None
    relaytune: JobOut = Field(description="The job as GET /v1/jobs/{id} shows it: phases, cost")


class FineTuningJobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class FineTuningJobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] = Field(description="The relaytune event: its type, phase, attempt, data")


class FineTuningJobEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobEvent]
    has_more: bool


class FineTuningJobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    step_number: int
    metrics: dict[str, float]
    fine_tuning_job_id: str
    phase: str = Field(description="relaytune: the phase that wrote it")
    kind: str = Field(description="relaytune: step, time, epoch, stop, best or final")


class FineTuningJobCheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobCheckpoint]
    has_more: bool
    first_id: str | None
    last_id: str | None
