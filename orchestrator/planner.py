"""Plans side by side, and the planner: which pool runs which phase, at what estimated cost.

Plans compared: the requested one (or the planner's choice for pools "auto"), the relay on the
default pools, every training phase on one pool (for each pool; preprocessing stays where it
was requested), and the cheapest feasible assignment of pools to phases (found by trying them
all). "auto" takes the cheapest feasible; ties go to the shorter, then to the name order.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import Decimal
from statistics import median
from typing import Any

from sqlalchemy.orm import Session

from orchestrator import repository
from orchestrator.errors import InvalidRequest
from orchestrator.estimate import (
    DatasetSize,
    PlanEstimate,
    ProfileLookup,
    check_validation_split,
    dataset_size,
    estimate_plan,
    model_facts,
    money,
    session_lookup,
)
from orchestrator.hyperparameters import Hyperparameters
from orchestrator.model_shapes import ModelShape, model_key_for
from orchestrator.models import Dataset, Pool
from orchestrator.plan import DEFAULT_POOLS, PHASES

AUTO = "auto"
QUEUE_SAMPLE_RUNS = 20


class _NothingKnown(Exception):
    """Some phase has no profile: the model has no catalog shape and no measured runs."""


@dataclass(frozen=True)
class PoolQueue:
    pool: str
    queued_phases: int
    expected_wait_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "queued_phases": self.queued_phases,
            "expected_wait_s": round(self.expected_wait_s, 1),
        }


@dataclass
class Comparison:
    model_key: str
    chosen: PlanEstimate  # the requested plan, or the planner's pick for "auto"
    plans: list[PlanEstimate]
    cheapest: PlanEstimate | None  # None when no assignment of pools fits
    top_tier: PlanEstimate | None  # every training phase on the priciest pool
    queues: list[PoolQueue] = field(default_factory=list)

    def saving_vs_top_tier(self) -> dict[str, Any] | None:
        """What the chosen plan saves (negative: costs more) against the top tier."""
        top = self.top_tier
        if top is None or not top.feasible or not self.chosen.feasible:
            return None
        amount = top.cost - self.chosen.cost
        percent = float(amount / top.cost * 100) if top.cost else 0.0
        return {
            "against": top.name,
            "amount": money(amount, top.currency),
            "percent": round(percent, 1),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_key": self.model_key,
            "chosen": self.chosen.name,
            "cheapest": self.cheapest.name if self.cheapest else None,
            "top_tier": self.top_tier.name if self.top_tier else None,
            "saving_vs_top_tier": self.saving_vs_top_tier(),
            "plans": [p.to_dict() for p in self.plans],
            "queues": [q.to_dict() for q in self.queues],
        }


def _order(plan: PlanEstimate) -> tuple[Decimal, float, tuple[str, ...]]:
    return plan.cost, plan.total_seconds, tuple(plan.pools[p] for p in PHASES)


def cheapest_feasible(plans: list[PlanEstimate]) -> PlanEstimate | None:
    feasible = [p for p in plans if p.feasible]
    return min(feasible, key=_order) if feasible else None


def _queues(session: Session, pools: dict[str, Pool], plans: list[PlanEstimate]) -> list[PoolQueue]:
    queued = repository.queued_phases_by_pool(session)
    out = []
    for name in pools:
        billed = repository.recent_billed_seconds(session, name, limit=QUEUE_SAMPLE_RUNS)
        if not billed:  # no history yet: the phases estimated here on this pool
            billed = [
                p.total_seconds
                for plan in plans
                for p in plan.phases
                if p.pool == name and p.feasible
            ]
        typical = median(billed) if billed else 0.0
        out.append(PoolQueue(name, queued.get(name, 0), queued.get(name, 0) * typical))
    return out


def compare_plans(
    session: Session,
    *,
    base_model: str,
    hp: Hyperparameters,
    dataset: DatasetSize,
    requested: dict[str, str] | str,
) -> Comparison | None:
    """`requested`: phase -> pool name (resolved), or "auto". None when neither the model's
    shape nor any measured run of it is known."""
    pools = repository.pools_by_name(session)
    model = model_facts(session, base_model)
    comparison = build_comparison(
        model.key,
        model.shape,
        hp,
        dataset,
        pools,
        requested,
        session_lookup(session, model.shape, model.key, hp, model.fetch),
    )
    if comparison is not None:
        comparison.queues = _queues(session, pools, comparison.plans)
    return comparison


def build_comparison(
    model_key: str,
    shape: ModelShape | None,
    hp: Hyperparameters,
    dataset: DatasetSize,
    pools: dict[str, Pool],
    requested: dict[str, str] | str,
    lookup: ProfileLookup,
) -> Comparison | None:
    """The plans side by side, from given pools and profiles (no job store)."""

    def plan(name: str, assignment: dict[str, str]) -> PlanEstimate:
        estimate = estimate_plan(
            name, shape, hp, dataset, {p: pools[assignment[p]] for p in PHASES}, lookup
        )
        if estimate is None:
            raise _NothingKnown
        return estimate

    try:
        candidates = [
            plan("-".join(combo), dict(zip(PHASES, combo, strict=True)))
            for combo in itertools.product(pools, repeat=len(PHASES))
        ]
    except _NothingKnown:
        return None
    best = cheapest_feasible(candidates)
    if isinstance(requested, dict):
        chosen = plan("requested", requested)
        preprocess_pool = requested["preprocess"]
    else:
        base = best or min(candidates, key=_order)
        chosen = PlanEstimate(AUTO, base.pools, base.phases)
        preprocess_pool = chosen.pools["preprocess"]
    named = [chosen]
    if all(p in pools for p in DEFAULT_POOLS.values()):
        named.append(plan("relay", DEFAULT_POOLS))
    singles = {
        name: plan(f"all-{name}", {"preprocess": preprocess_pool, "warmup": name, "final": name})
        for name in pools
    }
    named += singles.values()
    if best is not None:
        named.append(PlanEstimate("cheapest", best.pools, best.phases))
    top = max(pools.values(), key=lambda p: (p.hourly_price, p.name)) if pools else None
    return Comparison(model_key, chosen, named, best, singles.get(top.name) if top else None)


@dataclass
class PlannedJob:
    pools: dict[str, str]
    plan: dict[str, Any]
    estimates: dict[str, dict[str, Any]]  # phase -> its estimate


def _refuse_infeasible(chosen: PlanEstimate, comparison: Comparison) -> None:
    blocked = [p for p in chosen.phases if not p.feasible]
    if not blocked:
        return
    if chosen.name == AUTO:
        raise InvalidRequest(
            f"no assignment of pools fits {comparison.model_key}: {chosen.reason}",
            param="pools",
            code="no_feasible_plan",
            details=[chosen.to_dict()],
        )
    hint = (
        f"; the cheapest plan that fits puts the phases on {comparison.cheapest.pools}"
        if comparison.cheapest
        else ""
    )
    raise InvalidRequest(
        f"{blocked[0].phase} cannot run on pool '{blocked[0].pool}': {blocked[0].reason}{hint}",
        param=f"pools.{blocked[0].phase}",
        code="plan_infeasible",
        details=[p.to_dict() for p in blocked],
    )


def _refuse_over_budget(max_cost: Decimal, comparison: Comparison) -> None:
    cheapest = comparison.cheapest
    if cheapest is None or cheapest.cost <= max_cost:
        return
    raise InvalidRequest(
        f"max_cost {max_cost} {cheapest.currency} is below the cheapest plan's estimate, "
        f"{cheapest.cost} {cheapest.currency} (pools {cheapest.pools})",
        param="max_cost",
        code="budget_too_low",
        details=[{"max_cost": money(max_cost, cheapest.currency), **cheapest.to_dict()}],
    )


def _plan_record(comparison: Comparison) -> dict[str, Any]:
    chosen = comparison.chosen
    if chosen.name == AUTO:
        reason = f"the cheapest feasible of {len(PHASES)}-phase pool assignments: " + ", ".join(
            f"{p} on {chosen.pools[p]}" for p in PHASES
        )
    else:
        reason = "pools as requested"
    return {
        "name": chosen.name,
        "reason": reason,
        "model_key": comparison.model_key,
        "pools": chosen.pools,
        "estimated_cost": money(chosen.cost, chosen.currency),
        "estimated_seconds": round(chosen.total_seconds, 1),
        "saving_vs_top_tier": comparison.saving_vs_top_tier(),
        "alternatives": {
            p.name: money(p.cost, p.currency) for p in comparison.plans[1:] if p.feasible
        },
    }


def plan_job(
    session: Session,
    *,
    base_model: str,
    hp: Hyperparameters,
    dataset: Dataset,
    requested: dict[str, str] | str,
    max_cost: Decimal | None,
    validation: Dataset | None = None,
) -> PlannedJob:
    """Pools, plan record and per-phase estimates of a job about to be submitted; refuses a
    plan that cannot fit its GPUs and a budget below the cheapest plan's estimate.
    `validation`: the job's validation data set, held out whole instead of a split."""
    check_validation_split(hp, dataset.num_samples)
    size = dataset_size(dataset, validation)
    comparison = compare_plans(
        session, base_model=base_model, hp=hp, dataset=size, requested=requested
    )
    if comparison is None:
        pools = dict(requested) if isinstance(requested, dict) else dict(DEFAULT_POOLS)
        name = "requested" if isinstance(requested, dict) else "relay"
        reason = (
            f"nothing is known of model '{model_key_for(base_model)}' (no catalog shape, "
            "no measured run): no estimate" + ("; the default relay" if name == "relay" else "")
        )
        return PlannedJob(pools, {"name": name, "reason": reason, "pools": pools}, {})
    _refuse_infeasible(comparison.chosen, comparison)
    if max_cost is not None:
        _refuse_over_budget(max_cost, comparison)
    chosen = comparison.chosen
    return PlannedJob(
        dict(chosen.pools), _plan_record(comparison), {p.phase: p.to_dict() for p in chosen.phases}
    )
