from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import profiles
from orchestrator.cost import price
from orchestrator.estimate import (
    DatasetSize,
    ModelFetch,
    estimate_plan,
    seeded_lookup,
    validation_count,
    work_for,
)
from orchestrator.hyperparameters import Hyperparameters
from orchestrator.memory import MemoryPlan
from orchestrator.model_shapes import QWEN3_VL_8B, SHAPES, TINY
from orchestrator.models import Pool, RegisteredModel
from orchestrator.planner import build_comparison
from tests.orchestrator.estimator_helpers import SHAPE_8B, TWENTY, plan_8b, pool, seed_pools


def test_cost_is_seconds_times_hourly_price() -> None:
    assert price(3600, Decimal("8")) == Decimal("8.000000")
    assert price(1, Decimal("3")) == Decimal("0.000833")
    assert price(0.5, Decimal("1")) == Decimal("0.000139")


def test_each_phase_costs_its_seconds_at_its_pools_price() -> None:
    plan = plan_8b(Hyperparameters())
    prices = {"t4": Decimal(1), "a10": Decimal(3), "a100": Decimal(8)}
    for phase in plan.phases:
        assert phase.total_seconds == pytest.approx(sum(phase.seconds.values()))
        assert phase.cost == price(phase.total_seconds, prices[phase.pool])
    assert plan.cost == sum(p.cost for p in plan.phases)
    assert plan.currency == "CNY"


def test_work_counts_follow_the_recipe() -> None:
    hp = Hyperparameters()  # 1 augmented copy, default validation
    work = work_for(hp, TWENTY)
    assert work.validation == 3  # 15% of 20, at most 3
    assert work.train_per_epoch == (20 - 3) * 2
    assert work.artifact_samples == 20 + 17
    no_aug = Hyperparameters(augmentation={"enabled": False}, validation_samples=0)
    assert work_for(no_aug, TWENTY).train_per_epoch == 20
    assert validation_count(2000, None) == 200
    assert validation_count(1, None) == 0


def test_training_phases_split_the_epochs_and_count_checkpoints() -> None:
    plan = plan_8b(Hyperparameters())
    by_name = {p.phase: p for p in plan.phases}
    assert by_name["warmup"].samples == 5 * 34
    assert by_name["final"].samples == 3 * 34
    # 4 epoch checkpoints + 5 best + final; the final phase adds the exported adapter.
    assert by_name["warmup"].checkpoints == 4 + 5 + 1
    assert by_name["final"].checkpoints == 2 + 3 + 1 + 1
    assert by_name["preprocess"].checkpoints == 1
    assert by_name["final"].seconds["evaluate"] > 0
    assert by_name["warmup"].seconds["evaluate"] == 0
    assert by_name["preprocess"].precision is None and by_name["preprocess"].feasible


def test_more_data_costs_more_training_but_the_same_startup() -> None:
    small = {p.phase: p for p in plan_8b(Hyperparameters()).phases}
    thousands = DatasetSize(2000, 2000, 600_000_000)
    large = {p.phase: p for p in plan_8b(Hyperparameters(), thousands).phases}
    for phase in ("warmup", "final"):
        assert large[phase].seconds["train"] > 50 * small[phase].seconds["train"]
        assert large[phase].seconds["startup"] == small[phase].seconds["startup"]


def test_8b_on_a_t4_is_an_infeasible_plan_with_the_reason() -> None:
    hp = Hyperparameters()
    comparison = build_comparison(
        QWEN3_VL_8B,
        SHAPE_8B,
        hp,
        TWENTY,
        seed_pools(),
        {"preprocess": "t4", "warmup": "t4", "final": "a100"},
        seeded_lookup(SHAPE_8B, hp),
    )
    assert comparison is not None
    chosen = comparison.chosen
    assert not chosen.feasible
    assert "warmup on t4: qwen3-vl-8b weights in fp16 need 16.3 GiB" in chosen.reason
    assert comparison.cheapest is not None and comparison.cheapest.feasible
    assert "t4" not in (comparison.cheapest.pools["warmup"], comparison.cheapest.pools["final"])


