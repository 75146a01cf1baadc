"""Request-scoped dependencies: the request owns the transaction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy.orm import Session

from orchestrator.auth import authenticate
from orchestrator.db import get_sessionmaker
from orchestrator.models import Tenant
from orchestrator.settings import Settings, get_settings
from orchestrator.storage import ObjectStore, get_store


def get_db() -> Iterator[Session]:
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]


def current_tenant(session: SessionDep, authorization: Annotated[str, Header()] = "") -> Tenant:
    scheme, _, key = authorization.partition(" ")
    return authenticate(session, key.strip() if scheme.lower() == "bearer" else "")


CurrentTenant = Annotated[Tenant, Depends(current_tenant)]
