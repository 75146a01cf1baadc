"""Tenants' spending limits: an admin key sets them; a tenant may read its own."""

from __future__ import annotations

from decimal import Decimal

from fastapi import APIRouter
from sqlalchemy.orm import Session

from orchestrator import budgets, repository
from orchestrator.auth import require_admin
from orchestrator.errors import NotFound
from orchestrator.models import Tenant
from services.api.budget_schemas import SpendingLimitIn, SpendingOut
from services.api.deps import AdminKey, CurrentKey, SessionDep
from services.api.schemas import Money

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


def spending_out(session: Session, tenant: Tenant) -> SpendingOut:
    unit = budgets.currency(session)
    spent = budgets.tenant_spent(session, tenant)
    limit = None if tenant.spending_limit is None else Decimal(tenant.spending_limit)
    return SpendingOut(
        tenant=tenant.name,
        limit=None if limit is None else Money(amount=limit, currency=unit),
        period_days=budgets.period_days(tenant),
        spent=Money(amount=spent, currency=unit),
        remaining=None
        if limit is None
        else Money(amount=max(limit - spent, Decimal(0)), currency=unit),
    )


@router.get("/{name}/spending", response_model=SpendingOut)
def read_spending(name: str, session: SessionDep, api_key: CurrentKey) -> SpendingOut:
    """A tenant's limit and what its jobs of the period cost (its own keys, or an admin key)."""
    if api_key.tenant.name != name:
        require_admin(api_key, f"reading tenant '{name}'")
    tenant = repository.tenant_by_name(session, name)
    if tenant is None:
        raise NotFound(f"tenant '{name}' not found", param="name")
    return spending_out(session, tenant)


@router.put("/{name}/spending-limit", response_model=SpendingOut)
def put_spending_limit(
    name: str, body: SpendingLimitIn, session: SessionDep, _: AdminKey
) -> SpendingOut:
    """Cap what a tenant's jobs may cost over a rolling period (admin key); null removes it."""
    tenant = budgets.set_spending_limit(
        session, name, amount=body.amount, period_days=body.period_days
    )
    return spending_out(session, tenant)
