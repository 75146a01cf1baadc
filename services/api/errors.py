"""One handler turns every error into `{"error": {"code", "message", "param"}}`."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.errors import RelaytuneError


def _body(code: str, message: str, param: str | None) -> dict[str, dict[str, str | None]]:
    return {"error": {"code": code, "message": message, "param": param}}


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


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RelaytuneError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
