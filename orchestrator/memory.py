"""GPU memory a training phase needs, and whether a pool's GPU holds it.

peak = frozen weights at the phase's precision
     + LoRA parameters with their AdamW state (fp32 parameter, gradient and two moments)
     + activations per sample x micro-batch (far fewer under gradient checkpointing)
     + a small fixed workspace (cuBLAS, allocator slack)
This is what torch.cuda.max_memory_allocated reports; the CUDA context and fragmentation come
out of the pool's reserve instead. The coefficients are fitted to the H200 bench (every
configuration predicted within 15%, tests/orchestrator/test_memory.py).

Preprocessing tokenizes and augments on the CPU and puts no weights on the GPU: it always fits.
Training follows the recipe's out-of-memory ladder (worker/recipe/oom.py): halve the
micro-batch down to 1, then turn on gradient checkpointing; a phase that does not fit at
micro-batch 1 with checkpointing cannot run on that GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.hyperparameters import Hyperparameters
from orchestrator.model_shapes import ModelShape

GIB = 1024**3
RESERVE_BYTES = 1 * GIB  # CUDA context, allocator fragmentation, other processes' crumbs
WORKSPACE_BYTES = 0.07e9
LORA_STATE_BYTES_PER_PARAM = 16  # fp32 parameter + gradient + AdamW's two moments
BYTES_PER_WEIGHT = {"bf16": 2, "fp16": 2, "fp32": 4}


@dataclass(frozen=True)
class MemoryPlan:
    """The configuration a phase is expected to train with, and what it needs."""

    precision: str
    micro_batch: int
    gradient_checkpointing: bool
    peak_bytes: int
    usable_bytes: int
    feasible: bool
    reason: str


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def usable_bytes(gpu_memory_gb: float) -> int:
    return int(gpu_memory_gb * 1e9 - RESERVE_BYTES)


def precision_for(requested: str, supports_bf16: bool) -> str:
    """The recipe's rule: auto is bf16 where the GPU has it, else fp16 with a grad scaler."""
    if requested == "auto":
        return "bf16" if supports_bf16 else "fp16"
    return requested


def weights_bytes(shape: ModelShape, precision: str) -> int:
    return shape.total_params * BYTES_PER_WEIGHT[precision]


def activation_bytes_per_sample(
    shape: ModelShape, target_modules: list[str] | str, gradient_checkpointing: bool
) -> float:
    """Between the q/v and all-linear calibration points by the share of LoRA parameters:
    each adapted projection keeps its input and its dropout mask for the backward pass."""
    if gradient_checkpointing:
        return shape.activation_bytes_checkpointed
    qv, every = shape.lora_params_qv, shape.lora_params_all_linear
    share = (shape.lora_params(target_modules) - qv) / (every - qv)
    share = min(1.0, max(0.0, share))
    return shape.activation_bytes_qv + share * (
        shape.activation_bytes_all_linear - shape.activation_bytes_qv
    )


def training_peak_bytes(
    shape: ModelShape,
    *,
    precision: str,
    target_modules: list[str] | str,
    lora_rank: int,
    micro_batch: int,
    gradient_checkpointing: bool,
) -> int:
    weights = weights_bytes(shape, precision)
    lora = shape.lora_params(target_modules, lora_rank) * LORA_STATE_BYTES_PER_PARAM
    # fp32 activations take twice the 16-bit calibration.
    scale = 2.0 if precision == "fp32" else 1.0
    activations = (
        scale
        * micro_batch
        * activation_bytes_per_sample(shape, target_modules, gradient_checkpointing)
    )
    return int(weights + lora + activations + WORKSPACE_BYTES)


def _ladder(micro_batch: int, checkpointing: bool) -> list[tuple[int, bool]]:
    """The configurations the recipe's OOM recovery tries, in order."""
    steps, size = [], micro_batch
    while size > 1:
        steps.append((size, checkpointing))
        size //= 2
    steps.append((1, checkpointing))
    if not checkpointing:
        steps.append((1, True))
    return steps


def training_plan(
    shape: ModelShape,
    hp: Hyperparameters,
    *,
    gpu_model: str,
    gpu_memory_gb: float,
    supports_bf16: bool,
) -> MemoryPlan:
    """The first configuration of the OOM ladder that fits, or why none does."""
    precision = precision_for(hp.precision, supports_bf16)
    usable = usable_bytes(gpu_memory_gb)
    if precision == "bf16" and not supports_bf16:
        return MemoryPlan(
            precision,
            hp.batch_size,
            hp.gradient_checkpointing,
            0,
            usable,
            False,
            f"precision bf16 is not supported by {gpu_model}; use auto or fp16",
        )
    weights = weights_bytes(shape, precision)
    if weights >= usable:
        return MemoryPlan(
            precision,
            hp.batch_size,
            hp.gradient_checkpointing,
            weights,
            usable,
            False,
            f"{shape.key} weights in {precision} need {gib(weights)}; "
            f"{gpu_model} has {gib(usable)} usable",
        )
    first = None
    for micro_batch, checkpointing in _ladder(hp.batch_size, hp.gradient_checkpointing):
        peak = training_peak_bytes(
            shape,
            precision=precision,
            target_modules=hp.target_modules,
            lora_rank=hp.lora_rank,
            micro_batch=micro_batch,
            gradient_checkpointing=checkpointing,
        )
        first = first or peak
        if peak <= usable:
            return MemoryPlan(
                precision,
                micro_batch,
                checkpointing,
                peak,
                usable,
                True,
                _fit_reason(
                    precision, hp, micro_batch, checkpointing, first, peak, usable, gpu_model
                ),
            )
    return MemoryPlan(
        precision,
        1,
        True,
        peak,
        usable,
        False,
        f"{shape.key} needs {gib(peak)} even at micro-batch 1 with gradient checkpointing; "
        f"{gpu_model} has {gib(usable)} usable",
    )


def _fit_reason(
    precision: str,
    hp: Hyperparameters,
    micro_batch: int,
    checkpointing: bool,
    first: int,
    peak: int,
    usable: int,
    gpu_model: str,
) -> str:
    scaler = " with the fp16 grad scaler" if precision == "fp16" else ""
    if (micro_batch, checkpointing) == (hp.batch_size, hp.gradient_checkpointing):
        return f"fits: {gib(peak)} of {gib(usable)} usable on {gpu_model}, {precision}{scaler}"
    how = f"micro-batch {micro_batch}" + (" with gradient checkpointing" if checkpointing else "")
    return (
        f"micro-batch {hp.batch_size} needs {gib(first)} of {gib(usable)} usable on "
        f"{gpu_model}; out-of-memory recovery continues at {how} ({gib(peak)}), "
        f"{precision}{scaler}"
    )