def test_comparison_names_relay_single_pool_and_cheapest_plans() -> None:
    hp = Hyperparameters()
    comparison = build_comparison(
        QWEN3_VL_8B, SHAPE_8B, hp, TWENTY, seed_pools(), "auto", seeded_lookup(SHAPE_8B, hp)
    )
    assert comparison is not None
    names = [p.name for p in comparison.plans]
    assert names == ["auto", "relay", "all-t4", "all-a10", "all-a100", "cheapest"]
    assert comparison.top_tier is not None and comparison.top_tier.name == "all-a100"
    assert comparison.chosen.pools == comparison.plans[-1].pools
    saving = comparison.saving_vs_top_tier()
    assert saving is not None
    top = comparison.top_tier.cost
    assert Decimal(saving["amount"]["amount"]) == top - comparison.chosen.cost
    assert saving["percent"] == pytest.approx(
        float((top - comparison.chosen.cost) / top * 100), abs=0.05
    )


def test_the_tiny_model_uses_cpu_defaults() -> None:
    hp = Hyperparameters()
    shape = SHAPES[TINY]
    plan = estimate_plan(
        "relay",
        shape,
        hp,
        TWENTY,
        {p: pool("a10", "3") for p in ("preprocess", "warmup", "final")},
        seeded_lookup(shape, hp),
    )
    assert plan is not None and plan.feasible
    assert {s for p in plan.phases for s in p.sources} == {"default"}


_prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100"), places=2)
_scale = st.floats(min_value=0.1, max_value=10.0)


@settings(max_examples=60, deadline=None)
@given(
    prices=st.tuples(_prices, _prices, _prices, _prices),
    speed=st.tuples(_scale, _scale, _scale, _scale),
    startup=st.tuples(_scale, _scale, _scale, _scale),
    num_samples=st.integers(min_value=1, max_value=3000),
    model=st.sampled_from([QWEN3_VL_8B, "qwen3-vl-2b", TINY]),
)
def test_auto_never_costs_more_than_the_cheapest_feasible_single_pool_plan(
    prices: tuple[Decimal, ...],
    speed: tuple[float, ...],
    startup: tuple[float, ...],
    num_samples: int,
    model: str,
) -> None:
    names = ("t4", "a10", "a100", "h200")
    pools = {n: pool(n, p) for n, p in zip(names, prices, strict=True)}
    factors = {n: (s, u) for n, s, u in zip(names, speed, startup, strict=True)}
    shape, hp = SHAPES[model], Hyperparameters()
    seeded = seeded_lookup(shape, hp)

    def lookup(phase: str, on: Pool, plan: MemoryPlan) -> profiles.Profile:
        base = seeded(phase, on, plan)
        s, u = factors[on.name]
        return profiles.with_measurements(
            base,
            {"train_s_per_sample": base.train_s_per_sample * s, "startup_s": base.startup_s * u},
            runs=1,
        )

    dataset = DatasetSize(num_samples, num_samples, num_samples * 300_000)
    comparison = build_comparison(model, shape, hp, dataset, pools, "auto", lookup)
    assert comparison is not None
    singles = [p for p in comparison.plans if p.name.startswith("all-") and p.feasible]
    assert singles, "an H200 fits every catalog model"
    assert comparison.chosen.feasible
    assert comparison.chosen.cost <= min(p.cost for p in singles)


def test_a_phase_on_the_previous_phases_pool_starts_nothing_and_downloads_nothing() -> None:
    hp = Hyperparameters()
    relay = {p.phase: p for p in plan_8b(hp).phases}
    plan = plan_8b(hp, name="all-a100", pools=("a100", "a100", "a100"))
    pre, warmup, final = plan.phases
    assert not pre.fused and warmup.fused and final.fused
    # After preprocessing the model still loads, without the imports or the artifact download.
    assert warmup.seconds["startup"] == pytest.approx(relay["warmup"].seconds["startup"] - 15.0)
    assert warmup.seconds["input_download"] == 0
    # After the warmup, the model and the run's state are still in memory.
    assert final.seconds["startup"] == final.seconds["input_download"] == 0
    assert final.seconds["train"] == pytest.approx(relay["final"].seconds["train"])


def test_every_phase_bills_the_rest_of_its_run() -> None:
    for phase in plan_8b(Hyperparameters()).phases:
        assert phase.seconds["other"] == pytest.approx(profiles.OTHER_S)


