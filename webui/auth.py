"""Password checks for the UI, with repeated failures slowed down.

Gradio calls the guard for every login attempt.  Passwords are compared in constant
time.  After a few failures for a user name, each further attempt for that name
waits (1 s, 2 s, 4 s ... up to a cap) before it is answered, and attempts for the
same name wait their turn, so guessing in parallel is no faster than guessing in
sequence.  The wait is an asyncio sleep: other users' logins and the app go on.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable, Iterable

UNKNOWN_USER = "(unknown user)"  # every unknown name shares one counter


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
        self._failures: dict[str, tuple[int, float]] = {}  # name -> (count, time of the last)
        self._turns: dict[str, asyncio.Lock] = {}

    def delay(self, failures: int) -> float:
        """Seconds an attempt waits after `failures` failed ones."""
        if failures < self.free_failures:
            return 0.0
        return min(self.max_delay, self.first_delay * 2 ** (failures - self.free_failures))

    def failures(self, username: str) -> int:
        count, last = self._failures.get(self._key(username), (0, 0.0))
        return count if time.monotonic() - last < self.forget_after else 0

    async def check(self, username: str, password: str) -> bool:
        """True for the right password.  Hand Gradio this bound method, not the guard:
        Gradio awaits only what inspect.iscoroutinefunction recognises, and a callable
        object's coroutine would be taken as a (truthy) answer."""
        key = self._key(username)
        async with self._turns.setdefault(key, asyncio.Lock()):
            wait = self.delay(self.failures(username))
            if wait:
                await self._sleep(wait)
            expected = self._passwords.get(username)
            ok = expected is not None and hmac.compare_digest(password.encode(), expected.encode())
            if ok:
                self._failures.pop(key, None)
            else:
                self._failures[key] = (self.failures(username) + 1, time.monotonic())
            return ok

    def _key(self, username: str) -> str:
        return username if username in self._passwords else UNKNOWN_USER
