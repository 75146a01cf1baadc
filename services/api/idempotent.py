"""The Idempotency-Key header on create routes, and the answer for a recorded result."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header
from fastapi.responses import JSONResponse

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


def respond(result: Result) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return JSONResponse(result.body, status_code=result.status_code, headers=headers)
