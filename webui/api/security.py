"""API keys, Host-header and body-size checks for the /v1 server."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from webui.api.errors import anthropic_error, is_anthropic, is_ollama

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_BODY_BYTES = 1 << 20  # a chat request is kilobytes; a megabyte is generous
UPLOADS = "/v1/files"  # the one route whose POST body is multipart/form-data (OpenAI's file upload)


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


# RFC 9110's Host: a name or IPv4 address, or an IPv6 address in brackets, then an
# optional port.  Nothing else: no userinfo ("evil.com@127.0.0.1"), no fragment
# ("localhost#.evil.com"), no port that is not a number ("127.0.0.1:abc").
_HOST = re.compile(r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[(?P<ip6>[0-9A-Fa-f:.]{2,45})\])"
                   r"(?::(?P<port>[0-9]{1,5}))?")


def host_name(host_header: str) -> str | None:
    """The host a Host header names, lower-cased; None unless the header is well formed."""
    match = _HOST.fullmatch(host_header)
    if match is None or (match["port"] is not None and not 0 < int(match["port"]) <= 65535):
        return None
    if match["ip6"] is not None:
        try:
            return str(ipaddress.IPv6Address(match["ip6"]))
        except ValueError:
            return None
    return match["name"].lower()


class GuardMiddleware:
    """Refuse, before any route runs: a Host header that is malformed, or not a loopback
    name on a loopback-bound server (DNS rebinding; docs/SECURITY.md), and bodies over the
    size cap (docs/SECURITY.md).  Used by the API and the UI.

    `max_body` caps every request; `large_bodies` raises the cap for paths starting
    with a prefix (the UI's upload route).  A body without Content-Length (chunked) is
    read here, up to the cap, before the app sees it: refused with 413 once it passes
    the cap, rather than failing inside the app's body parser as a 400.
    """

    def __init__(self, app: ASGIApp, loopback_only: bool, max_body: int | None = MAX_BODY_BYTES,
                 large_bodies: Mapping[str, int] | None = None):
        self.app = app
        self.loopback_only = loopback_only
        self.max_body = max_body
        self.large_bodies = dict(large_bodies or {})

    def limit(self, path: str) -> int | None:
        return next((cap for prefix, cap in self.large_bodies.items() if path.startswith(prefix)), self.max_body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        hosts = [v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"host"]
        name = host_name(hosts[0]) if len(hosts) == 1 else None
        if self.loopback_only and name not in LOOPBACK_NAMES:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await _refuse(send, 403, "host not allowed", "invalid_request_error", "forbidden_host", scope)
            return
        cap = self.limit(scope.get("path", ""))
        if scope["type"] != "http" or cap is None:
            await self.app(scope, receive, send)
            return
        lengths = [v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"content-length"]
        if lengths:
            # The server holds a body to its Content-Length, so checking the header is enough.
            if len(lengths) > 1 or not lengths[0].isdigit() or int(lengths[0]) > cap:
                await _too_large(send, cap, scope)
                return
            await self.app(scope, receive, send)
            return
        body, complete = await _read_body(receive, cap)
        if not complete:
            await _too_large(send, cap, scope)
            return
        await self.app(scope, _replay(body, receive), send)


class KeyMiddleware:
    """API keys: `/v1/internal/` needs the admin key, everything else the API key or the
    admin key (when one is set).  POST bodies must be JSON, which a cross-site form cannot send without
    a CORS preflight we never grant; the one exception, a file upload (multipart), is
    refused when a browser says another site's page sent it.  A plain ASGI middleware, not Starlette's
    BaseHTTPMiddleware, which would sit between the routes and the client's
    disconnect message."""

    def __init__(self, app: ASGIApp, api_key: str | None, admin_key: str | None,
                 allowed_origins: tuple[str, ...] | list[str] = ()):
        self.app = app
        self.api_key = api_key
        self.admin_key = admin_key
        self.allowed_origins = frozenset(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["path"].startswith("/v1/internal/"):
            if not self.admin_key or not key_matches(presented_key(headers), self.admin_key):
                await _refuse(send, 401, "a valid admin key is required", "authentication_error", "invalid_api_key",
                              scope)
                return
        elif self.api_key and not key_matches(presented_key(headers), self.api_key) and not (
                # The admin key opens every route: its holder is the owner (whose requests may load models).
                self.admin_key and key_matches(presented_key(headers), self.admin_key)):
            await _refuse(send, 401, "a valid API key is required", "authentication_error", "invalid_api_key", scope)
            return
        if scope["method"] == "POST" and scope["path"] == UPLOADS and headers.get("content-type", "").startswith(
                "multipart/form-data"):
            # A cross-site form CAN post multipart without a preflight, so an upload that a
            # browser sends from another site's page (its Origin names that site) is refused.
            origin = headers.get("origin")
            if origin is not None and origin not in self.allowed_origins:
                await _refuse(send, 403, "uploads from another site's page are refused", "invalid_request_error",
                              "forbidden_origin", scope)
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST" and not headers.get("content-type", "").startswith("application/json"):
            await _refuse(send, 415, "send the request body as application/json", "invalid_request_error", None,
                          scope)
            return
        await self.app(scope, receive, send)


async def _read_body(receive: Receive, cap: int) -> tuple[bytes, bool]:
    """The whole body, or (what was read, False) as soon as it passes `cap` or the client leaves."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            return b"", False
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body read already, then the client's later messages."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _too_large(send: Send, cap: int, scope: Scope) -> None:
    await _refuse(send, 413, f"request body over {cap} bytes", "invalid_request_error", "body_too_large", scope)


async def _refuse(send: Send, status: int, message: str, kind: str, code: str | None, scope: Scope) -> None:
    # Ollama's and Anthropic's routes answer in their shapes (webui/api/errors.py), the rest in OpenAI's.
    path = scope.get("path", "")
    if is_anthropic(path):
        payload: dict = anthropic_error(status, message)
    elif is_ollama(path):
        payload = {"error": message}
    else:
        payload = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
