"""LoRA training measured on one NVIDIA H200 (bench/results/nvidia-h200-2026-11-28.json).

bench/ is not installed with the package, so the figures the estimator needs are copied here;
tests/orchestrator/test_bench_data.py checks them against the JSON. Every run trained one
reference sample per micro-batch element: one 448x448 image (784 patches, 196 merged image
tokens) and 64 text tokens, 262 language-model tokens in all, bf16, LoRA r 8.
"""

from __future__ import annotations

from dataclasses import dataclass

DEVICE = "NVIDIA H200"
PRECISION = "bf16"
# Datasheet dense bf16 tensor rate and HBM3e bandwidth of the H200.
PEAK_TFLOPS = 989.4
MEMORY_BANDWIDTH_GBS = 4800.0
TOKENS_PER_SAMPLE = 262
PATCHES_PER_SAMPLE = 784
LORA_RANK = 8


@dataclass(frozen=True)
class BenchRun:
    model_key: str
    lora_targets: str  # as PhaseTiming files them: "q_proj,v_proj" or "all-linear"
    gradient_checkpointing: bool
    micro_batch: int
    step_time_s: float  # median of 10 timed optimizer steps (one micro-batch each)
    peak_memory_bytes: int  # torch.cuda.max_memory_allocated
    hardware_flops_per_step: float  # analytic FLOP model, recompute included


RUNS = (
    BenchRun("qwen3-vl-2b", "q_proj,v_proj", False, 2, 0.15507, 6942326272, 4.8101e12),
    BenchRun("qwen3-vl-2b", "q_proj,v_proj", False, 8, 0.16188, 14627277824, 1.9240e13),
    BenchRun("qwen3-vl-2b", "q_proj,v_proj", True, 2, 0.28079, 5542369792, 6.3028e12),
    BenchRun("qwen3-vl-2b", "q_proj,v_proj", True, 8, 0.32625, 9127738368, 2.5211e13),
    BenchRun("qwen3-vl-2b", "all-linear", False, 2, 0.25752, 8161355264, 4.8324e12),
    BenchRun("qwen3-vl-2b", "all-linear", False, 8, 0.28940, 19070987264, 1.9330e13),
    BenchRun("qwen3-vl-2b", "all-linear", True, 2, 0.48230, 5627841024, 6.3251e12),
    BenchRun("qwen3-vl-2b", "all-linear", True, 8, 0.49853, 9217928192, 2.5300e13),
    BenchRun("qwen3-vl-8b", "q_proj,v_proj", False, 2, 0.24181, 22393958912, 1.7570e13),
    BenchRun("qwen3-vl-8b", "q_proj,v_proj", False, 8, 0.26750, 36543449088, 7.0279e13),
    BenchRun("qwen3-vl-8b", "q_proj,v_proj", True, 2, 0.38889, 18967294464, 2.4889e13),
    BenchRun("qwen3-vl-8b", "q_proj,v_proj", True, 8, 0.34111, 22884055040, 9.9557e13),
    BenchRun("qwen3-vl-8b", "all-linear", False, 2, 0.31300, 25327046144, 1.7626e13),
    BenchRun("qwen3-vl-8b", "all-linear", False, 8, 0.35856, 47577917440, 7.0505e13),
    BenchRun("qwen3-vl-8b", "all-linear", True, 2, 0.53080, 19183354368, 2.4946e13),
    BenchRun("qwen3-vl-8b", "all-linear", True, 8, 0.54024, 23089104896, 9.9783e13),
)
