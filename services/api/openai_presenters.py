"""Rows to OpenAI's wire shapes, and OpenAI's create request to relaytune's; the vocabulary
itself (statuses, names, hyperparameters, events) is orchestrator.openai_compat's."""

from __future__ import annotations

from datetime import datetime

from orchestrator import openai_compat as compat
from orchestrator.errors import InvalidRequest
from orchestrator.models import Checkpoint, Dataset, Event, Job, Pool
from services.api.openai_schemas import (
    FileObject,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobCreate,
    FineTuningJobEvent,
    MethodOut,
    OpenAIHyperparameters,
    OpenAIHyperparametersIn,
    SupervisedOut,
)
from services.api.presenters import job_out
from services.api.schemas import as_utc


def unix(moment: datetime) -> int:
    return int(as_utc(moment).timestamp())


def file_object(dataset: Dataset) -> FileObject:
    return FileObject(
        id=dataset.id,
        bytes=dataset.bytes,
        created_at=unix(dataset.created_at),
        filename=dataset.filename,
        format=dataset.format,
        num_samples=dataset.num_samples,
        num_images=dataset.num_images,
    )


def _unsupported(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")


def _hyperparameters(body: FineTuningJobCreate) -> tuple[OpenAIHyperparametersIn | None, str]:
    """The one place the request gives them: method.supervised or the legacy top level."""
    method = body.method
    if method is not None and method.type != "supervised":
        raise _unsupported(
            f"method.type {method.type} is not supported; relaytune trains supervised only",
            "method.type",
        )
    nested = method.supervised.hyperparameters if method and method.supervised else None
    if nested is not None and body.hyperparameters is not None:
        raise InvalidRequest(
            "give hyperparameters in method.supervised.hyperparameters or at the top level, "
            "not both",
            param="hyperparameters",
        )
    if nested is not None:
        return nested, "method.supervised.hyperparameters"
    return body.hyperparameters, "hyperparameters"


def fine_tuning_request(body: FineTuningJobCreate) -> compat.FineTuningRequest:
    if body.integrations:
        raise _unsupported("integrations are not supported", "integrations")
    given, param = _hyperparameters(body)
    hp = given or OpenAIHyperparametersIn()
    return compat.FineTuningRequest(
        model=body.model,
        training_file=body.training_file,
        validation_file=body.validation_file,
        hyperparameters=compat.OpenAIHyperparameters(
            hp.n_epochs, hp.batch_size, hp.learning_rate_multiplier
        ),
        hyperparameters_param=param,
        suffix=body.suffix,
        seed=body.seed,
        metadata=body.metadata,
        pools=body.pools,
        max_cost=body.max_cost,
    )


def fine_tuning_job(job: Job, pools: dict[str, Pool]) -> FineTuningJob:
    relaytune = job_out(job, pools)
    hyperparameters = OpenAIHyperparameters(**compat.openai_hyperparameters(job.hyperparameters))
    metadata = {k: v for k, v in (job.job_metadata or {}).items() if k != compat.SUFFIX_KEY}
    return FineTuningJob(
        id=job.id,
        created_at=unix(job.created_at),
        finished_at=unix(job.finished_at) if job.finished_at else None,
        error=relaytune.error,
        fine_tuned_model=compat.fine_tuned_model(job),
        hyperparameters=hyperparameters,
        method=MethodOut(supervised=SupervisedOut(hyperparameters=hyperparameters)),
        model=job.base_model,
        organization_id=job.tenant_id,
        result_files=[],
        seed=job.hyperparameters["seed"],
        status=compat.openai_status(job.status),
        trained_tokens=compat.trained_tokens(job),
        training_file=job.dataset_id,
        validation_file=job.validation_dataset_id,
        metadata=metadata or None,
        relaytune=relaytune,
    )


def job_event(event: Event) -> FineTuningJobEvent:
    return FineTuningJobEvent(
        id=str(event.id),
        created_at=unix(event.created_at),
        level=compat.event_level(event),
        message=compat.event_message(event),
        type=compat.event_type(event),
        data=compat.event_data(event),
    )


def job_checkpoint(job: Job, checkpoint: Checkpoint) -> FineTuningJobCheckpoint:
    return FineTuningJobCheckpoint(
        id=checkpoint.id,
        created_at=unix(checkpoint.created_at),
        fine_tuned_model_checkpoint=compat.checkpoint_model(job, checkpoint),
        step_number=checkpoint.step,
        metrics=compat.checkpoint_metrics(checkpoint),
        fine_tuning_job_id=job.id,
        phase=checkpoint.phase,
        kind=checkpoint.kind,
    )
