"""Wire models of API keys: what a key is, never the key itself (except once, at creation)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from orchestrator.auth import KeyStatus, key_status
from orchestrator.models import ApiKey
from services.api.schemas import RequestBody, UtcDatetime


class ApiKeyCreate(RequestBody):
    tenant: str = Field(
        min_length=1, max_length=200, description="The tenant the key acts for; created if new"
    )
    admin: bool = Field(False, description="May also manage pools, spending limits and keys")
    expires_in: str | None = Field(
        None,
        max_length=32,
        description="How long the key lives: a number and a unit (s, m, h, d, w), like '30d'; "
        "null never expires",
    )


class ApiKeyOut(BaseModel):
    id: str
    prefix: str = Field(description="The key's first characters, to tell keys apart")
    tenant: str
    admin: bool
    status: KeyStatus
    created_at: UtcDatetime
    expires_at: UtcDatetime | None
    revoked_at: UtcDatetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself: shown only in this response, stored hashed")


def api_key_out(api_key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=api_key.id,
        prefix=api_key.prefix,
        tenant=api_key.tenant.name,
        admin=api_key.is_admin,
        status=key_status(api_key),
        created_at=api_key.created_at,
        expires_at=api_key.expires_at,
        revoked_at=api_key.revoked_at,
    )
