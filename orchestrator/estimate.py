"""What a job will take, phase by phase, before it runs: seconds by component and cost.

A phase's billed seconds = startup (imports, base model load) + model fetch (a registered base
model brought into the pool node's cache: preprocessing brings every file but the weights,
orchestrator/model_files.py) + input download + its work
(preprocessing, or training with in-loop validation) + evaluation + export + checkpoint
uploads + other (job-store writes and clean-up); cost = seconds x the pool's hourly price.
A phase on the pool of the phase before it runs in that phase's process
(orchestrator/fusion.py): no imports, no model fetch (but the weights preprocessing did not
fetch) and no downloads again, and after a training phase no model load either. The work
counts mirror the recipe:
- validation: every sample of a validation data set, never augmented, the training set then
  training whole (worker/recipe/preprocess.py validation_from_dataset); without one,
  validation_samples, else by default 1-3 samples of a data set of at most 20 (15%), 10% of
  a larger one (split_validation); scored at each epoch end and evaluated at the end;
- training samples per epoch = training originals x (1 + augmentation copies, if on);
- preprocessing downloads and tokenizes both data sets (and the training copies);
- checkpoints per training phase = an epoch checkpoint at each epoch end but the last, a best
  checkpoint at each epoch end (an upper bound: written only when validation improves), the
  final one, plus step and time checkpoints; the final phase also uploads the adapter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from orchestrator import profiles
from orchestrator.cost import price
from orchestrator.errors import InvalidRequest
from orchestrator.hyperparameters import Hyperparameters
from orchestrator.memory import MemoryPlan, precision_for, training_plan, weights_bytes
from orchestrator.model_files import bytes_read, needs_weights
from orchestrator.model_registry import find_model
from orchestrator.model_shapes import (
    ModelShape,
    lora_targets_key,
    model_key_for,
    shape_for,
    shape_from_config,
)
from orchestrator.models import Dataset, Pool, RegisteredModel
from orchestrator.plan import PHASES, epoch_range
from orchestrator.profiles import Profile

COMPONENTS = (
    "startup",
    "model_fetch",
    "input_download",
    "preprocess",
    "train",
    "evaluate",
    "export",
    "checkpoint_upload",
    "other",
)
SMALL_DATASET = 20  # as worker/recipe/preprocess.py
MAX_SMALL_VALIDATION = 3
VALIDATION_FORWARD_SHARE = 1 / 3  # a validation forward costs about a third of a training step

# (phase, pool, memory plan) -> the profile to estimate with, or None when nothing is known.
ProfileLookup = Callable[[str, Pool, MemoryPlan], Profile | None]


def money(amount: Decimal, currency: str) -> dict[str, str]:
    return {"amount": str(amount), "currency": currency}


@dataclass(frozen=True)
class DatasetSize:
    num_samples: int
    num_images: int
    bytes: int
    # The job's validation data set: held out whole instead of a split of this one.
    validation: DatasetSize | None = None

    @property
    def input_bytes(self) -> int:
        """What preprocessing downloads: the training data set and any validation data set."""
        return self.bytes + (self.validation.bytes if self.validation else 0)


def dataset_size(dataset: Dataset, validation: Dataset | None = None) -> DatasetSize:
    """A job's data as the estimator counts it: its training and any validation data set."""
    held_out = None if validation is None else dataset_size(validation)
    return DatasetSize(dataset.num_samples, dataset.num_images, dataset.bytes, held_out)


@dataclass(frozen=True)
class Work:
    """How much each phase handles, from the data sets' sizes and the hyperparameters."""

    validation: int  # held-out samples: scored at each epoch end, evaluated at the end
    train_per_epoch: int  # training originals and their augmented copies
    artifact_samples: int  # what preprocessing tokenizes: both sets' originals and the copies


def validation_count(num_samples: int, requested: int | None) -> int:
    if requested == 0 or num_samples < 2:
        return 0
    if requested is not None:
        return min(requested, num_samples - 1)
    if num_samples <= SMALL_DATASET:
        return min(MAX_SMALL_VALIDATION, max(1, round(0.15 * num_samples)))
    return max(1, round(0.1 * num_samples))


