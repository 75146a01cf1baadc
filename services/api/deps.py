"""Request-scoped dependencies: the request owns the transaction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from orchestrator.auth import authenticate_key, require_admin
from orchestrator.db import get_sessionmaker
from orchestrator.errors import StoreUnavailable
from orchestrator.models import ApiKey, Tenant
from orchestrator.settings import Settings, get_settings
from orchestrator.storage import ObjectStore, get_store


def get_db() -> Iterator[Session]:
    session = get_sessionmaker()()
    try:
        yield session
        try:
            session.commit()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(
                "the job store did not save this request; nothing was changed, retry it"
            ) from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# "function" scope commits when the route returns, before the response is sent: a client is
# never told of a change that the commit then lost.
SessionDep = Annotated[Session, Depends(get_db, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]


# Declares the Bearer scheme in the OpenAPI schema; auto_error=False leaves the answer to a
# missing or unknown key to authenticate_key, so it is the one 401 envelope everywhere.
bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                    description="An API key (relaytune api-key create) as the bearer token")
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def current_key(session: SessionDep, credentials: BearerCredentials) -> ApiKey:
    return authenticate_key(session, credentials.credentials if credentials else "")


CurrentKey = Annotated[ApiKey, Depends(current_key)]


def admin_key(api_key: CurrentKey, request: Request) -> ApiKey:
    require_admin(api_key, f"{request.method} {request.url.path}")
    return api_key


AdminKey = Annotated[ApiKey, Depends(admin_key)]


def current_tenant(api_key: CurrentKey) -> Tenant:
    return api_key.tenant


CurrentTenant = Annotated[Tenant, Depends(current_tenant)]
