"""GPU pools: any key may read them; an admin key creates or changes them."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from orchestrator import liveness, pools, repository
from orchestrator.models import Pool, Worker, utcnow
from services.api.deps import AdminKey, CurrentTenant, SessionDep
from services.api.schemas import Money, PoolOut, PoolWorkerOut

router = APIRouter(prefix="/v1/pools", tags=["pools"])


def pool_out(pool: Pool, live: dict[str, list[Worker]]) -> PoolOut:
    """`live`: queue -> the workers seen on it lately."""
    queue = pools.pool_queue(pool)
    workers = live.get(queue, [])
    return PoolOut(
        name=pool.name,
        queue=queue,
        gpu_model=pool.gpu_model,
        gpu_memory_gb=pool.gpu_memory_gb,
        supports_bf16=pool.supports_bf16,
        peak_tflops=pool.peak_tflops,
        memory_bandwidth_gbs=pool.memory_bandwidth_gbs,
        hourly_price=Money(amount=pool.hourly_price, currency=pool.currency),
        live_workers=len(workers),
        workers=[PoolWorkerOut(hostname=w.hostname, last_seen_at=w.last_seen_at) for w in workers],
    )


def _live(session: Session) -> dict[str, list[Worker]]:
    return liveness.live_workers_by_queue(session, utcnow())


@router.get("", response_model=list[PoolOut])
def list_pools(session: SessionDep, _: CurrentTenant) -> list[PoolOut]:
    """GPU pools with their queue, GPU, hourly price and live workers, cheapest first."""
    live = _live(session)
    return [pool_out(p, live) for p in repository.pools(session)]


@router.put("/{name}", response_model=PoolOut, responses={201: {"model": PoolOut}})
def put_pool(
    name: str, body: pools.PoolChanges, session: SessionDep, _: AdminKey, response: Response
) -> PoolOut:
    """Create a pool or change some of its fields (admin key). A new price applies to time not
    billed yet: runs already ended keep their cost."""
    pool, created = pools.upsert_pool(session, name, body)
    response.status_code = 201 if created else 200
    return pool_out(pool, _live(session))
