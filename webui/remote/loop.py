"""One event loop thread for every remote engine's requests.

Why not a thread per request: a thread blocked reading a socket cannot be woken by
another thread closing that socket (on Linux the read goes on until data or a timeout
comes), so Stop would reach the engine only with its next token, or never while it is
prefilling.  An asyncio task blocked on the same read is cancelled at once, and its
`async with` closes the connection, so the engine sees the disconnect immediately.
The loop starts with the first remote request: no remote engine, no thread, no socket.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any


class LoopThread:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        """Run `coroutine` on the loop; cancelling the returned future cancels it."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, daemon=True, name="remote-engines").start()
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coroutine, loop)

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float) -> Any:
        """Run `coroutine` on the loop and wait for its result (from any other thread)."""
        future = self.submit(coroutine)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise
