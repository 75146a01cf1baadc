"""Request-scoped dependencies: the request owns the transaction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from orchestrator.auth import authenticate_key, require_admin
from orchestrator.db import session_scope
from orchestrator.errors import InvalidRequest, StoreUnavailable
from orchestrator.models import ApiKey, Tenant
from orchestrator.settings import Settings, get_settings
from orchestrator.storage import ObjectStore, get_store


def get_db() -> Iterator[Session]:
    """The job store's transaction (orchestrator.db.session_scope), committed here so that a
    commit that fails is told to the client as such."""
    with session_scope() as session:
        yield session
        try:
            session.commit()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(
                "the job store did not save this request; nothing was changed, retry it"
            ) from exc


# "function" scope commits when the route returns, before the response is sent: a client is
# never told of a change that the commit then lost.
SessionDep = Annotated[Session, Depends(get_db, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]


# Declares the Bearer scheme in the OpenAPI schema; auto_error=False leaves the answer to a
# missing or unknown key to authenticate_key, so it is the one 401 envelope everywhere.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key (relaytune api-key create) as the bearer token",
)
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


def _nul_in(value: Any, where: str = "") -> str | None:
    """Where in a parsed JSON value a string (or an object key) holds the NUL character."""
    if isinstance(value, str):
        return where if "\x00" in value else None
    if isinstance(value, dict):
        items: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return None
    for key, item in items:
        inner = f"{where}.{key}" if where else str(key)
        # A key is named by the object holding it (the key itself cannot be shown plainly).
        found = (where or "body") if "\x00" in str(key) else _nul_in(item, inner)
        if found:
            return found
    return None


async def _json_body(request: Request) -> Any:
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if not (kind == "application/json" or kind.endswith("+json")) or not await request.body():
        return None
    try:
        return await request.json()  # parsed once: FastAPI keeps it for the route
    except ValueError:
        return None  # not JSON: the route's own parsing answers for it


async def refuse_nul(request: Request, _: CurrentKey) -> None:
    """PostgreSQL text cannot hold the NUL character: a path or query parameter or a JSON body
    field carrying one is refused here, naming it, rather than failing the query it reaches.
    After authentication, so that a request without a key is told so first."""
    found = next(
        (
            name
            for source in (request.path_params, request.query_params)
            for name, value in source.items()
            if "\x00" in str(value)
        ),
        None,
    )
    found = found or _nul_in(await _json_body(request))
    if found:
        raise InvalidRequest(
            f"{found}: text may not contain the NUL character (\\u0000)", param=found
        )
