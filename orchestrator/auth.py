"""Tenants and API keys. Keys are shown once and stored as their sha256.

Who may manage keys: an admin key may list, create and revoke any tenant's keys; an ordinary
key may list its own tenant's keys and revoke its ordinary ones (a leaked key, or itself).
Creating a key takes an admin key, so a leaked key cannot mint replacements that outlive it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import repository
from orchestrator.cost import as_utc
from orchestrator.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized
from orchestrator.models import ApiKey, Tenant, utcnow

KEY_PREFIX = "rt_"
SHOWN_PREFIX_LENGTH = 10  # "rt_" and 7 random characters: enough to tell keys apart in a list

DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Far enough for any key; a bound keeps the expiry a date the database can hold.
MAX_LIFETIME = timedelta(days=3650)

KeyStatus = Literal["active", "expired", "revoked"]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_duration(text: str, *, param: str = "expires_in") -> timedelta:
    """'30d', '12h', '90m', '2w' or '3600s': how long a new key lives."""
    match = DURATION.match(text)
    if match is None:
        raise InvalidRequest(
            f"{param} must be a number and a unit (s, m, h, d or w), like '30d'; got '{text}'",
            param=param,
        )
    lifetime = timedelta(seconds=int(match[1]) * UNIT_SECONDS[match[2]])
    if not timedelta(0) < lifetime <= MAX_LIFETIME:
        raise InvalidRequest(
            f"{param} must be more than 0 and at most {MAX_LIFETIME.days} days; got '{text}'",
            param=param,
        )
    return lifetime


def key_status(api_key: ApiKey, now: datetime | None = None) -> KeyStatus:
    if api_key.revoked_at is not None:
        return "revoked"
    if api_key.expires_at is not None and as_utc(api_key.expires_at) <= (now or utcnow()):
        return "expired"
    return "active"


def issue_api_key(
    session: Session, tenant_name: str, *, admin: bool = False, expires_in: timedelta | None = None
) -> tuple[ApiKey, str]:
    """Create the tenant if new and a key for it; returns the row and the key in clear, which
    is never shown again. An admin key also may change pools, spending limits and keys."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
    if tenant is None:
        tenant = Tenant(name=tenant_name)
        session.add(tenant)
        session.flush()
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    api_key = ApiKey(
        tenant_id=tenant.id,
        prefix=key[:SHOWN_PREFIX_LENGTH],
        key_hash=hash_key(key),
        is_admin=admin,
        created_at=now,
        expires_at=now + expires_in if expires_in is not None else None,
    )
    api_key.tenant = tenant
    session.add(api_key)
    session.flush()
    return api_key, key


def create_api_key(
    session: Session, tenant_name: str, *, admin: bool = False, expires_in: timedelta | None = None
) -> str:
    """The new key in clear (see issue_api_key)."""
    return issue_api_key(session, tenant_name, admin=admin, expires_in=expires_in)[1]


def _when(moment: datetime) -> str:
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def authenticate_key(session: Session, key: str) -> ApiKey:
    api_key = repository.api_key_with_hash(session, hash_key(key)) if key else None
    if api_key is None:
        raise Unauthorized(
            "missing or unknown API key; send 'Authorization: Bearer <key>'", param="Authorization"
        )
    _refuse_unless_active(api_key)
    return api_key


def recheck_key(session: Session, key_id: str) -> None:
    """Raise the 401 that authenticate_key would if key `key_id`, which authenticated a request
    a while ago, has been revoked or has expired since: a long-lived response (a live event
    stream) asks again now and then. One read by primary key, the tenant not loaded."""
    api_key = session.get(ApiKey, key_id)
    if api_key is None:  # deleted (with its tenant, say): now an unknown key, as a new request
        raise Unauthorized("the API key of this request no longer exists", param="Authorization")
    _refuse_unless_active(api_key)


def _refuse_unless_active(api_key: ApiKey) -> None:
    status = key_status(api_key)
    if status == "revoked":
        assert api_key.revoked_at is not None
        raise Unauthorized(
            f"API key {api_key.prefix}… was revoked at {_when(api_key.revoked_at)}; "
            "use another key of the tenant or ask the operator for a new one",
            param="Authorization",
            code="api_key_revoked",
        )
    if status == "expired":
        assert api_key.expires_at is not None
        raise Unauthorized(
            f"API key {api_key.prefix}… expired at {_when(api_key.expires_at)}; "
            "use another key of the tenant or ask the operator for a new one",
            param="Authorization",
            code="api_key_expired",
        )


def authenticate(session: Session, key: str) -> Tenant:
    return authenticate_key(session, key).tenant


def require_admin(api_key: ApiKey, action: str) -> None:
    if not api_key.is_admin:
        raise Forbidden(
            f"{action} needs an admin API key (relaytune api-key create --admin); "
            f"key {api_key.prefix}… is not one",
            param="Authorization",
        )


def tenant_named(session: Session, name: str, *, param: str = "tenant") -> Tenant:
    tenant = repository.tenant_by_name(session, name)
    if tenant is None:
        raise NotFound(f"tenant '{name}' not found", param=param)
    return tenant


def list_api_keys(session: Session, tenant_name: str | None = None) -> Sequence[ApiKey]:
    """Every key, or one tenant's, newest first."""
    tenant_id = tenant_named(session, tenant_name).id if tenant_name is not None else None
    return repository.api_keys(session, tenant_id)


def find_api_key(session: Session, prefix_or_id: str) -> ApiKey:
    """The one key with this id, shown prefix (or a start of it), or whole key."""
    wanted = prefix_or_id.strip().rstrip("…")
    if len(wanted) > SHOWN_PREFIX_LENGTH and wanted.startswith(KEY_PREFIX):
        whole = repository.api_key_with_hash(session, hash_key(wanted))
        if whole is not None:
            return whole
    matches = repository.api_keys_matching(session, wanted) if wanted else []
    if not matches:
        raise NotFound(f"no API key has the id or prefix '{wanted}'", param="key")
    if len(matches) > 1:
        raise Conflict(
            f"'{wanted}' is the start of {len(matches)} keys' prefixes; name one by its id: "
            + ", ".join(f"{k.id} ({k.prefix}…, tenant {k.tenant.name})" for k in matches),
            param="key",
            code="ambiguous_api_key",
        )
    return matches[0]


def revoke_api_key(session: Session, api_key: ApiKey) -> ApiKey:
    """Revoke now; a key already revoked keeps its first revocation time."""
    if api_key.revoked_at is None:
        api_key.revoked_at = utcnow()
        session.flush()
    return api_key


def keys_visible_to(session: Session, actor: ApiKey, tenant_name: str | None) -> Sequence[ApiKey]:
    """What `actor` may list: an admin key every tenant's keys (or the one named), an
    ordinary key its own tenant's."""
    if actor.is_admin:
        return list_api_keys(session, tenant_name)
    if tenant_name is not None and tenant_name != actor.tenant.name:
        require_admin(actor, f"listing the keys of tenant '{tenant_name}'")
    return repository.api_keys(session, actor.tenant_id)


def revoke_as(session: Session, actor: ApiKey, key_id: str) -> ApiKey:
    """Revoke key `key_id` on behalf of `actor`. Another tenant's key is not found for an
    ordinary key (its existence is not its business); an admin key needs an admin to revoke."""
    target = session.get(ApiKey, key_id)
    if target is None or (not actor.is_admin and target.tenant_id != actor.tenant_id):
        raise NotFound(f"API key {key_id} not found", param="key_id")
    if target.is_admin:
        require_admin(actor, f"revoking admin key {target.prefix}…")
    return revoke_api_key(session, target)