def check_validation_split(hp: Hyperparameters, num_samples: int) -> None:
    """Refuse at submit what preprocessing would refuse later: nothing left to train on."""
    if hp.validation_samples and hp.validation_samples >= num_samples:
        raise InvalidRequest(
            f"validation_samples ({hp.validation_samples}) must leave at least one of the "
            f"data set's {num_samples} samples to train on",
            param="hyperparameters.validation_samples",
        )


def work_for(hp: Hyperparameters, dataset: DatasetSize) -> Work:
    if dataset.validation is not None:
        # A validation data set replaces the split: every training sample trains.
        validation = dataset.validation.num_samples
        originals = dataset.num_samples
    else:
        validation = validation_count(dataset.num_samples, hp.validation_samples)
        originals = dataset.num_samples - validation
    # Only training samples get augmented copies; the artifact holds both sets' originals.
    copies = hp.augmentation.copies if hp.augmentation.enabled else 0
    return Work(validation, originals * (1 + copies), originals + validation + originals * copies)


@dataclass
class PhaseEstimate:
    phase: str
    pool: str
    gpu_model: str
    precision: str | None
    micro_batch: int | None
    gradient_checkpointing: bool | None
    seconds: dict[str, float]
    cost: Decimal
    currency: str
    peak_memory_bytes: int | None
    feasible: bool
    reason: str
    samples: int = 0
    checkpoints: int = 0
    sources: list[str] = field(default_factory=list)
    fused: bool = False  # runs in the process of the previous phase (same pool)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "pool": self.pool,
            "gpu_model": self.gpu_model,
            "precision": self.precision,
            "micro_batch": self.micro_batch,
            "gradient_checkpointing": self.gradient_checkpointing,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "total_seconds": round(self.total_seconds, 3),
            "cost": money(self.cost, self.currency),
            "peak_memory_bytes": self.peak_memory_bytes,
            "feasible": self.feasible,
            "reason": self.reason,
            "samples": self.samples,
            "checkpoints": self.checkpoints,
            "sources": self.sources,
            "fused": self.fused,
        }


@dataclass
class PlanEstimate:
    name: str
    pools: dict[str, str]
    phases: list[PhaseEstimate]

    @property
    def cost(self) -> Decimal:
        return sum((p.cost for p in self.phases), Decimal(0))

    @property
    def currency(self) -> str:
        return self.phases[0].currency

    @property
    def total_seconds(self) -> float:
        return sum(p.total_seconds for p in self.phases)

    @property
    def feasible(self) -> bool:
        return all(p.feasible for p in self.phases)

    @property
    def reason(self) -> str:
        blocked = [f"{p.phase} on {p.pool}: {p.reason}" for p in self.phases if not p.feasible]
        return "; ".join(blocked) if blocked else "every phase fits its GPU"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pools": self.pools,
            "cost": money(self.cost, self.currency),
            "total_seconds": round(self.total_seconds, 3),
            "feasible": self.feasible,
            "reason": self.reason,
            "phases": [p.to_dict() for p in self.phases],
        }


def _unchecked_plan(hp: Hyperparameters, pool: Pool) -> MemoryPlan:
    precision = precision_for(hp.precision, pool.supports_bf16)
    return MemoryPlan(
        precision,
        hp.batch_size,
        hp.gradient_checkpointing,
        0,
        0,
        True,
        "model shape unknown: memory not checked",
    )


def memory_plan(shape: ModelShape | None, hp: Hyperparameters, pool: Pool) -> MemoryPlan:
    if shape is None:
        return _unchecked_plan(hp, pool)
    return training_plan(
        shape,
        hp,
        gpu_model=pool.gpu_model,
        gpu_memory_gb=pool.gpu_memory_gb,
        supports_bf16=pool.supports_bf16,
    )


def _transfer_s(profile: Profile, nbytes: float) -> float:
    # A measured rate (seconds over bytes of whole runs) already holds the per-transfer latency.
    measured = profile.sources.get("input_download") == "measured"
    return (0.0 if measured else profile.transfer_latency_s) + nbytes * profile.download_s_per_byte


