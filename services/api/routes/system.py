from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from orchestrator import repository
from services.api.deps import CurrentTenant, SessionDep, StoreDep
from services.api.schemas import Money, PoolOut

router = APIRouter(tags=["system"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(session: SessionDep, store: StoreDep) -> dict[str, str]:
    """The job store and the object store answer."""
    session.execute(text("SELECT 1"))
    store.exists("readyz-probe")
    return {"status": "ready"}


@router.get("/v1/pools", response_model=list[PoolOut])
def list_pools(session: SessionDep, _: CurrentTenant) -> list[PoolOut]:
    """GPU pools with their queue and hourly price."""
    return [
        PoolOut(
            name=p.name,
            queue=f"gpu.{p.name}",
            gpu_model=p.gpu_model,
            gpu_memory_gb=p.gpu_memory_gb,
            hourly_price=Money(amount=p.hourly_price, currency=p.currency),
        )
        for p in repository.pools(session)
    ]
