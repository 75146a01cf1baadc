"""Spending caps: a job's `max_cost` and a tenant's spending limit over a period.

Both are checked where money is about to be spent:
- at submit, a tenant that has reached its limit (or whose job's max_cost would pass what is
  left of it) is refused;
- when a worker claims a phase, a job that has already spent its budget (or a tenant its limit)
  fails the phase at once, before any model is loaded;
- after every optimizer step, the worker reports how long the step took; when what was spent so
  far plus one more such step would reach a cap, the run saves a checkpoint and stops, and the
  phase fails with `budget_exceeded` or `spending_limit_exceeded`. Raising the cap and requeueing
  the phase continues from that checkpoint.

A tenant's period counts the jobs it submitted in the last `spending_period_days` days, with
everything they cost (runs in progress at their meter). Amounts are in the pools' currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import repository
from orchestrator.cost import MICRO, phase_cost, price_of
from orchestrator.errors import Conflict, InvalidRequest, NotFound
from orchestrator.events import EventType, emit
from orchestrator.models import Job, Phase, Pool, Tenant, utcnow
from orchestrator.pools import DEFAULT_CURRENCY

DEFAULT_PERIOD_DAYS = 30
BUDGET_EXCEEDED = "budget_exceeded"
SPENDING_LIMIT_EXCEEDED = "spending_limit_exceeded"


class SpendingLimitExceeded(Conflict):
    code = SPENDING_LIMIT_EXCEEDED


@dataclass(frozen=True)
class BudgetStop:
    """Why a run must stop (or not start): the phase fails with this code and message."""

    code: str
    message: str


def currency(session: Session) -> str:
    pool = session.scalar(select(Pool).limit(1))
    return pool.currency if pool is not None else DEFAULT_CURRENCY


def _spent(
    phases: list[Phase], pools: dict[str, Pool], now: datetime, not_metered: Phase | None
) -> Decimal:
    total = Decimal(0)
    for phase in phases:
        if phase is not_metered:  # just claimed: only what earlier runs were billed counts
            total += Decimal(phase.cost_amount or 0)
        else:
            total += phase_cost(phase, pools[phase.pool], now)
    return total


def job_spent(
    session: Session, job: Job, now: datetime | None = None, *, not_metered: Phase | None = None
) -> Decimal:
    """Billed runs of every phase plus the meters of the runs in progress."""
    return _spent(
        list(job.phases), repository.pools_by_name(session), now or utcnow(), not_metered
    ).quantize(MICRO)


def period_days(tenant: Tenant) -> int:
    return tenant.spending_period_days or DEFAULT_PERIOD_DAYS


def tenant_spent(
    session: Session,
    tenant: Tenant,
    now: datetime | None = None,
    *,
    not_metered: Phase | None = None,
) -> Decimal:
    """What the jobs the tenant submitted in its period cost so far."""
    now = now or utcnow()
    since = now - timedelta(days=period_days(tenant))
    billed = repository.tenant_billed_cost(session, tenant.id, since)
    running = list(repository.tenant_running_phases(session, tenant.id, since))
    pools = repository.pools_by_name(session)
    meters = _spent(running, pools, now, not_metered) - sum(
        (Decimal(p.cost_amount or 0) for p in running), Decimal(0)
    )
    return (billed + meters).quantize(MICRO)


def check_spending_limit(
    session: Session,
    tenant_id: str,
    *,
    amount: Decimal | None = None,
    param: str = "max_cost",
    now: datetime | None = None,
) -> None:
    """Refuse new work when the tenant has reached its limit, or when `amount` (a job's
    max_cost, or an estimate) would pass what is left of it."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None or tenant.spending_limit is None:
        return
    limit = Decimal(tenant.spending_limit)
    spent = tenant_spent(session, tenant, now)
    unit = currency(session)
    over = (
        f"tenant {tenant.name} has spent {spent} {unit} of its spending limit {limit} "
        f"{unit} over the last {period_days(tenant)} days"
    )
    if spent >= limit:
        raise SpendingLimitExceeded(f"{over}; no new job can start", param="tenant")
    if amount is not None and spent + amount > limit:
        raise SpendingLimitExceeded(
            f"{param} {amount} {unit} would pass the spending limit: {over}, "
            f"{limit - spent} {unit} remain",
            param=param,
        )


