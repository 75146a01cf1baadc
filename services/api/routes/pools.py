"""GPU pools: any key may read them; an admin key creates or changes them."""

from __future__ import annotations

from fastapi import APIRouter, Response

from orchestrator import pools, repository
from orchestrator.models import Pool
from services.api.deps import AdminKey, CurrentTenant, SessionDep
from services.api.schemas import Money, PoolOut

router = APIRouter(prefix="/v1/pools", tags=["pools"])


def pool_out(pool: Pool) -> PoolOut:
    return PoolOut(
        name=pool.name,
        queue=pool.queue or f"gpu.{pool.name}",
        gpu_model=pool.gpu_model,
        gpu_memory_gb=pool.gpu_memory_gb,
        supports_bf16=pool.supports_bf16,
        peak_tflops=pool.peak_tflops,
        memory_bandwidth_gbs=pool.memory_bandwidth_gbs,
        hourly_price=Money(amount=pool.hourly_price, currency=pool.currency),
    )


@router.get("", response_model=list[PoolOut])
def list_pools(session: SessionDep, _: CurrentTenant) -> list[PoolOut]:
    """GPU pools with their queue, GPU and hourly price, cheapest first."""
    return [pool_out(p) for p in repository.pools(session)]


@router.put("/{name}", response_model=PoolOut, responses={201: {"model": PoolOut}})
def put_pool(name: str, body: pools.PoolChanges, session: SessionDep, _: AdminKey,
             response: Response) -> PoolOut:
    """Create a pool or change some of its fields (admin key). A new price applies to time not
    billed yet: runs already ended keep their cost."""
    pool, created = pools.upsert_pool(session, name, body)
    response.status_code = 201 if created else 200
    return pool_out(pool)
