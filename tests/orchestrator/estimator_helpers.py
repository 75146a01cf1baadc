"""Pools built in memory (no job store), for the estimator's unit tests."""

from __future__ import annotations

from decimal import Decimal

from orchestrator.dispatch import default_queue
from orchestrator.estimate import DatasetSize, PlanEstimate, estimate_plan, seeded_lookup
from orchestrator.hyperparameters import Hyperparameters
from orchestrator.model_shapes import QWEN3_VL_8B, SHAPES
from orchestrator.models import Pool

GPUS = {
    "t4": ("NVIDIA T4", 16, False, 65.0, 320.0),
    "a10": ("NVIDIA A10", 24, True, 125.0, 600.0),
    "a100": ("NVIDIA A100", 80, True, 312.0, 2039.0),
    "h200": ("NVIDIA H200", 141, True, 989.4, 4800.0),
}
SEED_PRICES = {"t4": "1", "a10": "3", "a100": "8"}


def pool(name: str, price: str | Decimal, gpu: str | None = None) -> Pool:
    model, memory, bf16, tflops, bandwidth = GPUS[gpu or name]
    return Pool(
        name=name,
        gpu_model=model,
        gpu_memory_gb=memory,
        hourly_price=Decimal(price),
        currency="CNY",
        queue=default_queue(name),
        supports_bf16=bf16,
        peak_tflops=tflops,
        memory_bandwidth_gbs=bandwidth,
    )


def seed_pools() -> dict[str, Pool]:
    return {name: pool(name, price) for name, price in SEED_PRICES.items()}


SHAPE_8B = SHAPES[QWEN3_VL_8B]
TWENTY = DatasetSize(num_samples=20, num_images=20, bytes=6_000_000)


def plan_8b(
    hp: Hyperparameters,
    dataset: DatasetSize = TWENTY,
    *,
    name: str = "relay",
    pools: tuple[str, str, str] = ("t4", "a10", "a100"),
) -> PlanEstimate:
    """A plan of the 8B from seeded profiles: by default the relay (t4, a10, a100)."""
    seeded = seed_pools()
    plan = estimate_plan(
        name,
        SHAPE_8B,
        hp,
        dataset,
        dict(zip(("preprocess", "warmup", "final"), (seeded[p] for p in pools), strict=True)),
        seeded_lookup(SHAPE_8B, hp),
    )
    assert plan is not None
    return plan
