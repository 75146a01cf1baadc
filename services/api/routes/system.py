from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from services.api.deps import SessionDep, StoreDep

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