def _fetched(profile: Profile) -> list[str]:
    """The model fetch, among a phase's sources only when a worker fetches the model."""
    return ["model_fetch"] if profile.model_fetch_s else []


def _preprocess(
    phase: str, pool: Pool, profile: Profile, dataset: DatasetSize, work: Work
) -> PhaseEstimate:
    seconds = dict.fromkeys(COMPONENTS, 0.0)
    seconds["startup"] = profile.startup_s
    seconds["model_fetch"] = profile.model_fetch_s
    seconds["input_download"] = _transfer_s(profile, dataset.input_bytes)
    seconds["preprocess"] = work.artifact_samples * profile.preprocess_s_per_sample
    artifact_bytes = work.artifact_samples * profile.artifact_bytes_per_sample
    seconds["checkpoint_upload"] = (
        profile.checkpoint_upload_s
        if profile.sources.get("checkpoint_upload") == "measured"
        else profile.transfer_latency_s + artifact_bytes / profiles.UPLOAD_BYTES_PER_S
    )
    seconds["other"] = profile.other_s
    return PhaseEstimate(
        phase,
        pool.name,
        pool.gpu_model,
        None,
        None,
        None,
        seconds,
        price(sum(seconds.values()), pool.hourly_price),
        pool.currency,
        None,
        True,
        "preprocessing runs on the CPU: no model weights on the GPU",
        samples=work.artifact_samples,
        checkpoints=1,
        sources=sorted(
            {
                profile.sources.get(c, profile.source)
                for c in (
                    "startup",
                    *_fetched(profile),
                    "input_download",
                    "preprocess",
                    "checkpoint_upload",
                    "other",
                )
            }
        ),
    )


