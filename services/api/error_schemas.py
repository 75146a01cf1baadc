"""The error envelope as the OpenAPI schema shows it, and the error responses routes declare.

Every error leaves the API as `{"error": {"code", "message", "param"}}` (services/api/errors.py
and the body guard write it); these models only describe it, so that clients and contract tests
can hold the server to it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(
        description="Stable, machine-readable reason, e.g. not_found, invalid_request, unknown_pool"
    )
    message: str = Field(description="What was wrong and where, for a person")
    param: str | None = Field(
        description="The field, parameter, header or file at fault "
        "(dotted for nested fields), or null"
    )
    details: list[dict[str, Any]] | None = Field(
        None,
        description="Every problem found, when there is more than one (e.g. each bad row "
        "of a data set, or each plan that does not fit)",
    )


class ErrorEnvelope(BaseModel):
    error: ErrorBody


# What each error status means, as the schema describes it.
DESCRIPTIONS = {
    400: "The request could not be read (e.g. a malformed upload)",
    401: "Missing or unknown API key",
    403: "The key is valid but may not do this (an admin key is needed)",
    404: "No such resource for this tenant",
    409: "The resource is not in a state that allows this",
    413: "The request body is over the route's limit",
    422: "A field, parameter or file is invalid; `param` names it",
    503: "The job store cannot serve the request now; retry it",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for routes that may answer these statuses, each with the envelope."""
    return {
        status: {"model": ErrorEnvelope, "description": DESCRIPTIONS[status]} for status in statuses
    }


# Any route under /v1: authentication and body limits apply to all, and all reach the job store.
API_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422, 503)
# Operator routes outside /v1 (/metrics): the metrics token or an admin key.
OPERATOR_ERRORS = error_responses(401, 403, 503)
# Probes take no key and no input; only the stores can fail them.
PROBE_ERRORS = error_responses(503)
