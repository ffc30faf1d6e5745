"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

Every refusal names the field (`param`) that caused it, so a client library can
show it. Handlers here turn FastAPI's validation errors (422 by default) into
400s, unknown routes into 404s, a full queue into 503 + Retry-After, and
anything unexpected into a logged 500 that leaks no internals.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    message: str = Field(description="What was wrong and how to fix it.")
    type: str = Field(description="Error class, e.g. invalid_request_error, authentication_error.")
    param: str | None = Field(None, description="The request field at fault (dotted path), if any.")
    code: str | None = Field(None, description="Machine-readable code, e.g. invalid_api_key, model_not_found.")


class ErrorResponse(BaseModel):
    """The body of every non-2xx response."""

    error: ErrorDetail = Field(description="What went wrong.")


class APIError(Exception):
    """Raised by endpoint code; rendered as an OpenAI error with `status`."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, type=self.type, param=self.param, code=self.code,
                              headers=self.headers)


def error_response(status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(message=message, type=type, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def invalid(param: str, message: str, code: str | None = None) -> APIError:
    """A 400 about one request field."""
    return APIError(400, message, param=param, code=code)


# OpenAI error types by HTTP status, for errors raised by FastAPI/Starlette themselves
_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


_MESSAGE_TAGS = {"system", "developer", "user", "assistant", "tool"}


def _loc_to_param(loc: Sequence[Any]) -> str | None:
    kept: list[Any] = []
    for p in loc:
        if p in ("body", "query", "path", "header"):
            continue
        if kept and isinstance(kept[-1], int) and p in _MESSAGE_TAGS:
            continue  # the discriminator tag of a message union: messages[0].user.content -> messages[0].content
        kept.append(p)
    parts = [str(p) for p in kept]
    # pydantic names union members (`str`, `list[...]`, function-after[...]); they are not fields
    parts = [p for p in parts if not (p.startswith(("function-", "list[", "tagged-union[")) or p in (
        "str", "int", "float", "bool", "dict", "list", "none"))]
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() else f".{p}"
    return out


def _error_param(e: Any) -> str | None:
    param = _loc_to_param(e.get("loc", ()))
    if e.get("type") in ("union_tag_invalid", "union_tag_not_found"):  # the tag field itself is at fault
        tag = str((e.get("ctx") or {}).get("discriminator", "")).strip("'\"")
        if tag:
            param = f"{param}.{tag}" if param else tag
    return param


def validation_message(errors: Sequence[Any]) -> tuple[str, str | None]:
    """One readable sentence for pydantic's error list, and the first field it names."""
    if not errors:
        return "invalid request", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        detail = ctx.get("error", "")
        return (f"the request body is not valid JSON ({detail}); send a JSON object with "
                "Content-Type: application/json", None)
    param = _error_param(first)
    msgs = []
    seen: set[str] = set()
    for e in errors[:5]:
        p = _error_param(e) or "body"
        text = f"{p}: {e.get('msg', 'invalid value')}"
        if text not in seen:
            seen.add(text)
            msgs.append(text)
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "invalid request: " + "; ".join(msgs) + more, param


async def _validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    message, param = validation_message(exc.errors())
    return error_response(400, message, param=param, code="invalid_value")


async def _http_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if status == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}; see GET /docs for the endpoints"
    elif status == 405:
        detail = f"method {request.method} is not allowed on {request.url.path}"
    return error_response(status, detail, type=_STATUS_TYPES.get(status, "invalid_request_error"),
                          headers=getattr(exc, "headers", None))


async def _api_error_handler(request: Request, exc: APIError) -> JSONResponse:
    return exc.response()


async def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal server error; the server log has the traceback", type="server_error",
                          code="internal_error")


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_handler)  # type: ignore[arg-type]
    app.add_exception_handler(APIError, _api_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_handler)


# documented on every endpoint so the OpenAPI schema (and schemathesis) know the error shape
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request (the `param` names the field)."},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key."},
    404: {"model": ErrorResponse, "description": "Unknown model."},
    413: {"model": ErrorResponse, "description": "Request body too large."},
    503: {"model": ErrorResponse, "description": "Queue full; retry after the Retry-After header's seconds."},
}