def _checkpoint_count(hp: Hyperparameters, work: Work, epochs: int, train_s: float) -> int:
    if epochs == 0:
        return 1
    count = (epochs - 1) + (epochs if work.validation else 0) + 1
    if hp.checkpoint_every_steps:
        per_step = hp.batch_size * hp.gradient_accumulation
        steps = epochs * math.ceil(work.train_per_epoch / per_step)
        count += steps // hp.checkpoint_every_steps
    return count + int(train_s // hp.checkpoint_interval_seconds)


def _training(
    phase: str,
    pool: Pool,
    profile: Profile,
    plan: MemoryPlan,
    shape: ModelShape | None,
    hp: Hyperparameters,
    work: Work,
    fused_after: str | None,
) -> PhaseEstimate:
    epochs = epoch_range(phase, hp).end - epoch_range(phase, hp).start
    samples = epochs * work.train_per_epoch
    seconds = dict.fromkeys(COMPONENTS, 0.0)
    checkpoint_bytes = (
        shape.lora_params(hp.target_modules, hp.lora_rank)
        * profiles.CHECKPOINT_BYTES_PER_LORA_PARAM
        if shape
        else 0
    )
    if fused_after is None:
        seconds["startup"] = profile.startup_s
        seconds["model_fetch"] = profile.model_fetch_s
        # The final phase resumes from the warmup's last checkpoint.
        download = work.artifact_samples * profile.artifact_bytes_per_sample + (
            checkpoint_bytes if phase == "final" else 0
        )
        seconds["input_download"] = _transfer_s(profile, download)
    elif fused_after == "preprocess":
        # Same process as preprocessing: imports done and the artifact on disk; the model loads,
        # and a registered model's weights are fetched now (preprocessing fetched the rest, a
        # rounding error beside them).
        seconds["startup"] = max(0.0, profile.startup_s - profile.import_s)
        seconds["model_fetch"] = profile.model_fetch_s
    # After a training phase on the same pool, the model and the run's state stay in memory.
    # Measured training seconds already hold the epoch-end validation passes.
    measured = profile.sources.get("train") == "measured"
    validation = 0.0 if measured else epochs * work.validation * VALIDATION_FORWARD_SHARE
    seconds["train"] = (samples + validation) * profile.train_s_per_sample
    checkpoints = _checkpoint_count(hp, work, epochs, seconds["train"])
    uploads = checkpoints * profile.checkpoint_upload_s
    if phase == "final":
        seconds["evaluate"] = work.validation * profile.evaluate_s_per_sample
        seconds["export"] = profile.export_s
        uploads += profile.checkpoint_upload_s  # the exported adapter
        checkpoints += 1
        if hp.export_merged and shape is not None:
            merged = weights_bytes(shape, "bf16")
            seconds["export"] += merged / profiles.LOAD_BYTES_PER_S
            uploads += merged / profiles.UPLOAD_BYTES_PER_S
    seconds["checkpoint_upload"] = uploads
    seconds["other"] = profile.other_s
    used = ["startup", *_fetched(profile), "input_download", "train", "checkpoint_upload", "other"]
    used += ["evaluate", "export"] if phase == "final" else []
    return PhaseEstimate(
        phase,
        pool.name,
        pool.gpu_model,
        plan.precision,
        plan.micro_batch,
        plan.gradient_checkpointing,
        seconds,
        price(sum(seconds.values()), pool.hourly_price),
        pool.currency,
        profile.peak_memory_bytes or plan.peak_bytes or None,
        plan.feasible,
        plan.reason,
        samples=samples,
        checkpoints=checkpoints,
        sources=sorted({profile.sources.get(c, profile.source) for c in used}),
        fused=fused_after is not None,
    )


def _blocked(phase: str, pool: Pool, plan: MemoryPlan, reason: str) -> PhaseEstimate:
    return PhaseEstimate(
        phase,
        pool.name,
        pool.gpu_model,
        plan.precision,
        plan.micro_batch,
        plan.gradient_checkpointing,
        dict.fromkeys(COMPONENTS, 0.0),
        Decimal(0),
        pool.currency,
        plan.peak_bytes or None,
        False,
        reason,
    )


def estimate_plan(
    name: str,
    shape: ModelShape | None,
    hp: Hyperparameters,
    dataset: DatasetSize,
    pools: dict[str, Pool],
    lookup: ProfileLookup,
) -> PlanEstimate | None:
    """Every phase of the job on its pool; None when some phase has no profile at all."""
    work = work_for(hp, dataset)
    estimates: list[PhaseEstimate] = []
    for phase in PHASES:
        pool = pools[phase]
        previous = estimates[-1] if estimates else None
        fused_after = (
            previous.phase
            if previous is not None and previous.feasible and previous.pool == pool.name
            else None
        )
        plan = memory_plan(shape, hp, pool) if phase != "preprocess" else _unchecked_plan(hp, pool)
        if not plan.feasible:
            estimates.append(_blocked(phase, pool, plan, plan.reason))
            continue
        profile = lookup(phase, pool, plan)
        if profile is None:
            return None
        if phase == "preprocess":
            estimates.append(_preprocess(phase, pool, profile, dataset, work))
        else:
            estimates.append(_training(phase, pool, profile, plan, shape, hp, work, fused_after))
    return PlanEstimate(name, {p: pools[p].name for p in PHASES}, estimates)


def profile_key(hp: Hyperparameters, plan: MemoryPlan) -> tuple[str, str, int]:
    """(precision, LoRA targets, micro-batch): with model, phase and pool, a profile's key."""
    return plan.precision, lora_targets_key(hp.target_modules), plan.micro_batch


@dataclass(frozen=True)
class ModelFetch:
    """What a worker fetches of a registered model before a phase; nothing for a model the
    server holds itself."""

    total_bytes: int = 0  # every file: what a training phase reads
    without_weights_bytes: int = 0  # configs, processor, tokenizer: what preprocessing reads

    @classmethod
    def of(cls, model: RegisteredModel) -> ModelFetch:
        return cls(model.total_bytes, bytes_read(model.files, weights=False))

    def bytes_for(self, phase: str) -> int:
        return self.total_bytes if needs_weights(phase) else self.without_weights_bytes


NO_FETCH = ModelFetch()


def seeded_lookup(
    shape: ModelShape, hp: Hyperparameters, fetch: ModelFetch = NO_FETCH
) -> Callable[[str, Pool, MemoryPlan], Profile]:
    """Bench, derived or default profiles only: what is known before any run is measured.
    `fetch`: what a worker fetches of a registered model, by phase."""

    def lookup(phase: str, pool: Pool, plan: MemoryPlan) -> Profile:
        precision, _, micro_batch = profile_key(hp, plan)
        return profiles.seed_profile(
            shape,
            pool,
            phase=phase,
            precision=precision,
            target_modules=hp.target_modules,
            lora_rank=hp.lora_rank,
            micro_batch=micro_batch,
            gradient_checkpointing=plan.gradient_checkpointing,
            eval_max_new_tokens=hp.eval_max_new_tokens,
            peak_memory_bytes=plan.peak_bytes or None,
            model_bytes=fetch.bytes_for(phase),
        )

    return lookup


def session_lookup(
    session: Session,
    shape: ModelShape | None,
    model_key: str,
    hp: Hyperparameters,
    fetch: ModelFetch = NO_FETCH,
) -> ProfileLookup:
    """Profiles from the job store's measured runs over the bench, derived or default seeds."""
    learned: dict[tuple[str, str], tuple[dict[str, float], int]] = {}
    seeded = seeded_lookup(shape, hp, fetch) if shape is not None else None
    artifact = profiles.learned_artifact_bytes_per_sample(session, model_key)

    def lookup(phase: str, pool: Pool, plan: MemoryPlan) -> Profile | None:
        precision, targets, micro_batch = profile_key(hp, plan)
        kind = "preprocess" if phase == "preprocess" else "final"
        # Runs are filed under the job's batch_size, whatever micro-batch they ended with.
        if (kind, pool.name) not in learned:
            learned[kind, pool.name] = profiles.learned_rates(
                session, kind, pool.name, model_key, targets, hp.batch_size
            )
        rates, runs = learned[kind, pool.name]
        if phase == "preprocess":
            rates = {k: v for k, v in rates.items() if k != "peak_memory_bytes"}
        if seeded is None:
            profile = profiles.measured_only(
                model_key,
                pool,
                rates,
                runs,
                precision=precision,
                lora_targets=targets,
                micro_batch=micro_batch,
                model_bytes=fetch.bytes_for(phase),
            )
        else:
            profile = profiles.with_measurements(seeded(phase, pool, plan), rates, runs)
        # Measured on whichever pool preprocessed the model's data: it sizes every download.
        if profile is None or artifact is None:
            return profile
        return replace(profile, artifact_bytes_per_sample=artifact)

    return lookup


def estimate_job(
    session: Session,
    *,
    base_model: str,
    hyperparameters: Hyperparameters,
    dataset: DatasetSize,
    pools: dict[str, Pool],
    name: str = "requested",
) -> PlanEstimate | None:
    """The job on the given pools (phase -> pool); None when nothing is known of its model."""
    model = model_facts(session, base_model)
    lookup = session_lookup(session, model.shape, model.key, hyperparameters, model.fetch)
    return estimate_plan(name, model.shape, hyperparameters, dataset, pools, lookup)


@dataclass(frozen=True)
class ModelFacts:
    """What the estimator knows of a base model before it runs."""

    key: str  # what its runs are filed under (orchestrator.model_shapes.model_key_for)
    shape: ModelShape | None  # None: its size is not known here
    fetch: ModelFetch  # what a worker fetches before a phase: a registered model's files


def model_facts(session: Session, base_model: str) -> ModelFacts:
    """A registered model whose name the catalog does not know is sized by its recorded
    config and parameter count instead."""
    key, shape = model_key_for(base_model), shape_for(base_model)
    registered = find_model(session, base_model)
    if registered is None:
        return ModelFacts(key, shape, NO_FETCH)
    if shape is None:
        shape = shape_from_config(key, registered.config, registered.parameter_count)
    return ModelFacts(key, shape, ModelFetch.of(registered))