def test_the_tiny_model_loads_even_when_fused_after_preprocessing() -> None:
    # Its workers import before forking: preprocessing starts at once, a training phase still
    # loads the model, whether or not it follows preprocessing on the same pool.
    hp, shape = Hyperparameters(), SHAPES[TINY]
    on_one_pool = {p: pool("a10", "3") for p in ("preprocess", "warmup", "final")}
    plan = estimate_plan("all-a10", shape, hp, TWENTY, on_one_pool, seeded_lookup(shape, hp))
    assert plan is not None
    pre, warmup, final = plan.phases
    assert pre.seconds["startup"] == 0
    assert warmup.fused and warmup.seconds["startup"] == pytest.approx(profiles.TINY_CPU_STARTUP_S)
    assert final.seconds["startup"] == 0


def test_the_artifact_is_sized_as_8_bit_images() -> None:
    # A 448x448 reference image: 784 patches of 16x16 RGB bytes, not fp32 patches.
    assert profiles.artifact_bytes_per_sample(SHAPE_8B) == 784 * 16 * 16 * 3
    relay = {p.phase: p for p in plan_8b(Hyperparameters()).phases}
    artifact = work_for(Hyperparameters(), TWENTY).artifact_samples * 784 * 768
    assert relay["warmup"].seconds["input_download"] == pytest.approx(
        profiles.TRANSFER_LATENCY_S + artifact / profiles.DOWNLOAD_BYTES_PER_S
    )


def test_a_registered_model_is_fetched_by_each_phase_that_starts_a_process() -> None:
    """Preprocessing fetches the processor files; each training pool fetches the weights too,
    a fused warmup included (preprocessing left them)."""
    hp, pools = Hyperparameters(), seed_pools()
    stored, processor = 17_500_000_000, 16_000_000  # an 8B's bf16 files in the object store
    fetch = ModelFetch(total_bytes=stored, without_weights_bytes=processor)
    cold, configs = profiles.model_fetch_seconds(stored), profiles.model_fetch_seconds(processor)
    assert cold == pytest.approx(
        profiles.TRANSFER_LATENCY_S
        + stored / profiles.DOWNLOAD_BYTES_PER_S
        + stored / profiles.VERIFY_BYTES_PER_S
    )
    relay = {p.phase: p for p in plan_8b(hp).phases}
    on_three = estimate_plan(
        "relay",
        SHAPE_8B,
        hp,
        TWENTY,
        {"preprocess": pools["t4"], "warmup": pools["a10"], "final": pools["a100"]},
        seeded_lookup(SHAPE_8B, hp, fetch),
    )
    assert on_three is not None
    expected = {"preprocess": configs, "warmup": cold, "final": cold}
    for phase in on_three.phases:  # every pool fetches what it reads, at its own price
        assert phase.seconds["model_fetch"] == pytest.approx(expected[phase.phase])
        assert relay[phase.phase].seconds["model_fetch"] == 0  # under the model root: no fetch
        assert phase.cost > relay[phase.phase].cost
    assert configs < 1.0 < cold
    on_one = estimate_plan(
        "all-a100",
        SHAPE_8B,
        hp,
        TWENTY,
        {p: pools["a100"] for p in ("preprocess", "warmup", "final")},
        seeded_lookup(SHAPE_8B, hp, fetch),
    )
    assert on_one is not None
    assert [p.seconds["model_fetch"] for p in on_one.phases] == [
        pytest.approx(configs),
        pytest.approx(cold),
        0,
    ]


def test_a_registered_model_fetch_is_split_by_what_each_phase_reads() -> None:
    files = [
        {"path": "config.json", "sha256": "a", "bytes": 10},
        {"path": "tokenizer.json", "sha256": "b", "bytes": 20},
        {"path": "model-00001-of-00002.safetensors", "sha256": "c", "bytes": 1000},
        {"path": "model-00002-of-00002.safetensors", "sha256": "d", "bytes": 2000},
        {"path": "model.safetensors.index.json", "sha256": "e", "bytes": 5},
    ]
    fetch = ModelFetch.of(RegisteredModel(total_bytes=3035, files=files))
    assert fetch.bytes_for("preprocess") == 35
    assert fetch.bytes_for("warmup") == fetch.bytes_for("final") == 3035
