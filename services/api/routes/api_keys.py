"""API keys over HTTP. An admin key manages every tenant's keys; an ordinary key may list its
tenant's keys and revoke its ordinary ones. Creating a key takes an admin key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from orchestrator import auth
from services.api.api_key_schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, api_key_out
from services.api.deps import AdminKey, CurrentKey, SessionDep

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])


@router.get("", response_model=list[ApiKeyOut])
def list_api_keys(
    session: SessionDep,
    api_key: CurrentKey,
    tenant: Annotated[str | None, Query(max_length=200)] = None,
) -> list[ApiKeyOut]:
    """Keys newest first, never the keys themselves: the caller's tenant's, or with an admin
    key every tenant's (`tenant` picks one)."""
    return [api_key_out(k) for k in auth.keys_visible_to(session, api_key, tenant)]


@router.post("", status_code=201, response_model=ApiKeyCreated)
def create_api_key(body: ApiKeyCreate, session: SessionDep, _: AdminKey) -> ApiKeyCreated:
    """Create a key for a tenant (admin key); the response is the only time it is shown."""
    expires_in = auth.parse_duration(body.expires_in) if body.expires_in is not None else None
    created, key = auth.issue_api_key(session, body.tenant, admin=body.admin, expires_in=expires_in)
    return ApiKeyCreated(**api_key_out(created).model_dump(), key=key)


@router.delete("/{key_id}", response_model=ApiKeyOut)
def revoke_api_key(key_id: str, session: SessionDep, api_key: CurrentKey) -> ApiKeyOut:
    """Revoke a key now: its next request is a 401 api_key_revoked. Revoking it again changes
    nothing."""
    return api_key_out(auth.revoke_as(session, api_key, key_id))
