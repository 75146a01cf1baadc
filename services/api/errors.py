"""One handler turns every error into `{"error": {"code", "message", "param"}}`: a domain error
with its own status, a store that does not answer with a 503 naming it, anything else with a
500 that keeps its details in the server's log."""

from __future__ import annotations

import logging

from botocore import exceptions as s3_errors
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis import exceptions as redis_errors
from sqlalchemy import exc as sql_errors
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.errors import RelaytuneError

logger = logging.getLogger(__name__)

JOB_DATABASE = "the job database"
# Failures that say a store did not answer (connection refused, lost or timed out), by store.
_UNAVAILABLE: dict[str, tuple[type[Exception], ...]] = {
    JOB_DATABASE: (sql_errors.OperationalError, sql_errors.InterfaceError, sql_errors.TimeoutError),
    "the broker": (redis_errors.ConnectionError, redis_errors.TimeoutError, BrokerOperationalError),
    "the object store": (
        s3_errors.ConnectionError,
        s3_errors.ReadTimeoutError,
        s3_errors.ConnectionClosedError,
    ),
}
_HANDLED: tuple[type[Exception], ...] = (
    sql_errors.DBAPIError,
    *(kind for kinds in _UNAVAILABLE.values() for kind in kinds),
)


def _body(code: str, message: str, param: str | None) -> dict[str, dict[str, str | None]]:
    return {"error": {"code": code, "message": message, "param": param}}


def unavailable_store(exc: BaseException) -> str | None:
    """The store that did not answer, when `exc` says one did not; else None."""
    if isinstance(exc, sql_errors.DBAPIError) and exc.connection_invalidated:
        return JOB_DATABASE
    return next((store for store, kinds in _UNAVAILABLE.items() if isinstance(exc, kinds)), None)


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RelaytuneError)
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.status_code)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    reason = "unknown field" if first.get("type") == "extra_forbidden" else first["msg"]
    message = f"{param}: {reason}" if param else str(reason)
    return JSONResponse(_body("invalid_request", message, param), status_code=422)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = "not_found" if exc.status_code == 404 else f"http_{exc.status_code}"
    return JSONResponse(_body(code, str(exc.detail), None), status_code=exc.status_code)


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    store = unavailable_store(exc)
    if store is None:
        raise exc  # a database error of another kind (a constraint, a bug): unexpected
    logger.warning("%s %s: %s did not answer: %s", request.method, request.url.path, store, exc)
    return JSONResponse(
        _body("unavailable", f"{store} is unavailable; retry later", None), status_code=503
    )


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # Starlette raises the exception again once this answer is sent, so the server logs its
    # traceback; the client learns only that it happened.
    return JSONResponse(
        _body(
            "internal_error", "the server failed to answer this request; the error is logged", None
        ),
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RelaytuneError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for kind in _HANDLED:
        app.add_exception_handler(kind, _store_unavailable)
    app.add_exception_handler(Exception, _unexpected)
