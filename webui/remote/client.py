"""An OpenAI-compatible engine over HTTP: list its models, stream a completion.

One pooled httpx.AsyncClient per engine, used only on the remote-engine loop
(webui/remote/loop.py).  The engine's key is read from the environment variable the
operator named and sent as a Bearer header; it is never logged, and any text that
comes back from the engine is scrubbed of it before it can reach a message, because
a broken or hostile engine might echo the request's headers.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx

from webui.generation.request import GenerationError
from webui.remote.config import RemoteEngineConfig

# An error body longer than this is cut: it is shown to the user, and engines can be chatty.
MAX_ERROR_CHARS = 300
MAX_LINE_CHARS = 1 << 20
# Caps applied while reading, never after: a hostile engine's endless line or endless
# model list must cost at most this much memory, however fast it sends.
MAX_LINE_BYTES = 4 * MAX_LINE_CHARS  # a UTF-8 character is at most 4 bytes
MAX_LIST_BYTES = 8 << 20  # an OpenAI model list; ~150 bytes per model in vLLM's listing
MAX_MODELS = 10_000
MAX_ERROR_BYTES = 64 << 10  # an error body is only ever shown cut to MAX_ERROR_CHARS


class RemoteError(GenerationError):
    """A remote engine is down, slow, refused the request or answered nonsense; the
    message names the engine and says which, and never holds its key."""

    status, code = 502, "remote_engine_error"


class RemoteClient:
    def __init__(self, config: RemoteEngineConfig):
        self.config = config
        self._key = config.api_key()
        self._http: httpx.AsyncClient | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def key_missing(self) -> bool:
        """An environment variable was named but is not set (said at start-up, by name)."""
        return bool(self.config.api_key_env) and not self._key

    def scrub(self, text: str) -> str:
        return text.replace(self._key, "[engine key]") if self._key else text

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:  # made on the loop thread, the only one that uses it
            config = self.config
            self._http = httpx.AsyncClient(
                base_url=config.url + "/",
                # identity: a compressed body could expand far past the caps within one chunk
                headers={"accept-encoding": "identity",
                         **({"authorization": f"Bearer {self._key}"} if self._key else {})},
                timeout=httpx.Timeout(config.timeout, connect=min(config.timeout, 10.0)),
                limits=httpx.Limits(max_connections=config.max_concurrent + 4,
                                    max_keepalive_connections=config.max_concurrent),
                verify=tls_verification(config),
                # Only the configured host is contacted: no proxy or .netrc from the environment.
                trust_env=False,
                follow_redirects=False,
            )
        return self._http

    async def list_models(self) -> list[str]:
        """The ids of the models the engine serves (GET {base}/models)."""
        try:
            async with self._client().stream("GET", "models") as response:
                if response.status_code != 200:
                    raise RemoteError(f"remote engine {self.name} refused to list its models "
                                      f"(HTTP {response.status_code}): {self._error_text(await _error_body(response))}")
                body = await _within(response, MAX_LIST_BYTES)
                if body is None:
                    raise RemoteError(f"remote engine {self.name} sent a model list over {MAX_LIST_BYTES >> 20} MiB; "
                                      "it is not listed")
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        try:
            data = json.loads(body)["data"]
            if not isinstance(data, list):
                raise TypeError
            if len(data) > MAX_MODELS:
                raise RemoteError(f"remote engine {self.name} listed {len(data):,} models (at most {MAX_MODELS:,} "
                                  "are taken); it is not listed")
            names = [entry["id"] for entry in data]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise RemoteError(f"remote engine {self.name} answered /models with something that is not "
                              "an OpenAI model list") from None
        if not all(isinstance(name, str) and 0 < len(name) <= 256 for name in names):
            raise RemoteError(f"remote engine {self.name} listed a model id that is not a short string")
        return names

    async def stream(self, path: str, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST a streaming request and yield each server-sent event's JSON.

        Closing this generator (or cancelling the task reading it) closes the response,
        and with it the connection: the engine sees the client leave and stops.
        """
        try:
            async with self._client().stream("POST", path, json={**payload, "stream": True}) as response:
                if response.status_code != 200:
                    body = await _error_body(response)
                    raise RemoteError(f"remote engine {self.name} refused the request "
                                      f"(HTTP {response.status_code}): {self._error_text(body)}")
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    raise RemoteError(f"remote engine {self.name} did not answer with a stream of events "
                                      f"(content-type {response.headers.get('content-type', 'none')!r})")
                async for line in self._lines(response):
                    event = self._event(line)
                    if event is _DONE:
                        return
                    if event is not None:
                        yield event
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        raise RemoteError(f"remote engine {self.name} ended the stream without finishing the reply")

    async def _lines(self, response: httpx.Response) -> AsyncIterator[str]:
        """The response's lines, split here rather than by httpx: its aiter_lines keeps
        a line until its end arrives, so an endless line grew memory without bound
        (330 MB/s) before MAX_LINE_CHARS could be checked.  Here a line is refused as
        soon as the part held passes MAX_LINE_BYTES."""
        pending = bytearray()
        async for chunk in response.aiter_bytes():
            if b"\n" in chunk:  # only then is the held part split (no re-scan per chunk)
                *whole, rest = (bytes(pending) + chunk).split(b"\n")
                for line in whole:
                    yield line.removesuffix(b"\r").decode("utf-8", "replace")
                pending = bytearray(rest)
            else:
                pending += chunk
            if len(pending) > MAX_LINE_BYTES:
                raise RemoteError(f"remote engine {self.name} sent an event over {MAX_LINE_CHARS} characters")
        if pending:
            yield pending.removesuffix(b"\r").decode("utf-8", "replace")

    def _event(self, line: str) -> Any:
        if len(line) > MAX_LINE_CHARS:
            raise RemoteError(f"remote engine {self.name} sent an event over {MAX_LINE_CHARS} characters")
        if not line.startswith("data:"):
            return None  # comments, event names, keep-alives and blank separators
        data = line[5:].strip()
        if data == "[DONE]":
            return _DONE
        try:
            event = json.loads(data)
        except ValueError:
            raise RemoteError(f"remote engine {self.name} sent an event that is not JSON") from None
        if not isinstance(event, dict):
            raise RemoteError(f"remote engine {self.name} sent an event that is not a JSON object")
        if "error" in event:
            raise RemoteError(f"remote engine {self.name} failed: {self._error_text(json.dumps(event).encode())}")
        if not isinstance(event.get("choices"), list):
            raise RemoteError(f"remote engine {self.name} sent an event without choices")
        return event

    def _error_text(self, body: bytes) -> str:
        text = body.decode("utf-8", "replace")
        try:
            error = json.loads(text).get("error")
            text = error.get("message", text) if isinstance(error, dict) else str(error or text)
        except (ValueError, AttributeError):
            pass
        text = self.scrub(" ".join(text.split()))
        return text[:MAX_ERROR_CHARS] + ("…" if len(text) > MAX_ERROR_CHARS else "") or "(no message)"

    def _transport_error(self, exc: httpx.HTTPError) -> RemoteError:
        name, timeout = self.name, self.config.timeout
        if isinstance(exc, httpx.ConnectTimeout):
            return RemoteError(f"remote engine {name} did not accept a connection within {min(timeout, 10.0):g} s")
        if isinstance(exc, httpx.ConnectError) and _caused_by(exc, ssl.SSLCertVerificationError):
            return RemoteError(f"remote engine {name}'s TLS certificate was not accepted (not signed by a CA "
                               "this server trusts, or not for this host name); give its CA as ca_bundle "
                               "in the engine's settings")
        if isinstance(exc, httpx.ConnectError):
            return RemoteError(f"remote engine {name} is not reachable at {self.config.url} (is it running?)")
        if isinstance(exc, httpx.TimeoutException):
            return RemoteError(f"remote engine {name} sent nothing for {timeout:g} s; the request was given up")
        if isinstance(exc, httpx.RemoteProtocolError):
            return RemoteError(f"remote engine {name} broke off the connection or spoke something other than HTTP")
        return RemoteError(f"remote engine {name} failed: {exc.__class__.__name__}")

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()


async def _within(response: httpx.Response, limit: int) -> bytes | None:
    """The body, or None as soon as it passes `limit` bytes (reading stops there)."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def _error_body(response: httpx.Response) -> bytes:
    """The start of an error body: it is shown cut to MAX_ERROR_CHARS, so more is never read."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= MAX_ERROR_BYTES:
            break
    return bytes(body[:MAX_ERROR_BYTES])


def tls_verification(config: RemoteEngineConfig) -> ssl.SSLContext | bool:
    """The system's CAs, plus the engine's own CA file when one is configured; off only
    when the operator said so (verify_tls: false)."""
    if not config.verify_tls:
        return False
    context = ssl.create_default_context()
    if config.ca_bundle:
        try:
            context.load_verify_locations(cafile=config.ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise RemoteError(f"remote engine {config.name}: its ca_bundle could not be read "
                              f"({exc.__class__.__name__})") from None
    return context


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen = 0
    while exc is not None and seen < 10:  # bounded: a cause chain could loop
        if isinstance(exc, kind):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


_DONE = object()
