"""The error envelope as the OpenAPI schema shows it, and the error responses routes declare.

Every error leaves the API as `{"error": {"code", "message", "param"}}` (services/api/errors.py
and the body guard write it); these models only describe it, so that clients and contract tests
can hold the server to it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(description="Stable, machine-readable reason, e.g. not_found, "
                      "invalid_request, unknown_pool")
    message: str = Field(description="What was wrong and where, for a person")
    param: str | None = Field(description="The field, parameter, header or file at fault "
                              "(dotted for nested fields), or null")
    details: list[dict[str, Any]] | None = Field(
        None, description="Every problem found, when there is more than one (e.g. each bad row "
        "of a data set, or each plan that does not fit)")


class ErrorEnvelope(BaseModel):
    error: ErrorBody


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorEnvelope, "description": description}


BAD_REQUEST = {400: _error("The request could not be read (e.g. a malformed upload)")}
UNAUTHORIZED = {401: _error("Missing or unknown API key")}
FORBIDDEN = {403: _error("The key is valid but may not do this (an admin key is needed)")}
NOT_FOUND = {404: _error("No such resource for this tenant")}
CONFLICT = {409: _error("The resource is not in a state that allows this")}
TOO_LARGE = {413: _error("The request body is over the route's limit")}
INVALID = {422: _error("A field, parameter or file is invalid; `param` names it")}
UNAVAILABLE = {503: _error("The job store cannot serve the request now; retry it")}

# What any route under /v1 may answer besides its success: authentication and body limits apply
# to all of them, and every one reaches the job store.
API_ERRORS: dict[int | str, dict[str, Any]] = {
    **BAD_REQUEST, **UNAUTHORIZED, **FORBIDDEN, **NOT_FOUND, **CONFLICT, **TOO_LARGE, **INVALID,
    **UNAVAILABLE,
}

# Operator routes outside /v1 (/metrics): the metrics token or an admin key.
OPERATOR_ERRORS: dict[int | str, dict[str, Any]] = {
    **UNAUTHORIZED, **FORBIDDEN, **UNAVAILABLE,
}

# Probes: they take no key and no input; only the stores can fail them.
PROBE_ERRORS: dict[int | str, dict[str, Any]] = {**UNAVAILABLE}
