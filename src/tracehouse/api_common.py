"""What every capability's `api.py` shares: the services dependency, error bodies and errors.

Routes raise `ApiError` subclasses; the web app renders them with one handler, so every error body
has the same shape (Langfuse's `{error, message}`, plus `parameter` for a bad parameter) and the
OpenAPI document can declare it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Request
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from tracehouse.runtime import Services


def get_services(request: Request) -> Services:
    """FastAPI dependency: the services the composition root opened for this app."""
    services: Services = request.app.state.services
    return services


class ErrorBody(BaseModel):
    """Every error answer, in Langfuse's two conventions: 400 and 413 carry `message: "Invalid request
    data"` and the details in `error` (plus `parameter` naming the field at fault); the others carry a
    short name in `error` (UnauthorizedError, LangfuseNotFoundError, ...) and the details in `message`."""

    error: str
    message: str
    parameter: str | None = Field(None, description="The request parameter or body field at fault")


class ApiError(Exception):
    status = 500
    error = "InternalError"

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.parameter = parameter

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.parameter is not None:
            body["parameter"] = self.parameter
        return body


class BadRequest(ApiError):
    status = 400
    error = "InvalidRequestError"

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": "Invalid request data", "error": self.message}
        if self.parameter is not None:
            body["parameter"] = self.parameter
        return body


class BadParameter(BadRequest):
    """A request parameter (or body field) has a value we cannot use; the message names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}", parameter=parameter)


class AuthError(ApiError):
    status = 401
    error = "UnauthorizedError"


class Forbidden(ApiError):
    status = 403
    error = "ForbiddenError"


class NotFound(ApiError):
    status = 404
    error = "LangfuseNotFoundError"


class PayloadTooLarge(BadRequest):
    status = 413


class Unavailable(ApiError):
    """A dependency failed; nothing was done. Retrying later can help."""

    status = 503

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "error": self.reason}


# Bodies FastAPI parses itself (small JSON documents, not event batches) stop here, read or not.
MAX_JSON_BODY_BYTES = 1_000_000

_DESCRIPTIONS = {
    400: "Invalid request: the message (and `parameter`) name what is wrong",
    401: "Missing or invalid credentials",
    403: "The key may not act on this resource",
    404: "No such resource in this project",
    408: "The request body did not arrive within the body timeout",
    413: "Request body too large",
    503: "A dependency is unavailable or the query exceeded its memory limit; nothing was changed",
    504: "The query exceeded the interactive timeout",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each listed status answers an `ErrorBody`."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}