def stop_for_budget(
    session: Session,
    job_id: str,
    phase_name: str,
    *,
    seconds_ahead: float = 0.0,
    at_claim: bool = False,
) -> BudgetStop | None:
    """Whether the phase's run must stop: spent so far plus `seconds_ahead` more of its pool
    reaches the job's max_cost or the tenant's limit. At claim, the run's own meter (a few
    milliseconds old) does not count, and any spending at all of a cap stops it."""
    job = repository.job_by_id(session, job_id)
    tenant = session.get(Tenant, job.tenant_id)
    has_limit = tenant is not None and tenant.spending_limit is not None
    if job.max_cost is None and not has_limit:
        return None
    now = utcnow()
    phase = next(p for p in job.phases if p.name == phase_name)
    pools = repository.pools_by_name(session)
    ahead = price_of(seconds_ahead, pools[phase.pool])
    unit = pools[phase.pool].currency
    not_metered = phase if at_claim else None
    outcome = (
        f"the {phase_name} phase did not start"
        if at_claim
        else f"the {phase_name} phase stops at step {phase.step} with a checkpoint"
    )
    if seconds_ahead > 0:
        outcome = f"the next step (~{seconds_ahead:.1f} s, {ahead} {unit}) would pass it; {outcome}"
    if job.max_cost is not None:
        spent = job_spent(session, job, now, not_metered=not_metered)
        cap = Decimal(job.max_cost)
        if spent + ahead >= cap:
            return BudgetStop(
                BUDGET_EXCEEDED,
                (
                    f"job {job.id} has spent {spent} {unit} of its max_cost {cap} {unit}; "
                    f"{outcome}. "
                    f"Raise max_cost (PATCH /v1/jobs/{job.id}) and requeue the phase to continue"
                ),
            )
    if tenant is not None and tenant.spending_limit is not None:
        spent = tenant_spent(session, tenant, now, not_metered=not_metered)
        cap = Decimal(tenant.spending_limit)
        if spent + ahead >= cap:
            return BudgetStop(
                SPENDING_LIMIT_EXCEEDED,
                (
                    f"tenant {tenant.name} has spent {spent} {unit} of its spending limit {cap} "
                    f"{unit} over the last {period_days(tenant)} days; {outcome}"
                ),
            )
    return None


def set_max_cost(session: Session, tenant_id: str, job_id: str, max_cost: Decimal | None) -> Job:
    """Set, raise, lower or (None) lift a job's budget, at any status: a failed phase can be
    requeued afterwards."""
    job = repository.job_for_tenant(session, tenant_id, job_id)
    if max_cost is not None and max_cost < 0:
        raise InvalidRequest("max_cost must be at least 0", param="max_cost")
    previous = job.max_cost
    job.max_cost = None if max_cost is None else max_cost.quantize(MICRO)
    job.updated_at = utcnow()
    emit(
        session,
        job.id,
        EventType.BUDGET_CHANGED,
        previous=None if previous is None else str(previous),
        max_cost=None if job.max_cost is None else str(job.max_cost),
        spent=str(job_spent(session, job)),
    )
    return job


def set_spending_limit(
    session: Session, tenant_name: str, *, amount: Decimal | None, period_days: int | None
) -> Tenant:
    """Cap (or, with amount None, uncap) what a tenant's jobs may cost per period."""
    tenant = repository.tenant_by_name(session, tenant_name)
    if tenant is None:
        raise NotFound(f"tenant '{tenant_name}' not found", param="name")
    if amount is not None and amount < 0:
        raise InvalidRequest("amount must be at least 0", param="amount")
    if period_days is not None and not 1 <= period_days <= 3660:
        raise InvalidRequest("period_days must be between 1 and 3660", param="period_days")
    tenant.spending_limit = None if amount is None else amount.quantize(MICRO)
    tenant.spending_period_days = (
        (period_days or DEFAULT_PERIOD_DAYS) if amount is not None else None
    )
    session.flush()
    return tenant
