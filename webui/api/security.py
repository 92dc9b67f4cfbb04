"""API keys, Host-header and body-size checks for the /v1 server."""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_BODY_BYTES = 1 << 20  # a chat request is kilobytes; a megabyte is generous


def key_matches(given: str | None, expected: str) -> bool:
    """Constant time, also for keys of another length: both sides are hashed first."""
    if given is None:
        return False
    a = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
    b = hashlib.sha256(expected.encode("utf-8")).digest()
    return hmac.compare_digest(a, b)


def presented_key(headers) -> str | None:
    """The key from `Authorization: Bearer ...` or `x-api-key`, whichever is present."""
    auth = headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("x-api-key")


def host_name(host_header: str) -> str:
    return (urlsplit(f"//{host_header}").hostname or "").lower()


class GuardMiddleware:
    """Refuse, before any route runs: a non-loopback Host on a loopback-bound server
    (DNS rebinding, HOSTILE.md 13) and bodies over the size cap (HOSTILE.md 11-15;
    `max_body=None` leaves the size to the app).  Used by the API and the UI."""

    def __init__(self, app: ASGIApp, loopback_only: bool, max_body: int | None = MAX_BODY_BYTES):
        self.app = app
        self.loopback_only = loopback_only
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.loopback_only and host_name(headers.get("host", "")) not in LOOPBACK_NAMES:
            await _refuse(send, 403, "host not allowed", "invalid_request_error", "forbidden_host")
            return
        if self.max_body is None:
            await self.app(scope, receive, send)
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _refuse(send, 413, f"request body over {self.max_body} bytes", "invalid_request_error",
                          "body_too_large")
            return
        received = 0

        async def capped_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, capped_receive, send)
        except BodyTooLarge:
            await _refuse(send, 413, f"request body over {self.max_body} bytes", "invalid_request_error",
                          "body_too_large")


class BodyTooLarge(Exception):
    pass


async def _refuse(send: Send, status: int, message: str, kind: str, code: str) -> None:
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
