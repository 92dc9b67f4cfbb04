"""Errors in the API's two shapes: every AppError (webui/errors.py) becomes, with its
status, here and only here, OpenAI's `{"error": {"message", "type", "param", "code"}}`
or, on the Ollama-compatible routes (/api/..., webui/api/ollama.py), Ollama's
`{"error": "message"}`."""

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


def error_body(exc: AppError) -> dict[str, Any]:
    return {"error": {"message": exc.message, "type": exc.kind, "param": exc.param, "code": exc.code}}


def ollama_error_body(exc: AppError) -> dict[str, Any]:
    return {"error": exc.message}


def error_response(exc: AppError, path: str = "") -> JSONResponse:
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
