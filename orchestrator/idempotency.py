"""Idempotency-Key: a retried create gets the first request's result instead of a second job
or data set.

A key is scoped to its tenant and route and lives 24 hours. The first successful result (status
and body) is recorded in the transaction that creates the job or data set, so the two commit or
vanish together. A request that fails creates nothing and records nothing: it may be retried
with the same key. Reusing a key for a different request is refused (`idempotency_key_reused`).

Two requests with one key at once never both create: on PostgreSQL the second is refused with
`idempotency_request_in_progress` while the first holds a transaction lock on the key; where no
such lock exists (SQLite) the unique (tenant, route, key) row decides, the loser's transaction
is rolled back whole and it answers with the winner's result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator import repository
from orchestrator.cost import as_utc
from orchestrator.errors import Conflict, InvalidRequest
from orchestrator.models import IdempotencyKey, utcnow

HEADER = "Idempotency-Key"
KEY_TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 255
# Expired results forgotten per recorded one: enough to keep up, small enough to stay cheap.
PURGE_BATCH = 100
CHUNK = 1 << 20


@dataclass(frozen=True)
class Result:
    status_code: int
    body: dict[str, Any]
    replayed: bool = False


def hash_json(payload: Any) -> str:
    """Hash of a parsed request body: key order and spacing do not make a different request."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def hash_upload(file: IO[bytes], *names: str) -> str:
    """Hash of an uploaded file (and the names that go with it), read in chunks from where the
    upload was spooled and rewound after, so the file is never held in memory for this."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0")
    file.seek(0)
    while chunk := file.read(CHUNK):
        digest.update(chunk)
    file.seek(0)
    return digest.hexdigest()


def check_key(key: str) -> None:
    if not key.strip():
        raise InvalidRequest(
            f"the {HEADER} header is empty; send a unique string, like a UUID",
            param=HEADER,
            code="invalid_idempotency_key",
        )
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest(
            f"the {HEADER} header has {len(key)} characters; at most {MAX_KEY_LENGTH} are allowed",
            param=HEADER,
            code="invalid_idempotency_key",
        )


def run_once(
    session: Session,
    *,
    tenant_id: str,
    route: str,
    key: str,
    request_hash: str,
    create: Callable[[], Result],
) -> Result:
    """`create()`'s result, or the result recorded for this key by an earlier request."""
    check_key(key)
    _lock(session, tenant_id, route, key)
    now = utcnow()
    earlier = repository.idempotency_record(session, tenant_id, route, key)
    if earlier is not None and _live(earlier, now):
        return _replay(earlier, request_hash, route)
    result = create()
    try:
        _record(
            session,
            earlier,
            IdempotencyKey(
                tenant_id=tenant_id,
                key=key,
                route=route,
                request_hash=request_hash,
                status_code=result.status_code,
                response_body=result.body,
                created_at=now,
            ),
        )
    except IntegrityError:
        # Another request with this key committed first. Undo everything this one did (its
        # stored upload goes with the rollback) and answer with that request's result.
        session.rollback()
        winner = repository.idempotency_record(session, tenant_id, route, key)
        if winner is None:
            raise
        return _replay(winner, request_hash, route)
    return result


def _live(record: IdempotencyKey, now: datetime) -> bool:
    return as_utc(record.created_at) > now - KEY_TTL


def _lock(session: Session, tenant_id: str, route: str, key: str) -> None:
    """On PostgreSQL, hold a lock on the key until this transaction ends; a second request
    with the key meanwhile is told to retry instead of waiting for the first to finish."""
    if session.get_bind().dialect.name != "postgresql":
        return
    name = hashlib.sha256(f"{tenant_id}\0{route}\0{key}".encode()).digest()
    lock_id = int.from_bytes(name[:8], "big", signed=True)
    if not session.scalar(select(func.pg_try_advisory_xact_lock(lock_id))):
        raise Conflict(
            f"a {route} request with {HEADER} '{key}' is still in progress; retry it once that "
            "request has finished to get its result",
            param=HEADER,
            code="idempotency_request_in_progress",
        )


def _record(session: Session, expired: IdempotencyKey | None, record: IdempotencyKey) -> None:
    if expired is not None:
        session.delete(expired)
        session.flush()  # before the insert that takes its (tenant, route, key)
    repository.delete_idempotency_records_before(
        session, record.created_at - KEY_TTL, limit=PURGE_BATCH
    )
    session.add(record)
    session.flush()


def _replay(record: IdempotencyKey, request_hash: str, route: str) -> Result:
    if record.request_hash != request_hash:
        raise InvalidRequest(
            f"{HEADER} '{record.key}' was already used for a different {route} request; "
            "send a new key for a new request",
            param=HEADER,
            code="idempotency_key_reused",
        )
    return Result(record.status_code, record.response_body, replayed=True)
