"""Password checks for the UI, with repeated failures slowed down.

Gradio calls the guard for every login attempt.  Passwords are compared in constant
time.  Failures are counted per (client address, user name): after a few, each
further attempt from that address for that name waits (1 s, 2 s, 4 s ... up to a
cap) before it is answered.  So the guesser is slowed, and the account's owner, who
signs in from another address, is not locked out by someone else's guessing.
Attempts for one key are answered one at a time, and while one waits, further ones
for the same key are refused at once without being checked: guessing in parallel
gains nothing, and no queue of waiting attempts can build up.  The wait is an
asyncio sleep: other logins and the app go on.  The tables are bounded (old entries
are forgotten, and at most MAX_KEYS are kept).
"""

from __future__ import annotations

import asyncio
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
        self._passwords = dict(pairs)
        self.free_failures = free_failures
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self._sleep = sleep
        # (address, name) -> (count, time of the last), oldest first
        self._failures: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        self._busy: set[tuple[str, str]] = set()  # keys with an attempt being answered

    def delay(self, failures: int) -> float:
        """Seconds an attempt waits after `failures` failed ones."""
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
        if key in self._busy:
            return False  # one attempt per key at a time; the rest are not even checked
        self._busy.add(key)
        try:
            wait = self.delay(self._count(key))
            if wait:
                await self._sleep(wait)
            expected = self._passwords.get(username)
            ok = expected is not None and hmac.compare_digest(password.encode(), expected.encode())
            if ok:
                self._failures.pop(key, None)
            else:
                self._record_failure(key)
            return ok
        finally:
            self._busy.discard(key)

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
