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
from starlette.routing import Match

from frontend.protocol.common import FieldError, unicode_problem
from triton_models import contract

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


class UnknownURL(NotFound):
    """No endpoint at this path (OpenAI's code)."""

    code = "unknown_url"


class MethodNotAllowed(InvalidRequest):
    """The path is an endpoint, but not for this method (the response keeps Starlette's `Allow` header)."""

    status = 405
    code = "method_not_allowed"


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


# Triton reports errors as gRPC status codes, and our models' errors as ModelError data inside the message
# (triton_models/contract.py); this is the only place either becomes an HTTP error.
_GRPC_ERRORS: dict[str, type[APIError]] = {
    "INVALID_ARGUMENT": InvalidRequest,
    "OUT_OF_RANGE": InvalidRequest,
    "NOT_FOUND": ModelNotFound,
    "UNAVAILABLE": ServiceUnavailable,
    "RESOURCE_EXHAUSTED": Overloaded,
    "DEADLINE_EXCEEDED": Timeout,
    "UNAUTHENTICATED": ServiceUnavailable,  # Triton's own auth: a deployment problem, not the caller's
}
_MODEL_ERRORS: dict[str, type[APIError]] = {
    contract.CONTEXT_LENGTH_EXCEEDED: ContextLengthExceeded,
    contract.OVERLOADED: Overloaded,
    contract.UNAVAILABLE: ModelNotReady,
}
_ENSEMBLE_PREFIX = re.compile(r"^in ensemble '[^']*', ")


def from_model_error(error: contract.ModelError) -> APIError:
    """A model's own error (code, message, param) as the APIError of its status."""
    cls = _MODEL_ERRORS.get(error.code) or {400: InvalidRequest, 503: ServiceUnavailable}.get(error.status, APIError)
    result = cls(error.message, param=error.param, code=error.code)
    if cls is APIError:
        log.error("model error %s: %s", error.code, error.message)
    return result


def from_triton(status: str | None, message: str) -> APIError:
    """Map a Triton/gRPC failure (status like 'StatusCode.INVALID_ARGUMENT') to an APIError."""
    model_error = contract.ModelError.decode(message)
    if model_error is not None:
        return from_model_error(model_error)
    name = (status or "").rsplit(".", 1)[-1]
    message = _ENSEMBLE_PREFIX.sub("", message or "Triton error").strip()
    error = _GRPC_ERRORS.get(name)
    if error is None:  # a crash or a bug on the server's side: its words stay in the log
        log.error("Triton error %s: %s", name or "UNKNOWN", message)
        return APIError("the model failed on this request; the server log has the details (find it by the "
                        "response's x-request-id)")
    return error(message)


# Pydantic names a union's members in an error's location ("prompt", "list[str]", 0): not the user's words.
_TAG = re.compile(r"^(str|int|float|bool|none|bytes|constrained-\w+|function-\w+|[A-Z]\w*)$|\[")


def _path(loc) -> str | None:
    return ".".join(str(p) for p in loc if p != "body" and not (isinstance(p, str) and _TAG.search(p))) or None


def _member(loc) -> tuple[str, str] | None:
    """(the union field's path, the member's type) of an error inside a union, or None."""
    at = next((i for i, p in enumerate(loc) if isinstance(p, str) and _TAG.search(p)), None)
    if at is None or loc[at].startswith("function-"):
        return None
    return _path(loc[:at]) or "", re.sub(r"constrained-(\w+)", r"\1", loc[at])


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    """The one error a person needs, naming the field (OpenAI reports one error per request, too)."""
    errors = exc.errors()
    if not errors:
        return InvalidRequest("invalid request")
    if any(e.get("type") == "json_invalid" for e in errors):
        return InvalidRequest("the request body is not valid JSON", code="invalid_json")
    # A union reports one error per member: the member that took the value's shape and failed a constraint,
    # or failed deepest inside it, is the one the user meant. max() keeps the first on ties.
    first = max(errors, key=lambda e: (not e.get("type", "").endswith("_type"), len(_path(e.get("loc", ())) or "")))
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, FieldError):
        param = cause.field or _path(first.get("loc", ()))
        return InvalidRequest(_named(param, str(cause)), param=param, code=cause.code)
    param = _path(first.get("loc", ()))
    if param is None and first.get("type") == "missing":  # no body at all
        return InvalidRequest("the request needs a JSON object body", code="missing_body")
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    union = _member(first.get("loc", ()))
    if first.get("type", "").endswith("_type") and union is not None:  # no member took it: list them all
        members = dict.fromkeys(m[1] for m in (_member(e.get("loc", ())) for e in errors) if m and m[0] == union[0])
        message = f"has the wrong type; {union[0] or 'the body'} must be one of: {', '.join(members)}"
    elif message.startswith("Input should"):
        message = "must" + message.removeprefix("Input should")
    return InvalidRequest(_named(param, message), param=param)


