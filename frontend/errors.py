"""One exception hierarchy, mapped once to OpenAI's error envelope and HTTP status.

Routers never catch; services raise these; `install_handlers` turns every error, including FastAPI's own
validation and routing errors, into `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from frontend.protocol.common import UnsupportedField

log = logging.getLogger(__name__)


class APIError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def envelope(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(APIError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class AuthenticationError(APIError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(APIError):
    status = 403
    type = "invalid_request_error"
    code = "insufficient_permissions"


class NotFound(APIError):
    status = 404
    type = "invalid_request_error"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Gone(APIError):
    """A resource that existed for a while (an image URL) and has expired."""

    status = 410
    type = "invalid_request_error"


class Conflict(APIError):
    """Another operation on the same resource is in progress (admin load/unload of one model)."""

    status = 409
    type = "invalid_request_error"
    code = "operation_in_progress"


class ClientClosedRequest(APIError):
    """The client left before the answer was ready (nginx's 499); nobody reads the response."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"


class RequestTooLarge(APIError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(APIError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class ServiceUnavailable(APIError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


class ModelNotReady(ServiceUnavailable):
    code = "model_not_ready"


class Overloaded(ServiceUnavailable):
    code = "overloaded"


class Timeout(APIError):
    status = 504
    type = "server_error"
    code = "timeout"


# Triton reports errors as gRPC status codes; this is the only place they become HTTP errors.
_GRPC_ERRORS: dict[str, type[APIError]] = {
    "INVALID_ARGUMENT": InvalidRequest,
    "OUT_OF_RANGE": InvalidRequest,
    "NOT_FOUND": ModelNotFound,
    "UNAVAILABLE": ServiceUnavailable,
    "RESOURCE_EXHAUSTED": Overloaded,
    "DEADLINE_EXCEEDED": Timeout,
    "UNAUTHENTICATED": ServiceUnavailable,  # Triton's own auth: a deployment problem, not the caller's
}
_ENSEMBLE_PREFIX = re.compile(r"^in ensemble '[^']*', ")


def from_triton(status: str | None, message: str) -> APIError:
    """Map a Triton/gRPC failure (status like 'StatusCode.INVALID_ARGUMENT') to an APIError."""
    name = (status or "").rsplit(".", 1)[-1]
    message = _ENSEMBLE_PREFIX.sub("", message or "Triton error").strip()
    if "context_length_exceeded" in message or "maximum context length" in message:
        return ContextLengthExceeded(message)
    if "overloaded" in message.lower():
        return Overloaded(message)
    error = _GRPC_ERRORS.get(name)
    if error is None:
        log.error("Triton error %s: %s", name or "UNKNOWN", message)
        return APIError(f"inference failed: {message}")
    return error(message)


def _validation_error(exc: RequestValidationError) -> InvalidRequest:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return InvalidRequest("the request body is not valid JSON", code="invalid_json")
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, UnsupportedField):
        return InvalidRequest(str(cause), param=cause.field, code="unsupported_parameter")
    message = first.get("msg", "invalid request").removeprefix("Value error, ")
    param = ".".join(loc) or None
    if param and not message.startswith(param):
        message = f"{param}: {message}"
    return InvalidRequest(message, param=param)


def error_response(error: APIError, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error.envelope(), status_code=error.status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return error_response(_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        error_class = NotFound if exc.status_code == 404 else InvalidRequest
        error = error_class(str(exc.detail))
        error.status = exc.status_code
        return error_response(error, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(APIError("internal server error"))
