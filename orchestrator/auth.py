"""Tenants and API keys. Keys are shown once and stored as their sha256."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import repository
from orchestrator.errors import Forbidden, Unauthorized
from orchestrator.models import ApiKey, Tenant

KEY_PREFIX = "rt_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(session: Session, tenant_name: str, *, admin: bool = False) -> str:
    """Create the tenant if new and a key for it; returns the key in clear, once. An admin key
    also may change pools and tenants' spending limits."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
    if tenant is None:
        tenant = Tenant(name=tenant_name)
        session.add(tenant)
        session.flush()
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(tenant_id=tenant.id, prefix=key[:10], key_hash=hash_key(key),
                       is_admin=admin))
    session.flush()
    return key


def authenticate_key(session: Session, key: str) -> ApiKey:
    api_key = repository.api_key_by_hash(session, hash_key(key)) if key else None
    if api_key is None:
        raise Unauthorized(
            "missing or unknown API key; send 'Authorization: Bearer <key>'", param="Authorization"
        )
    return api_key


def authenticate(session: Session, key: str) -> Tenant:
    return authenticate_key(session, key).tenant


def require_admin(api_key: ApiKey, action: str) -> None:
    if not api_key.is_admin:
        raise Forbidden(
            f"{action} needs an admin API key (relaytune api-key create --admin); "
            f"key {api_key.prefix}… is not one",
            param="Authorization",
        )
