"""The budget arithmetic: spent so far plus the next step against a job's max_cost and a
tenant's limit over its period."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import update

from orchestrator import budgets, dispatch, runs
from orchestrator.db import session_scope
from orchestrator.models import Job, Phase, Tenant, utcnow
from tests.orchestrator.relay_helpers import submit


@pytest.fixture
def tenant_id(clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher) -> str:
    with session_scope() as session:
        tenant = Tenant(name="acme")
        session.add(tenant)
        session.flush()
        return tenant.id


def _submit(tenant_id: str) -> str:
    return submit(tenant_id, hyperparameters={})


def _run_preprocess_for(job_id: str, hours: float) -> runs.Claim:
    """Claim preprocess (t4, 1 CNY/h) and pretend it has been running for `hours`."""
    with session_scope() as session:
        claim = runs.claim_phase(
            session, job_id=job_id, phase="preprocess", attempt=1, worker_id="w", lease_seconds=60
        )
    with session_scope() as session:
        session.execute(
            update(Phase)
            .where(Phase.job_id == job_id, Phase.name == "preprocess")
            .values(started_at=utcnow() - timedelta(hours=hours))
        )
    return claim


def _stop(
    job_id: str, seconds_ahead: float = 0.0, at_claim: bool = False
) -> budgets.BudgetStop | None:
    with session_scope() as session:
        return budgets.stop_for_budget(
            session, job_id, "preprocess", seconds_ahead=seconds_ahead, at_claim=at_claim
        )


def _set_max_cost(tenant_id: str, job_id: str, amount: str | None) -> None:
    with session_scope() as session:
        budgets.set_max_cost(
            session, tenant_id, job_id, None if amount is None else Decimal(amount)
        )


def test_no_cap_never_stops(tenant_id: str) -> None:
    job_id = _submit(tenant_id)
    _run_preprocess_for(job_id, hours=100)
    assert _stop(job_id, seconds_ahead=3600) is None


def test_the_next_step_is_projected_at_the_pools_price(tenant_id: str) -> None:
    job_id = _submit(tenant_id)
    _run_preprocess_for(job_id, hours=2)  # 2 CNY so far on the t4
    _set_max_cost(tenant_id, job_id, "2.5")
    assert _stop(job_id, seconds_ahead=60) is None  # + 0.017 CNY
    stop = _stop(job_id, seconds_ahead=3600)  # + 1 CNY would pass 2.5
    assert stop is not None and stop.code == "budget_exceeded"
    assert "has spent 2.0" in stop.message and "of its max_cost 2.500000 CNY" in stop.message
    assert "the next step (~3600.0 s, 1.000000 CNY) would pass it" in stop.message
    _set_max_cost(tenant_id, job_id, "1.5")  # already passed: stops with no step ahead
    assert _stop(job_id) is not None


def test_at_claim_only_what_was_billed_before_counts(tenant_id: str) -> None:
    job_id = _submit(tenant_id)
    _run_preprocess_for(job_id, hours=2)
    _set_max_cost(tenant_id, job_id, "1")
    stop = _stop(job_id, at_claim=True)  # this run's own meter does not count at its claim
    assert stop is None
    _set_max_cost(tenant_id, job_id, "0")
    stop = _stop(job_id, at_claim=True)
    assert stop is not None and "did not start" in stop.message


def test_the_tenants_limit_is_a_second_cap_over_its_period(tenant_id: str) -> None:
    old_job, job_id = _submit(tenant_id), _submit(tenant_id)
    claim = _run_preprocess_for(old_job, hours=3)
    with session_scope() as session:
        runs.complete_phase(session, claim, output_key="x", summary={})
    _run_preprocess_for(job_id, hours=1)
    with session_scope() as session:
        budgets.set_spending_limit(session, "acme", amount=Decimal(5), period_days=30)
    with session_scope() as session:
        assert budgets.tenant_spent(session, session.get(Tenant, tenant_id)) == pytest.approx(
            Decimal(4), abs=Decimal("0.01")
        )  # type: ignore[arg-type]
    assert _stop(job_id, seconds_ahead=1800) is None  # 4 + 0.5 < 5
    stop = _stop(job_id, seconds_ahead=3600)
    assert stop is not None and stop.code == "spending_limit_exceeded"
    assert "over the last 30 days" in stop.message
    # A job submitted before the period no longer counts.
    with session_scope() as session:
        session.execute(
            update(Job).where(Job.id == old_job).values(created_at=utcnow() - timedelta(days=31))
        )
    assert _stop(job_id, seconds_ahead=3600) is None


def test_submit_refuses_a_max_cost_that_would_pass_what_is_left(tenant_id: str) -> None:
    job_id = _submit(tenant_id)
    _run_preprocess_for(job_id, hours=2)
    with session_scope() as session:
        budgets.set_spending_limit(session, "acme", amount=Decimal(3), period_days=7)
    with session_scope() as session:
        budgets.check_spending_limit(session, tenant_id, amount=Decimal("0.9"))
        with pytest.raises(budgets.SpendingLimitExceeded) as caught:
            budgets.check_spending_limit(session, tenant_id, amount=Decimal("1.5"))
    assert caught.value.param == "max_cost" and caught.value.status_code == 409
    assert "would pass the spending limit" in caught.value.message
    assert "remain" in caught.value.message
    with session_scope() as session:
        budgets.set_spending_limit(session, "acme", amount=Decimal(2), period_days=7)
    with pytest.raises(budgets.SpendingLimitExceeded) as reached:
        _submit(tenant_id)
    assert reached.value.param == "tenant"
