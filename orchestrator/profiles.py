"""Profiles: how fast a phase's parts run for a model on a pool's GPU, and where that came from.

Sources, best first:
- measured: medians over the last runs of the same phase on the same pool with the same model,
  LoRA targets and batch size (`phase_timings`), normalised by work: training seconds per
  sample, evaluation seconds per validation sample, upload seconds per checkpoint,
  preprocessing seconds per sample, download seconds per byte, the rest of a run (job-store
  writes) per run, and the model's artifact bytes per sample (from its preprocess outputs).
- bench: the H200 bench (bench_h200.py), on a pool whose GPU is an H200.
- derived: the bench scaled to the pool's GPU by its datasheet rate and memory bandwidth, plus
  the stated transfer and start-up assumptions below.
- default: the tiny test model, which runs on CPUs; figures timed on a 2-core machine.
A measured profile fills only what its runs measured; the rest stays derived.

A registered base model is fetched into each worker node's model cache before a phase starts
(preprocessing fetches every file but the weights, orchestrator/model_files.py): its model
fetch is the average measured on the pool (hits and misses: a miss is rare but large, so a
median would hide it), else the bytes that phase fetches at the download and verify rates
below, as if the node's cache were cold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from statistics import fmean, median
from typing import Any

from sqlalchemy.orm import Session

from orchestrator import bench_h200, repository
from orchestrator.memory import weights_bytes
from orchestrator.model_shapes import SHAPES, TINY, ModelShape, lora_targets_key
from orchestrator.models import PhaseTiming, Pool

# Assumptions of derived profiles (stated in COSTS.md).
IMPORT_S = 15.0  # python, torch, transformers, peft imports and CUDA init
LOAD_BYTES_PER_S = 1.0e9  # base weights from the worker's local model cache to the GPU
TRANSFER_LATENCY_S = 0.5  # per object-store transfer (list, manifest, first byte)
DOWNLOAD_BYTES_PER_S = 100e6
# sha256 of every fetched model file on one core (436 MB/s measured on a shared 2-core machine,
# bench/README.md "Model cache"): the cache verifies what it downloaded before a phase loads it.
VERIFY_BYTES_PER_S = 400e6
UPLOAD_BYTES_PER_S = 50e6
COMPUTE_EFFICIENCY = 0.5  # share of the datasheet tensor rate a well-fed training step reaches
WEIGHT_READS_PER_STEP = 3  # forward, backward and (with checkpointing) recompute read the weights
DECODE_STEP_FLOOR_S = 0.02  # one greedy-decoding step of a ~30-layer model in eager PyTorch
EXPORT_S = 2.0  # PEFT adapter save and evaluation report
OTHER_S = 0.2  # job-store writes at claim and release, scratch clean-up: what no component times
PREPROCESS_S_PER_SAMPLE = 0.1  # resize, augment and tokenize one reference-size sample on a CPU
CHECKPOINT_BYTES_PER_LORA_PARAM = 12  # fp32 adapter + AdamW's two moments
# The artifact keeps each resized image as 8-bit RGB (PNG, so this is an upper bound): a 16x16
# patch is 768 bytes, where the processor's fp32 patches (two frames) would be 6,144.
ARTIFACT_BYTES_PER_PATCH = 16 * 16 * 3
REFERENCE_PATCHES = bench_h200.PATCHES_PER_SAMPLE
TINY_PATCHES = 64  # the tiny processor caps images at 128x128 pixels

# The tiny model on a CPU: medians of the bundled example's phases on the standalone stack
# (one torch thread per worker on a shared 2-core machine, imports preloaded by the workers;
# bench/README.md, "Estimate accuracy"). Start-up is the model load; transfers are to and from
# a local directory.
TINY_CPU_STARTUP_S = 1.2
TINY_CPU_TRAIN_S_PER_SAMPLE = 0.05
TINY_CPU_PREPROCESS_S_PER_SAMPLE = 0.05
TINY_CPU_EVALUATE_S_PER_SAMPLE = 1.2
TINY_CPU_EXPORT_S = 0.07
TINY_CPU_TRANSFER_S = 0.05

LEARNED_RUNS = 5
TRAINING_PHASES = ("warmup", "final")


@dataclass(frozen=True)
class Profile:
    model_key: str
    pool: str
    gpu_model: str
    precision: str
    lora_targets: str
    micro_batch: int
    gradient_checkpointing: bool
    startup_s: float
    train_s_per_sample: float
    preprocess_s_per_sample: float
    download_s_per_byte: float
    checkpoint_upload_s: float  # per checkpoint (adapter + optimizer state)
    evaluate_s_per_sample: float  # per validation sample: base and adapter, greedy + scored
    export_s: float
    peak_memory_bytes: int | None
    source: str  # of the training rate, the dominant term
    runs: int = 0
    sources: dict[str, str] = field(default_factory=dict)  # component -> source
    other_s: float = OTHER_S  # per run
    artifact_bytes_per_sample: float = 0.0  # of the preprocess artifact, per artifact sample
    transfer_latency_s: float = TRANSFER_LATENCY_S  # per object-store transfer
    import_s: float = IMPORT_S  # the part of startup_s that a phase fused after preprocessing skips
    # Making a registered base model local on the pool's node, per run that starts its own
    # process (a fused phase finds it there); 0 for a model no worker fetches.
    model_fetch_s: float = 0.0

    @property
    def train_samples_per_s(self) -> float:
        return 1.0 / self.train_s_per_sample if self.train_s_per_sample else 0.0


def model_fetch_seconds(model_bytes: int, latency: float = TRANSFER_LATENCY_S) -> float:
    """A cold cache's fetch of a registered model: download, then verify every file."""
    if not model_bytes:
        return 0.0
    return latency + model_bytes / DOWNLOAD_BYTES_PER_S + model_bytes / VERIFY_BYTES_PER_S


