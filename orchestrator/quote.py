"""Answers before a job: what it would cost on each plan, and the profiles behind the figures.
Nothing is created."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from orchestrator import repository
from orchestrator.base_models import check_fits_model, resolve_base_model
from orchestrator.errors import InvalidRequest
from orchestrator.estimate import (
    DatasetSize,
    check_validation_split,
    dataset_size,
    memory_plan,
    model_facts,
    money,
    session_lookup,
)
from orchestrator.jobs import parse_hyperparameters, resolve_pools, validation_dataset
from orchestrator.memory import MemoryPlan
from orchestrator.model_registry import list_models
from orchestrator.model_shapes import SHAPES, model_key_for
from orchestrator.models import Pool
from orchestrator.planner import compare_plans
from orchestrator.profiles import Profile
from orchestrator.settings import get_settings


def quote_job(
    session: Session,
    *,
    tenant_id: str,
    dataset_id: str,
    base_model: str,
    hyperparameters: dict[str, Any] | None,
    pools: dict[str, str] | str | None,
    max_cost: Decimal | None,
    validation_dataset_id: str | None = None,
) -> dict[str, Any]:
    """The body of a job submission, answered with the plans side by side. A validation data
    set is checked as submit checks it and counted as the worker uses it."""
    hp = parse_hyperparameters(hyperparameters)
    requested = resolve_pools(session, pools)
    dataset = repository.dataset_for_tenant(session, tenant_id, dataset_id)
    validation = (
        None
        if validation_dataset_id is None
        else validation_dataset(
            session, tenant_id, dataset, hp, validation_dataset_id, param="validation_dataset_id"
        )
    )
    model = resolve_base_model(base_model, get_settings(), session)
    check_fits_model(hp, model)
    base_model = model.name
    check_validation_split(hp, dataset.num_samples)
    size = dataset_size(dataset, validation)
    comparison = compare_plans(
        session, base_model=base_model, hp=hp, dataset=size, requested=requested
    )
    if comparison is None:
        raise InvalidRequest(
            f"cannot estimate model '{model_key_for(base_model)}': it has no catalog shape "
            f"({', '.join(sorted(SHAPES))}) and no measured run",
            param="base_model",
            code="unknown_model",
        )
    within = None
    if max_cost is not None:
        within = comparison.chosen.feasible and comparison.chosen.cost <= max_cost
    return {
        **comparison.to_dict(),
        "base_model": base_model,
        "dataset": _dataset_row(dataset.id, size),
        "validation_dataset": None
        if validation is None
        else _dataset_row(validation.id, dataset_size(validation)),
        "max_cost": None if max_cost is None else money(max_cost, comparison.chosen.currency),
        "within_budget": within,
    }


def _dataset_row(dataset_id: str, size: DatasetSize) -> dict[str, Any]:
    return {
        "id": dataset_id,
        "num_samples": size.num_samples,
        "num_images": size.num_images,
        "bytes": size.bytes,
    }


def _profile_row(
    phase: str, pool: Pool, plan: MemoryPlan, profile: Profile | None
) -> dict[str, Any]:
    training = phase != "preprocess"
    row: dict[str, Any] = {
        "phase": phase,
        "pool": pool.name,
        "gpu_model": pool.gpu_model,
        "precision": plan.precision if training else None,
        "micro_batch": plan.micro_batch if training else None,
        "gradient_checkpointing": plan.gradient_checkpointing if training else None,
        "feasible": plan.feasible or not training,
        "reason": plan.reason if training else "preprocessing runs on the CPU",
        "source": None,
        "sources": {},
        "runs": 0,
    }
    if profile is None:
        return row
    row.update(
        model_key=profile.model_key,
        lora_targets=profile.lora_targets,
        startup_s=round(profile.startup_s, 3),
        # a registered model's fetch into a cold node cache, or its measured average
        model_fetch_s=round(profile.model_fetch_s, 3),
        download_bytes_per_s=round(1 / profile.download_s_per_byte)
        if profile.download_s_per_byte
        else None,
        checkpoint_upload_s=round(profile.checkpoint_upload_s, 3),
        other_s=round(profile.other_s, 3),
        artifact_bytes_per_sample=round(profile.artifact_bytes_per_sample),
        source=profile.source,
        sources=profile.sources,
        runs=profile.runs,
    )
    if phase == "preprocess":
        row["preprocess_s_per_sample"] = round(profile.preprocess_s_per_sample, 4)
    else:
        row.update(
            train_samples_per_s=round(profile.train_samples_per_s, 3),
            evaluate_s_per_validation_sample=round(profile.evaluate_s_per_sample, 3),
            export_s=round(profile.export_s, 3),
            peak_memory_bytes=profile.peak_memory_bytes,
        )
    return row


def list_profiles(
    session: Session, *, base_model: str | None, hyperparameters: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Each known model's profile on each pool (preprocessing and training), with its source:
    the catalog shapes, every registered model (sized by its recorded config, with the model
    fetch its workers pay) and every model with measured runs; or just `base_model`."""
    hp = parse_hyperparameters(hyperparameters)
    if base_model:
        models = [base_model]
    else:
        registered = [m.name for m in list_models(session)]
        models = sorted(
            set(SHAPES) | set(repository.measured_model_keys(session)) | set(registered)
        )
    rows = []
    for model in models:
        facts = model_facts(session, model)
        lookup = session_lookup(session, facts.shape, facts.key, hp, facts.fetch)
        for pool in repository.pools(session):
            for phase in ("preprocess", "final"):
                plan = memory_plan(facts.shape, hp, pool)
                runs_here = plan.feasible or phase == "preprocess"
                profile = lookup(phase, pool, plan) if runs_here else None
                if profile is None and facts.shape is None:
                    continue
                row = _profile_row("training" if phase == "final" else phase, pool, plan, profile)
                rows.append({"base_model": model, "model_key": facts.key, **row})
    return rows
