"""Errors in the API's two shapes: every AppError (webui/errors.py) becomes, with its
status, here and only here, OpenAI's `{"error": {"message", "type", "param", "code"}}`
or, on the Ollama-compatible routes (/api/..., webui/api/ollama.py), Ollama's
`{"error": "message"}`, and on Anthropic's Messages routes (/v1/messages, webui/api/anthropic.py)
Anthropic's `{"type": "error", "error": {"type", "message"}}`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from webui.errors import AppError


class APIError(AppError):
    """A refusal only the API makes (a field that exists only in OpenAI's request shape)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str | None = None):
        super().__init__(message, param=param, code=code, status=status)
        if kind is not None:
            self.kind = kind


OLLAMA_PREFIX = "/api/"


def is_ollama(path: str) -> bool:
    return path.startswith(OLLAMA_PREFIX)


ANTHROPIC_PREFIX = "/v1/messages"


def is_anthropic(path: str) -> bool:
    return path == ANTHROPIC_PREFIX or path.startswith(ANTHROPIC_PREFIX + "/")


# Anthropic's error types by HTTP status (its clients raise a typed exception per status).
ANTHROPIC_KINDS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 413: "request_too_large", 415: "invalid_request_error",
                   429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}


def anthropic_error_body(exc: AppError) -> dict[str, Any]:
    return anthropic_error(exc.status, exc.named_message)  # its shape has no field for the param


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    kind = ANTHROPIC_KINDS.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_body(exc: AppError) -> dict[str, Any]:
    return {"error": {"message": exc.message, "type": exc.kind, "param": exc.param, "code": exc.code}}


def ollama_error_body(exc: AppError) -> dict[str, Any]:
    return {"error": exc.named_message}  # Ollama's shape is the message alone: it names the field


def error_response(exc: AppError, path: str = "") -> JSONResponse:
    if is_anthropic(path):
        body = anthropic_error_body(exc)
    else:
        body = ollama_error_body(exc) if is_ollama(path) else error_body(exc)
    return JSONResponse(body, status_code=exc.status)


def install_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError):
        return error_response(exc, request.url.path)

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        message = f"{param}: {first['msg']}" if param else first["msg"]
        return error_response(APIError(400, message, param=param, code="invalid_value"), request.url.path)