def _bench_step(model_key: str, targets: str, checkpointing: bool) -> tuple[float, float, float]:
    """(fixed s, s per sample, hardware FLOPs per sample) of an H200 step: step time grows
    linearly with the micro-batch between the bench's 2 and 8 (never shrinks)."""
    runs = {
        r.micro_batch: r
        for r in bench_h200.RUNS
        if r.model_key == model_key
        and r.lora_targets == targets
        and r.gradient_checkpointing == checkpointing
    }
    small, large = runs[2], runs[8]
    per_sample = max(0.0, (large.step_time_s - small.step_time_s) / 6)
    return (
        small.step_time_s - 2 * per_sample,
        per_sample,
        large.hardware_flops_per_step / large.micro_batch,
    )


def _has_bench(model_key: str) -> bool:
    return any(r.model_key == model_key for r in bench_h200.RUNS)


def _h200_step(
    shape: ModelShape, target_modules: list[str] | str, checkpointing: bool, micro_batch: int
) -> tuple[float, float]:
    """(H200 step seconds, hardware FLOPs per sample); target sets between q/v and all-linear
    are placed by their share of LoRA parameters."""

    # A shape estimated from a config scales its basis's bench by the language model's size.
    size = shape.llm_params / SHAPES[shape.catalog_key].llm_params

    def at(targets: str) -> tuple[float, float]:
        fixed, per_sample, flops = _bench_step(shape.catalog_key, targets, checkpointing)
        return (fixed + per_sample * micro_batch) * size, flops * size

    qv, every = at("q_proj,v_proj"), at("all-linear")
    span = shape.lora_params_all_linear - shape.lora_params_qv
    share = min(1.0, max(0.0, (shape.lora_params(target_modules) - shape.lora_params_qv) / span))
    return (qv[0] + share * (every[0] - qv[0]), qv[1] + share * (every[1] - qv[1]))


def _gpu_step_s(
    shape: ModelShape,
    pool: Pool,
    precision: str,
    h200_step_s: float,
    flops_per_sample: float,
    micro_batch: int,
) -> float:
    """A step is bound by kernel launches (the H200's time, which no faster GPU shortens) or by
    the GPU's arithmetic and weight reads, whichever is slower."""
    tflops = pool.peak_tflops / (4 if precision == "fp32" else 1) or 1.0
    compute = flops_per_sample * micro_batch / (tflops * 1e12 * COMPUTE_EFFICIENCY)
    reads = (
        WEIGHT_READS_PER_STEP
        * weights_bytes(shape, precision)
        / ((pool.memory_bandwidth_gbs or 1.0) * 1e9)
    )
    return max(h200_step_s, compute + reads)


