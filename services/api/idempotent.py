"""The Idempotency-Key header on create routes, and running a create once per key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from orchestrator import idempotency
from orchestrator.idempotency import HEADER, KEY_TTL, Result

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=HEADER,
        description=f"Any unique string (≤ 255 characters, e.g. a UUID). A retry with the same key "
        f"within {KEY_TTL.total_seconds() / 3600:g} hours gets the first request's status and body "
        "back (with `Idempotent-Replayed: true`) and creates nothing; the key is scoped to the "
        "tenant and route, and reusing it for a different request is a 422 idempotency_key_reused",
    ),
]

Created = TypeVar("Created", bound=BaseModel)


def once_per_key(
    session: Session,
    *,
    tenant_id: str,
    route: str,
    key: str | None,
    request_hash: Callable[[], str],
    status_code: int,
    create: Callable[[], Created],
) -> Created | JSONResponse:
    """`create()`'s answer; with an Idempotency-Key, created once per key and the first answer
    given back to a retry. `request_hash` is called only when a key is sent, so an upload is
    hashed only then."""
    if key is None:
        return create()
    return respond(
        idempotency.run_once(
            session,
            tenant_id=tenant_id,
            route=route,
            key=key,
            request_hash=request_hash(),
            create=lambda: Result(status_code, create().model_dump(mode="json")),
        )
    )


def respond(result: Result) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return JSONResponse(result.body, status_code=result.status_code, headers=headers)
