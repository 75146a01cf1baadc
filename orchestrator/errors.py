"""One error root for the domain; the API maps `status_code` and `code` to HTTP."""

from __future__ import annotations

from typing import Any


class RelaytuneError(Exception):
    """Root of every domain error. `param` names the field, file or row at fault."""

    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        # Every problem found, when there is more than one (e.g. each bad row of a data set).
        self.details = details
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message, "param": self.param}
        if self.details:
            body["details"] = self.details
        return body


class InvalidRequest(RelaytuneError):
    status_code = 422
    code = "invalid_request"


class InvalidDataset(InvalidRequest):
    code = "invalid_dataset"


class RequestTooLarge(RelaytuneError):
    """The request body is over its route's limit; the message states the limit."""

    status_code = 413
    code = "request_too_large"


class Unauthorized(RelaytuneError):
    status_code = 401
    code = "unauthorized"


class NotFound(RelaytuneError):
    status_code = 404
    code = "not_found"


class Conflict(RelaytuneError):
    status_code = 409
    code = "conflict"


class IllegalTransition(Conflict):
    """A lifecycle move that the transition table does not allow."""

    code = "illegal_transition"


class PhaseNotClaimable(RelaytuneError):
    """A delivery for a phase that is not (or no longer) queued under this attempt: ignore it."""

    code = "phase_not_claimable"


class LeaseLost(RelaytuneError):
    """A fenced write found a newer attempt or another state: this run must stop writing."""

    code = "lease_lost"


class StoreUnavailable(RelaytuneError):
    """The job store could not keep a change (connection lost, commit refused): retry later."""

    status_code = 503
    code = "unavailable"


class Forbidden(RelaytuneError):
    """The key is valid but may not do this (an operator action needs an admin key)."""

    status_code = 403
    code = "forbidden"