def seed_profile(
    shape: ModelShape,
    pool: Pool,
    *,
    phase: str,
    precision: str,
    target_modules: list[str] | str,
    lora_rank: int,
    micro_batch: int,
    gradient_checkpointing: bool,
    eval_max_new_tokens: int,
    peak_memory_bytes: int | None,
    model_bytes: int = 0,
) -> Profile:
    """The bench, derived or default profile of a known shape on a pool. Preprocessing loads
    only the processor, so its start-up is the imports alone; of a registered model the phase
    fetches `model_bytes` first (preprocessing: all but the weights)."""
    targets = lora_targets_key(target_modules)
    checkpoint_bytes = CHECKPOINT_BYTES_PER_LORA_PARAM * shape.lora_params(
        target_modules, lora_rank
    )

    def made(
        startup: float,
        train: float,
        preprocess: float,
        evaluate: float,
        export: float,
        source: str,
        sources: dict[str, str],
        *,
        latency: float = TRANSFER_LATENCY_S,
        imports: float = IMPORT_S,
    ) -> Profile:
        return Profile(
            shape.key,
            pool.name,
            pool.gpu_model,
            precision,
            targets,
            micro_batch,
            gradient_checkpointing,
            startup_s=startup,
            train_s_per_sample=train,
            preprocess_s_per_sample=preprocess,
            download_s_per_byte=1.0 / DOWNLOAD_BYTES_PER_S,
            checkpoint_upload_s=latency + checkpoint_bytes / UPLOAD_BYTES_PER_S,
            evaluate_s_per_sample=evaluate,
            export_s=export,
            peak_memory_bytes=peak_memory_bytes,
            source=source,
            sources=sources,
            artifact_bytes_per_sample=artifact_bytes_per_sample(shape),
            transfer_latency_s=latency,
            import_s=imports,
            model_fetch_s=model_fetch_seconds(model_bytes, latency),
        )

    if shape.catalog_key == TINY or not _has_bench(shape.catalog_key):
        # Workers import before they fork a phase's process: preprocessing starts at once.
        return made(
            0.0 if phase == "preprocess" else TINY_CPU_STARTUP_S,
            TINY_CPU_TRAIN_S_PER_SAMPLE,
            TINY_CPU_PREPROCESS_S_PER_SAMPLE,
            TINY_CPU_EVALUATE_S_PER_SAMPLE,
            TINY_CPU_EXPORT_S,
            "default",
            dict.fromkeys(_COMPONENTS, "default"),
            latency=TINY_CPU_TRANSFER_S,
            imports=0.0,
        )
    weights = weights_bytes(shape, precision)
    startup = IMPORT_S + (weights / LOAD_BYTES_PER_S if phase != "preprocess" else 0.0)
    h200_step, flops = _h200_step(shape, target_modules, gradient_checkpointing, micro_batch)
    on_bench_gpu = pool.gpu_model == bench_h200.DEVICE and precision == bench_h200.PRECISION
    step = (
        h200_step
        if on_bench_gpu
        else _gpu_step_s(shape, pool, precision, h200_step, flops, micro_batch)
    )
    source = "bench" if on_bench_gpu else "derived"
    decode = max(DECODE_STEP_FLOOR_S, weights / ((pool.memory_bandwidth_gbs or 1.0) * 1e9))
    # Base and adapter each decode greedily and score the answer (two forwards ~ 2/3 step).
    evaluate = 2 * (eval_max_new_tokens * decode + 2 / 3 * step / micro_batch)
    sources = dict.fromkeys(_COMPONENTS, "derived")
    sources["train"] = source
    return made(
        startup, step / micro_batch, PREPROCESS_S_PER_SAMPLE, evaluate, EXPORT_S, source, sources
    )


_COMPONENTS = (
    "startup",
    "model_fetch",
    "input_download",
    "train",
    "preprocess",
    "evaluate",
    "export",
    "checkpoint_upload",
    "other",
)


def _median_rate(rows: Sequence[PhaseTiming], seconds: str, work: str) -> float | None:
    rates = [getattr(r, seconds) / getattr(r, work) for r in rows if getattr(r, work) > 0]
    return median(rates) if rates else None


def _evaluated_samples(session: Session, row: PhaseTiming) -> int:
    """Samples the final evaluation scored: a final run's validation_samples also counts the
    validation pass at each of its epochs' ends, over the same held-out set."""
    hp = repository.job_by_id(session, row.job_id).hyperparameters
    epochs = int(hp.get("total_epochs", 0)) - int(hp.get("warmup_epochs", 0))
    return row.validation_samples // (max(epochs, 0) + 1)


