"""Password checks for the UI, with repeated failures slowed down.

Gradio calls the guard for every login attempt.  Passwords are compared in constant
time, first: the right password is accepted at once, whatever else is going on, so
nobody is locked out by someone else's guessing -- not even from the same address
(behind NAT or a reverse proxy, everyone shares one).  Failures are counted per (client
address, user name): after a few, each further wrong attempt from that address for
that name is answered only after a wait (1 s, 2 s, 4 s ... up to a cap), and the
wrong attempts for one key are answered one at a time, in order.  A guesser who sends
many attempts at once has each one checked (a right guess would get in), but hears
"wrong" only once per wait, so after a first burst, bounded by the connections one
address may hold (webui/connections.py), it can try about one password per wait.  The
wait is an asyncio sleep: other logins and the app go on.  The tables are bounded (old
entries are forgotten, and at most MAX_KEYS are kept).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar

from starlette.types import ASGIApp, Receive, Scope, Send

UNKNOWN_USER = "(unknown user)"  # every unknown name shares one counter (per address)
MAX_KEYS = 10_000

# The address of the client whose request is being handled.  Gradio calls the guard
# with a name and a password only; ClientAddress sets this for each request, and a
# context variable keeps concurrent requests apart.
CLIENT: ContextVar[str] = ContextVar("webui_login_client", default="(unknown address)")


class ClientAddress:
    """ASGI middleware: note the connecting peer's address (never a forwarded header,
    which the client writes itself) for LoginGuard."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        token = CLIENT.set(client[0] if client else "(unknown address)")
        try:
            await self.app(scope, receive, send)
        finally:
            CLIENT.reset(token)


class LoginGuard:
    def __init__(
        self, pairs: Iterable[tuple[str, str]], free_failures: int = 3, first_delay: float = 1.0,
        max_delay: float = 30.0, forget_after: float = 3600.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self._passwords = {name: _digest(password) for name, password in pairs}
        self.free_failures = free_failures
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self._sleep = sleep
        # (address, name) -> (count, time of the last), oldest first
        self._failures: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        # keys with wrong attempts waiting for their answer: (their line, how many wait).
        # An entry lives only while attempts wait, so the table is bounded by connections.
        self._lines: dict[tuple[str, str], list] = {}

    def delay(self, failures: int) -> float:
        """Seconds a wrong attempt waits after `failures` failed ones."""
        if failures < self.free_failures:
            return 0.0
        return min(self.max_delay, self.first_delay * 2 ** (failures - self.free_failures))

    def failures(self, username: str, address: str | None = None) -> int:
        return self._count(self._key(username, address))

    def _count(self, key: tuple[str, str]) -> int:
        count, last = self._failures.get(key, (0, 0.0))
        return count if time.monotonic() - last < self.forget_after else 0

    async def check(self, username: str, password: str) -> bool:
        """True for the right password.  Hand Gradio this bound method, not the guard:
        Gradio awaits only what inspect.iscoroutinefunction recognises, and a callable
        object's coroutine would be taken as a (truthy) answer."""
        key = self._key(username)
        expected = self._passwords.get(username)
        # Compared first, and always (an unknown name against a stand-in): the answer for
        # the right password never depends on anybody's failures.
        ok = hmac.compare_digest(_digest(password), expected or _UNKNOWN) and expected is not None
        if ok:
            if key not in self._lines:  # a guesser's attempt still waiting keeps its count
                self._failures.pop(key, None)
            return True
        line = self._lines.setdefault(key, [asyncio.Lock(), 0])
        line[1] += 1
        try:
            async with line[0]:  # wrong attempts for one key are answered one at a time
                wait = self.delay(self._count(key))
                if wait:
                    await self._sleep(wait)
                self._record_failure(key)
            return False
        finally:
            line[1] -= 1
            if not line[1]:
                self._lines.pop(key, None)

    def _record_failure(self, key: tuple[str, str]) -> None:
        count = self._count(key) + 1
        self._failures.pop(key, None)
        self._failures[key] = (count, time.monotonic())  # now the newest
        now = time.monotonic()
        while self._failures:
            oldest_key, (_, last) = next(iter(self._failures.items()))
            if len(self._failures) <= MAX_KEYS and now - last < self.forget_after:
                break
            del self._failures[oldest_key]

    def _key(self, username: str, address: str | None = None) -> tuple[str, str]:
        name = username if username in self._passwords else UNKNOWN_USER
        return (CLIENT.get() if address is None else address, name)


def _digest(password: str) -> bytes:
    """Passwords are compared as hashes: constant time whatever their lengths."""
    return hashlib.sha256(password.encode("utf-8", "surrogatepass")).digest()


_UNKNOWN = _digest("\x00 no such user")  # compared against when the name is unknown
