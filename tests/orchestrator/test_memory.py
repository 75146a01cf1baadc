from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator import bench_h200
from orchestrator.hyperparameters import Hyperparameters
from orchestrator.memory import GIB, training_peak_bytes, training_plan
from orchestrator.model_shapes import QWEN3_VL_2B, QWEN3_VL_8B, SHAPES

BENCH = Path(__file__).resolve().parents[2] / "bench" / "results" / "nvidia-h200-2026-11-28.json"
PRESETS = {"2b": QWEN3_VL_2B, "8b": QWEN3_VL_8B}
TARGETS: dict[str, Any] = {"qv": ["q_proj", "v_proj"], "all-linear": "all-linear"}


def _bench_runs() -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = json.loads(BENCH.read_text())["runs"]
    return runs


@pytest.mark.parametrize(
    "run",
    _bench_runs(),
    ids=lambda r: (
        f"{r['preset']}-{r['lora_targets']}-mb{r['micro_batch']}-ckpt{r['gradient_checkpointing']}"
    ),
)
def test_every_bench_peak_is_predicted_within_15_percent(run: dict[str, Any]) -> None:
    predicted = training_peak_bytes(
        SHAPES[PRESETS[run["preset"]]],
        precision="bf16",
        target_modules=TARGETS[run["lora_targets"]],
        lora_rank=8,
        micro_batch=run["micro_batch"],
        gradient_checkpointing=run["gradient_checkpointing"],
    )
    measured = run["peak_memory_gib"] * GIB
    assert abs(predicted / measured - 1) <= 0.15


def test_packaged_bench_figures_match_the_bench_json() -> None:
    runs = _bench_runs()
    assert len(bench_h200.RUNS) == len(runs)
    for packaged, raw in zip(bench_h200.RUNS, runs, strict=True):
        assert packaged.model_key == PRESETS[raw["preset"]]
        assert packaged.micro_batch == raw["micro_batch"]
        assert packaged.gradient_checkpointing == raw["gradient_checkpointing"]
        assert packaged.step_time_s == pytest.approx(raw["step_time_s_median"], rel=1e-4)
        assert packaged.peak_memory_bytes == pytest.approx(raw["peak_memory_gib"] * GIB, rel=1e-6)
        assert packaged.hardware_flops_per_step == pytest.approx(
            raw["flops"]["hardware_flops_per_step"], rel=1e-3
        )


def test_catalog_lora_counts_match_the_bench() -> None:
    for raw in _bench_runs():
        shape = SHAPES[PRESETS[raw["preset"]]]
        assert shape.lora_params(TARGETS[raw["lora_targets"]]) == raw["params"]["lora"]
        assert shape.total_params + raw["params"]["lora"] == raw["params"]["total"]


def test_8b_does_not_fit_a_t4_and_says_why() -> None:
    plan = training_plan(
        SHAPES[QWEN3_VL_8B],
        Hyperparameters(),
        gpu_model="NVIDIA T4",
        gpu_memory_gb=16,
        supports_bf16=False,
    )
    assert not plan.feasible
    assert plan.precision == "fp16"
    assert plan.reason == (
        "qwen3-vl-8b weights in fp16 need 16.3 GiB; NVIDIA T4 has 13.9 GiB usable"
    )


def test_8b_fits_an_a10_at_the_default_micro_batch() -> None:
    plan = training_plan(
        SHAPES[QWEN3_VL_8B],
        Hyperparameters(),
        gpu_model="NVIDIA A10",
        gpu_memory_gb=24,
        supports_bf16=True,
    )
    assert plan.feasible and plan.precision == "bf16"
    assert (plan.micro_batch, plan.gradient_checkpointing) == (2, False)
    assert plan.reason.startswith("fits: 20.8 GiB of 21.4 GiB usable on NVIDIA A10")


def test_too_large_a_micro_batch_follows_the_out_of_memory_ladder() -> None:
    hp = Hyperparameters(batch_size=8, gradient_accumulation=1)
    plan = training_plan(
        SHAPES[QWEN3_VL_8B], hp, gpu_model="NVIDIA A10", gpu_memory_gb=24, supports_bf16=True
    )
    assert plan.feasible
    assert (plan.micro_batch, plan.gradient_checkpointing) == (2, False)
    assert "out-of-memory recovery continues at micro-batch 2" in plan.reason


def test_2b_on_a_t4_trains_in_fp16_with_the_grad_scaler() -> None:
    plan = training_plan(
        SHAPES[QWEN3_VL_2B],
        Hyperparameters(),
        gpu_model="NVIDIA T4",
        gpu_memory_gb=16,
        supports_bf16=False,
    )
    assert plan.feasible and plan.precision == "fp16"
    assert "grad scaler" in plan.reason


def test_bf16_asked_of_a_gpu_without_it_is_infeasible() -> None:
    plan = training_plan(
        SHAPES[QWEN3_VL_2B],
        Hyperparameters(precision="bf16"),
        gpu_model="NVIDIA T4",
        gpu_memory_gb=16,
        supports_bf16=False,
    )
    assert not plan.feasible
    assert "bf16 is not supported by NVIDIA T4" in plan.reason
