"""Judging a request at the door, before its body is read: who sends it, and how big it is.

FastAPI parses a multipart upload (spooling it to disk) before any dependency runs, so neither
authentication nor a size check in a route can stop a 1.5 GB body from being read first. This
ASGI middleware sits in front of the routes: a body-carrying `/v1` request with a missing or
unknown key gets its 401 unread; a body over its route's limit gets a 413 unread when it says its
length, and is cut off at the limit when it streams (chunked transfer) or understates it.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import anyio
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.auth import authenticate_key
from orchestrator.db import get_sessionmaker
from orchestrator.errors import RelaytuneError, RequestTooLarge, StoreUnavailable, Unauthorized
from orchestrator.settings import Settings, get_settings

# Routes that take a file; every other body is JSON and gets the (much smaller) JSON limit.
UPLOAD_ROUTES = frozenset({("POST", "/v1/datasets"), ("POST", "/v1/files")})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _OverLimit(Exception):
    """Raised into whatever reads the body once it passes the limit, to stop the reading."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _check_key(authorization: str) -> None:
    scheme, _, key = authorization.partition(" ")
    session = get_sessionmaker()()
    try:
        authenticate_key(session, key.strip() if scheme.lower() == "bearer" else "")
    except SQLAlchemyError as exc:
        raise StoreUnavailable("the job store cannot check the API key now; retry") from exc
    finally:
        session.close()


def _limit_for(scope: Scope, settings: Settings) -> tuple[int, str]:
    """(byte limit, what the limit is called in the message) for this request's body."""
    if (scope["method"], scope["path"].rstrip("/")) in UPLOAD_ROUTES:
        return settings.max_upload_bytes, "RELAYTUNE_MAX_UPLOAD_BYTES"
    return settings.max_json_body_bytes, "RELAYTUNE_MAX_JSON_BODY_BYTES"


def _too_large(limit: int, setting: str, param: str | None) -> RequestTooLarge:
    return RequestTooLarge(
        f"the request body is over the limit of {limit} bytes ({limit / 2**20:.1f} MiB) for "
        f"this route; the server's operator sets it with {setting}",
        param=param,
    )


async def _refuse(error: RelaytuneError, scope: Scope, receive: Receive, send: Send) -> None:
    # Close the connection: the client may still be sending the body we will not read.
    response = JSONResponse(
        {"error": error.to_dict()}, status_code=error.status_code, headers={"Connection": "close"}
    )
    await response(scope, receive, send)


class BodyGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith("/v1/"):
            try:
                await anyio.to_thread.run_sync(_check_key, _header(scope, b"authorization") or "")
            except (Unauthorized, StoreUnavailable) as error:
                await _refuse(error, scope, receive, send)
                return
        limit, setting = _limit_for(scope, get_settings())
        param = "file" if setting == "RELAYTUNE_MAX_UPLOAD_BYTES" else None
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(_too_large(limit, setting, param), scope, receive, send)
            return
        await _Metered(self.app, limit, _too_large(limit, setting, param))(scope, receive, send)


class _Metered:
    """Counts the body as the app reads it. Past the limit, reading raises and the app's own
    answer (FastAPI turns a failed read into a 400) is replaced by the 413."""

    def __init__(self, app: ASGIApp, limit: int, error: RequestTooLarge) -> None:
        self.app, self.limit, self.error = app, limit, error
        self.received = 0
        self.over = False
        self.started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def metered_receive() -> Message:
            if self.over:
                raise _OverLimit
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limit:
                    self.over = True
                    raise _OverLimit
            return message

        async def guarded_send(message: MutableMapping[str, Any]) -> None:
            if self.over:
                return  # the app's answer to a body it could not finish reading
            self.started = True
            await send(message)

        try:
            await self.app(scope, metered_receive, guarded_send)
        except _OverLimit:
            if self.started:
                raise
        if self.over and not self.started:
            await _refuse(self.error, scope, receive, send)
