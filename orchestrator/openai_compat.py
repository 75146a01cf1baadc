"""OpenAI's fine-tuning vocabulary for relaytune's jobs: statuses, model names, hyperparameters,
events and checkpoints. A fine-tuning job IS a relaytune job; nothing is stored twice.

Relaytune checks a data set when it is uploaded, so a job never shows `validating_files`: it
starts `queued`. A job being cancelled (`cancelling`) shows `running` until its phase stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from orchestrator import jobs
from orchestrator.errors import InvalidRequest
from orchestrator.events import EventType
from orchestrator.hyperparameters import Hyperparameters
from orchestrator.lifecycle import JobStatus
from orchestrator.models import Checkpoint, Event, Job
from orchestrator.storage import ObjectStore

OPENAI_STATUS = {
    JobStatus.QUEUED: "queued",
    JobStatus.RUNNING: "running",
    JobStatus.CANCELLING: "running",
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}
# Where a job keeps the suffix it was created with (its metadata is the one free-form field).
SUFFIX_KEY = "openai_suffix"
_DEFAULTS = Hyperparameters()
# The relay's share of the epochs run by warmup (relaytune's default: 5 of 8).
WARMUP_SHARE = _DEFAULTS.warmup_epochs / _DEFAULTS.total_epochs
TRAINING_KINDS = frozenset({"step", "time", "epoch", "stop", "best", "final"})


def openai_status(status: str) -> str:
    return OPENAI_STATUS[JobStatus(status)]


def model_name(job: Job) -> str:
    """`ft:<base>:<suffix>:<job id>` (`ft:<base>:<job id>` without a suffix)."""
    suffix = (job.job_metadata or {}).get(SUFFIX_KEY)
    return ":".join(["ft", job.base_model, *([suffix] if suffix else []), job.id])


def fine_tuned_model(job: Job) -> str | None:
    """Named once the adapter exists: after the job succeeded."""
    return model_name(job) if job.status == JobStatus.SUCCEEDED else None


def openai_hyperparameters(hp: dict[str, Any]) -> dict[str, Any]:
    return {
        "n_epochs": hp["total_epochs"],
        "batch_size": hp["batch_size"],
        "learning_rate_multiplier": hp["learning_rate"] / _DEFAULTS.learning_rate,
    }


def trained_tokens(job: Job) -> int | None:
    if job.status != JobStatus.SUCCEEDED:
        return None
    return sum(run.tokens for run in job.timings if run.phase != "preprocess")


@dataclass(frozen=True)
class OpenAIHyperparameters:
    """OpenAI's three knobs; None or "auto" keeps relaytune's default."""

    n_epochs: int | str | None = None
    batch_size: int | str | None = None
    learning_rate_multiplier: float | str | None = None

    def relaytune(self, param: str) -> dict[str, Any]:
        """The relaytune hyperparameters they stand for; the warmup phase keeps its default
        share of the epochs (at least one)."""
        chosen: dict[str, Any] = {}
        n_epochs = _given(self.n_epochs, f"{param}.n_epochs")
        if n_epochs is not None:
            chosen["total_epochs"] = int(n_epochs)
            chosen["warmup_epochs"] = max(1, round(int(n_epochs) * WARMUP_SHARE))
        batch_size = _given(self.batch_size, f"{param}.batch_size")
        if batch_size is not None:
            chosen["batch_size"] = int(batch_size)
        multiplier = _given(self.learning_rate_multiplier, f"{param}.learning_rate_multiplier")
        if multiplier is not None:
            chosen["learning_rate"] = _DEFAULTS.learning_rate * multiplier
        return chosen


def _given(value: float | str | None, param: str) -> float | None:
    """The number asked for; None for a default."""
    if value is None or value == "auto":
        return None
    if isinstance(value, str):
        raise InvalidRequest(f'{param} must be a number or "auto", not "{value}"', param=param)
    return value


@dataclass(frozen=True)
class FineTuningRequest:
    model: str
    training_file: str
    hyperparameters: OpenAIHyperparameters
    hyperparameters_param: str
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, str] | None = None
    validation_file: str | None = None  # a data set held out whole
    pools: dict[str, str] | str | None = None
    max_cost: Decimal | None = None


def create_fine_tuning_job(
    session: Session, store: ObjectStore, tenant_id: str, request: FineTuningRequest
) -> Job:
    """Submit the relaytune job the request describes (see orchestrator.jobs.submit_job)."""
    hyperparameters = request.hyperparameters.relaytune(request.hyperparameters_param)
    if request.seed is not None:
        hyperparameters["seed"] = request.seed
    metadata = dict(request.metadata or {})
    if request.suffix:
        metadata[SUFFIX_KEY] = request.suffix
    return jobs.submit_job(
        session,
        store,
        tenant_id=tenant_id,
        dataset_id=request.training_file,
        validation_dataset_id=request.validation_file,
        validation_param="validation_file",
        base_model=request.model,
        hyperparameters=hyperparameters,
        pools=request.pools,
        metadata=metadata,
        max_cost=request.max_cost,
    )


# --- events -----------------------------------------------------------------------------------

_WARNINGS = frozenset(
    {
        EventType.LEASE_EXPIRED,
        EventType.PHASE_RETRYING,
        EventType.OOM_RECOVERED,
        EventType.PHASE_REQUEUED,
        EventType.CANCEL_REQUESTED,
    }
)
_ERRORS = frozenset({EventType.PHASE_FAILED, EventType.JOB_FAILED})


def event_level(event: Event) -> str:
    if event.type in _ERRORS:
        return "error"
    return "warn" if event.type in _WARNINGS else "info"


def event_type(event: Event) -> str:
    return "metrics" if event.type == EventType.METRICS else "message"


def event_message(event: Event) -> str:
    """One line a person reads: what happened, to which phase, with the figures that matter."""
    data = event.data or {}
    where = f" ({event.phase}, attempt {event.attempt})" if event.phase else ""
    if event.type == EventType.METRICS:
        figures = ", ".join(
            f"{name} {value:.4g}"
            for name, value in data.items()
            if name in ("loss", "val_loss", "token_accuracy") and isinstance(value, float)
        )
        step = f"Step {data.get('step')}/{data.get('total_steps')}"
        return f"{step}: {figures}{where}" if figures else f"{step}{where}"
    if event.type == EventType.CHECKPOINT_SAVED:
        return f"Checkpoint saved at step {data.get('step')} ({data.get('kind')}){where}"
    if event.type in _ERRORS and data.get("message"):
        return f"{event.type.replace('_', ' ').capitalize()}{where}: {data['message']}"
    return f"{event.type.replace('_', ' ').capitalize()}{where}"


def event_data(event: Event) -> dict[str, Any]:
    """The relaytune event whole: its own type, phase and attempt beside its data."""
    return {
        "relaytune_type": event.type,
        "phase": event.phase,
        "attempt": event.attempt,
        **(event.data or {}),
    }


# --- checkpoints ------------------------------------------------------------------------------

_METRIC_NAMES = {
    "loss": "train_loss",
    "val_loss": "valid_loss",
    "token_accuracy": "valid_mean_token_accuracy",
}


def checkpoint_model(job: Job, checkpoint: Checkpoint) -> str:
    return f"{model_name(job)}:ckpt-step-{checkpoint.step}"


def checkpoint_metrics(checkpoint: Checkpoint) -> dict[str, float]:
    """The figures the checkpoint's manifest recorded (at its top level, as the training
    recipe writes them, or under "metrics"), in OpenAI's names."""
    manifest = checkpoint.manifest or {}
    nested = manifest.get("metrics")
    nested = nested if isinstance(nested, dict) else {}
    metrics = {"step": float(checkpoint.step)}
    for name, openai_name in _METRIC_NAMES.items():
        value = manifest.get(name, nested.get(name))
        if isinstance(value, int | float):
            metrics[openai_name] = float(value)
    return metrics
