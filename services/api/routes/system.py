from __future__ import annotations

from fastapi import APIRouter

from orchestrator.readiness import require_ready

router = APIRouter(tags=["system"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a store does not answer"}})
def readyz() -> dict[str, str]:
    """The database, the broker and the object store answer; a 503 names each that does not."""
    require_ready()
    return {"status": "ready"}