def _named(param: str | None, message: str) -> str:
    """The message, starting with the field it concerns."""
    return message if not param or message.startswith(param) else f"{param}: {message}"


def check_unicode(body) -> None:
    """Refuse a parsed JSON body holding an unpaired surrogate (valid JSON, not text) before anything encodes
    it (cache keys, logs, Triton tensors); the request models check again, for bodies read elsewhere."""
    problem = unicode_problem(body)
    if problem is not None:
        raise InvalidRequest(str(problem), param=problem.field)


def error_response(error: APIError, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error.envelope(), status_code=error.status, headers=headers)


SHOWN_PATH_CHARS = 200  # of an unknown path, echoed back (a path can be as long as the server accepts)


def routing_error(request: Request, exc: StarletteHTTPException) -> APIError | None:
    """OpenAI's answer to a URL with no endpoint (404 `unknown_url`, in its words), a 405 naming the methods
    for a wrong method on an endpoint; None for other HTTP errors. No query string is echoed (it may hold a
    key), and only public API paths are ever suggested."""
    path = request.url.path
    target = f"{request.method} {path[:SHOWN_PATH_CHARS]}{'...' if len(path) > SHOWN_PATH_CHARS else ''}"
    if exc.status_code == 404 and "route" not in request.scope:  # the router matched nothing
        return UnknownURL(f"Unknown request URL: {target}. {_did_you_mean(request)}Please check the URL for typos, "
                          "or see the API reference at /docs (GET /v1/models lists the models).")
    if exc.status_code == 405:
        allowed = allowed_methods(request)
        error = MethodNotAllowed(f"Method not allowed: {target}. This URL takes {allowed}.")
        error.allow = allowed
        return error
    return None


def allowed_methods(request: Request) -> str:
    """Every method some route takes at this path (Starlette's `Allow` names the first matching route's only:
    GET and DELETE /v1/responses/{id} are two routes)."""
    methods = set()
    for route in _endpoints(request.app.routes):
        if route.matches(request.scope)[0] != Match.NONE:  # PARTIAL: the path matches, the method does not
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def _endpoints(routes):
    """The routes of endpoints, through the wrappers FastAPI puts around included routers (no prefixes here)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        yield from _endpoints(inner.routes) if inner is not None else (route,)


def _did_you_mean(request: Request) -> str:
    """The path with `/v1` added or removed, when that is an endpoint for this method: a base URL with or
    without `/v1` is the usual mistake. Admin paths are never suggested."""
    path = request.url.path
    candidate = path.removeprefix("/v1") if path.startswith("/v1/") else f"/v1{path}"
    if candidate.startswith("/admin"):
        return ""
    scope = {**request.scope, "path": candidate}
    if any(route.matches(scope)[0] == Match.FULL for route in request.app.routes):
        return f"Did you mean {request.method} {candidate}? "
    return ""


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        error = routing_error(request, exc)
        if error is None:
            error = (NotFound if exc.status_code == 404 else InvalidRequest)(str(exc.detail))
            error.status = exc.status_code
        allow = getattr(error, "allow", None)
        return error_response(error, {"Allow": allow} if allow else getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        # Starlette re-raises after this response and uvicorn then drops the connection: say so, or a
        # keep-alive client sends its next request into a closed socket.
        return error_response(APIError("internal server error"), {"Connection": "close"})