def learned_rates(
    session: Session, phase: str, pool: str, model_key: str, lora_targets: str, micro_batch: int
) -> tuple[dict[str, float], int]:
    """Measured rates for a phase, by profile field, and how many runs they come from."""
    if phase == "preprocess":
        rows = repository.recent_timings(
            session, ["preprocess"], pool, model_key, None, None, limit=LEARNED_RUNS
        )
    else:
        rows = repository.recent_timings(
            session, TRAINING_PHASES, pool, model_key, lora_targets, micro_batch, limit=LEARNED_RUNS
        )
    if not rows:
        return {}, 0
    # A fused run started nothing and downloaded nothing: it says nothing of either.
    unfused = [r for r in rows if not r.fused]
    # Runs of a registered model say whether the node's cache held it; others fetched nothing.
    fetched = [r.model_fetch_s for r in unfused if r.model_cache_hit is not None]
    rates: dict[str, float | None] = {
        "startup_s": median(r.startup_s for r in unfused) if unfused else None,
        "model_fetch_s": fmean(fetched) if fetched else None,
        "download_s_per_byte": _median_rate(unfused, "input_download_s", "input_bytes"),
        "checkpoint_upload_s": _median_rate(rows, "checkpoint_upload_s", "checkpoints"),
        # Billed like the rest: a run's job-store writes and clean-up, about the same per run.
        "other_s": median(r.other_s for r in rows),
    }
    if phase == "preprocess":
        # A preprocess run files building the artifact, its work, under train_s.
        rates["preprocess_s_per_sample"] = _median_rate(rows, "train_s", "samples")
    else:
        rates["train_s_per_sample"] = _median_rate(rows, "train_s", "samples")
        finals = [r for r in rows if r.phase == "final"]
        evaluated = [(r.evaluate_s, _evaluated_samples(session, r)) for r in finals]
        per_sample = [s / n for s, n in evaluated if n > 0]
        rates["evaluate_s_per_sample"] = median(per_sample) if per_sample else None
        rates["export_s"] = median(r.export_s for r in finals) if finals else None
        peaks = [r.peak_memory_bytes for r in rows if r.peak_memory_bytes]
        rates["peak_memory_bytes"] = max(peaks) if peaks else None
    return {k: v for k, v in rates.items() if v is not None}, len(rows)


_FIELD_COMPONENT = {
    "startup_s": "startup",
    "model_fetch_s": "model_fetch",
    "download_s_per_byte": "input_download",
    "checkpoint_upload_s": "checkpoint_upload",
    "train_s_per_sample": "train",
    "preprocess_s_per_sample": "preprocess",
    "evaluate_s_per_sample": "evaluate",
    "export_s": "export",
    "other_s": "other",
}


def with_measurements(base: Profile, rates: dict[str, float], runs: int) -> Profile:
    """The profile with every measured field replaced; measured wherever it was measured."""
    if not runs:
        return base
    sources = dict(base.sources)
    for name in rates:
        if name in _FIELD_COMPONENT:
            sources[_FIELD_COMPONENT[name]] = "measured"
    measured_main = "train_s_per_sample" in rates or "preprocess_s_per_sample" in rates
    values: dict[str, Any] = dict(rates)
    if "peak_memory_bytes" in values:
        values["peak_memory_bytes"] = int(values["peak_memory_bytes"])
    return replace(
        base,
        **values,
        runs=runs,
        sources=sources,
        source="measured" if measured_main else base.source,
    )


def measured_only(
    model_key: str,
    pool: Pool,
    rates: dict[str, float],
    runs: int,
    *,
    precision: str,
    lora_targets: str,
    micro_batch: int,
    model_bytes: int = 0,
) -> Profile | None:
    """A profile for a model of unknown shape: only what its own runs measured (and its
    fetch, derived from its stored bytes until measured)."""
    if not runs or not ({"train_s_per_sample", "preprocess_s_per_sample"} & set(rates)):
        return None
    empty = Profile(
        model_key,
        pool.name,
        pool.gpu_model,
        precision,
        lora_targets,
        micro_batch,
        False,
        startup_s=0.0,
        train_s_per_sample=0.0,
        preprocess_s_per_sample=0.0,
        download_s_per_byte=0.0,
        checkpoint_upload_s=0.0,
        evaluate_s_per_sample=0.0,
        export_s=0.0,
        peak_memory_bytes=None,
        source="measured",
        sources={**dict.fromkeys(_COMPONENTS, "measured"), "model_fetch": "derived"},
        other_s=0.0,
        artifact_bytes_per_sample=artifact_bytes_per_sample(None),
        model_fetch_s=model_fetch_seconds(model_bytes),
    )
    return with_measurements(empty, rates, runs)


def artifact_bytes_per_sample(shape: ModelShape | None) -> int:
    patches = TINY_PATCHES if shape is not None and shape.catalog_key == TINY else REFERENCE_PATCHES
    return patches * ARTIFACT_BYTES_PER_PATCH


def learned_artifact_bytes_per_sample(session: Session, model_key: str) -> float | None:
    """Median artifact bytes per sample of the model's last successful preprocess runs, on any
    pool: images, resolution and the artifact's format decide it, not the GPU."""
    sizes = repository.recent_artifact_sizes(session, model_key, limit=LEARNED_RUNS)
    per_sample = [nbytes / samples for nbytes, samples in sizes if samples > 0]
    return median(per_sample) if per_sample else None
