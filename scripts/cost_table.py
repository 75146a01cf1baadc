"""Markdown tables of what a job costs on each plan, from the estimator (for COSTS.md).

Uses the seeded pools (the migrations' prices, memory and datasheet figures) and the profiles
known before any run is measured (bench, derived, default); no database:

    .venv/bin/python scripts/cost_table.py [--model qwen3-vl-8b] [--case 20x2 20x2+registered]

A case ending in `+registered` is the model registered (`relaytune models add`): each pool's
worker fetches it from the object store into a cold node cache first, the training pools its
bf16 weights and processor files, the preprocessing pool the processor files alone.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.dispatch import default_queue
from orchestrator.estimate import (
    COMPONENTS,
    NO_FETCH,
    DatasetSize,
    ModelFetch,
    PlanEstimate,
    seeded_lookup,
)
from orchestrator.hyperparameters import Hyperparameters
from orchestrator.memory import weights_bytes
from orchestrator.model_shapes import QWEN3_VL_8B, SHAPES
from orchestrator.models import Pool
from orchestrator.plan import DEFAULT_POOLS
from orchestrator.planner import build_comparison

BYTES_PER_IMAGE = 300_000  # a JPEG photo of a few hundred KB
# Qwen3-VL's non-weight files: tokenizer.json, vocab.json, merges.txt, configs, chat template.
PROCESSOR_FILES_BYTES = 16_000_000
SHOWN = ("relay", "all-a100", "all-a10", "cheapest")
CASES = ("20x2", "20x2+registered", "2000x2", "2000x8")  # images x batch_size


def seeded_pools() -> dict[str, Pool]:
    """The pools a fresh install has: migration 0001's prices and memory, 0003's GPU facts."""
    initial = importlib.import_module("migrations.versions.20261128_0001_initial")
    facts = importlib.import_module("migrations.versions.20261128_0003_cost_truth").POOL_FACTS
    return {
        row["name"]: Pool(
            **{**row, "hourly_price": Decimal(row["hourly_price"])},
            queue=default_queue(row["name"]),
            **facts[row["name"]],
        )
        for row in initial.SEED_POOLS
    }


def _summary(plans: list[PlanEstimate], top: PlanEstimate) -> list[str]:
    lines = [
        "| plan | preprocess / warmup / final | seconds | cost | vs all-A100 |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for plan in plans:
        pools = " / ".join(plan.pools[p] for p in ("preprocess", "warmup", "final"))
        if not plan.feasible:
            lines.append(f"| {plan.name} | {pools} | - | - | does not fit |")
            continue
        percent = (top.cost - plan.cost) / top.cost * 100
        verdict = f"saves {percent:.0f}%" if percent >= 0 else f"costs {-percent:.0f}% more"
        lines.append(
            f"| {plan.name} | {pools} | {plan.total_seconds:.0f} | "
            f"{plan.cost:.4f} {plan.currency} | {verdict} |"
        )
    return lines


def _components(plan: PlanEstimate) -> list[str]:
    names = [c.replace("_", " ") for c in COMPONENTS]
    lines = [
        f"| {plan.name} | pool | " + " | ".join(names) + " | total s | cost | fixed share |",
        "| --- | --- | " + " | ".join("---:" for _ in names) + " | ---: | ---: | ---: |",
    ]
    for phase in plan.phases:
        cells = " | ".join(f"{phase.seconds[c]:.1f}" for c in COMPONENTS)
        work = phase.seconds["preprocess"] + phase.seconds["train"] + phase.seconds["evaluate"]
        fixed = 1 - work / phase.total_seconds if phase.total_seconds else 0.0
        lines.append(
            f"| {phase.phase} | {phase.pool} | {cells} | {phase.total_seconds:.1f} | "
            f"{phase.cost:.4f} | {fixed:.0%} |"
        )
    return lines


def tables(
    model: str, images: int, epochs: int, batch_size: int = 2, registered: bool = False
) -> str:
    shape = SHAPES[model]
    weights = weights_bytes(shape, "bf16")
    fetched = (
        ModelFetch(weights + PROCESSOR_FILES_BYTES, PROCESSOR_FILES_BYTES)
        if registered
        else NO_FETCH
    )
    # The default effective batch is 2 x 4; a larger micro-batch keeps it with less accumulation.
    hp = Hyperparameters(
        total_epochs=epochs,
        warmup_epochs=min(5, epochs),
        batch_size=batch_size,
        gradient_accumulation=max(1, 8 // batch_size),
    )
    dataset = DatasetSize(images, images, images * BYTES_PER_IMAGE)
    comparison = build_comparison(
        model,
        shape,
        hp,
        dataset,
        seeded_pools(),
        dict(DEFAULT_POOLS),
        seeded_lookup(shape, hp, fetched),
    )
    assert comparison is not None and comparison.top_tier is not None
    by_name = {p.name: p for p in comparison.plans}
    by_name["relay"] = by_name["requested"]
    plans = [PlanEstimate(n, by_name[n].pools, by_name[n].phases) for n in SHOWN]
    name = f"{model} registered (cold node caches)" if registered else model
    out = [f"### {name}, {images} images x {epochs} epochs, batch_size {batch_size}", ""]
    out += _summary(plans, comparison.top_tier)
    for plan in plans:
        if plan.feasible and plan.name != "cheapest":
            out += ["", *_components(plan)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=QWEN3_VL_8B, choices=sorted(SHAPES))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--case",
        nargs="+",
        default=list(CASES),
        metavar="IMAGESxBATCH",
        help="data set size and batch_size, e.g. 2000x8 or 20x2+registered",
    )
    args = parser.parse_args()
    print(all_tables(args.model, args.epochs, args.case))


def all_tables(
    model: str = QWEN3_VL_8B, epochs: int = 8, cases: tuple[str, ...] | list[str] = CASES
) -> str:
    out = []
    for case in cases:
        size, _, variant = case.partition("+")
        images, batch = (int(n) for n in size.split("x"))
        out.append(tables(model, images, epochs, batch, registered=variant == "registered"))
    return "\n\n".join(out)


if __name__ == "__main__":
    main()
