"""uvicorn servers that do not wake ten times a second while idle.

uvicorn's main loop sleeps 0.1 s at a time, then looks whether it should exit and,
every tenth time, refreshes the Date header it sends: ten wake-ups a second for each
server (the UI's and the API's), about 0.1-0.2% of a core on the busy 2-core machine
of docs/PERFORMANCE.md, most of what an idle server still spent once Gradio's queue
stopped polling (webui/ui/quiet_queue.py).  Here the loop wakes once a second, for the
Date header, and at once when `should_exit` is set, from any thread.

The same servers put webui/connections.py's limits on every connection (deadlines for a
request's headers and body, caps per client and in all) and log accept errors throttled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import uvicorn

from webui.connections import (
    ConnectionLimits,
    guarded_protocol,
    handle_loop_exception,
    pause_accepting_when_out_of_handles,
)

# uvicorn refreshes the Date header when on_tick's counter is a multiple of this.
TICKS_PER_HEADER = 10
HEADER_SECONDS = 1.0


class QuietTicks:
    """Mixed into a uvicorn.Server (before it in the bases)."""

    _exit_loop: asyncio.AbstractEventLoop | None = None
    _exit_event: asyncio.Event | None = None

    @property
    def should_exit(self) -> bool:
        return self.__dict__.get("_should_exit", False)

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self.__dict__["_should_exit"] = value
        loop, event = self._exit_loop, self._exit_event
        if value and loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(event.set)

    async def main_loop(self) -> None:
        # Known before the first look at should_exit: a later setting wakes the wait below.
        self._exit_loop, self._exit_event = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):  # type: ignore[attr-defined]
            counter = (counter + TICKS_PER_HEADER) % (TICKS_PER_HEADER * 86_400)
            try:
                await asyncio.wait_for(self._exit_event.wait(), HEADER_SECONDS)
            except asyncio.TimeoutError:
                pass


class LimitedConnections:
    """Mixed into a uvicorn.Server (before it in the bases): its connections are
    webui/connections.py's guarded protocol, with `limits`."""

    limits: ConnectionLimits = ConnectionLimits()

    async def startup(self, sockets: Any = None) -> None:
        config = self.config  # type: ignore[attr-defined]  # loaded by now (uvicorn's _serve)
        config.http_protocol_class = guarded_protocol(config.http_protocol_class, self.limits)
        # "Too many open files" on accept: one pause and one throttled line, not a
        # traceback and a retry per turn of asyncio's accept loop.
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(handle_loop_exception)
        pause_accepting_when_out_of_handles(loop)
        await super().startup(sockets)  # type: ignore[misc]


class Server(QuietTicks, LimitedConnections, uvicorn.Server):
    """A uvicorn server for a thread of our own (the API's)."""

    def __init__(self, config: uvicorn.Config, limits: ConnectionLimits | None = None):
        super().__init__(config)
        if limits is not None:
            self.limits = limits


@functools.cache
def gradio_server_class(base: type, limits: ConnectionLimits = ConnectionLimits()) -> type:  # noqa: B008
    """`base` (Gradio's uvicorn.Server subclass) with quiet ticks and connection limits,
    made once per set of limits."""
    return type(base.__name__, (QuietTicks, LimitedConnections, base), {"__module__": __name__, "limits": limits})


@contextlib.contextmanager
def quiet_gradio_servers(limits: ConnectionLimits = ConnectionLimits()) -> Iterator[None]:  # noqa: B008
    """While inside, Gradio's launch() makes quiet servers with connection limits.
    Gradio builds its server inside launch(), from the `Server` of its http_server
    module; nothing else in this process launches Gradio meanwhile but our own start_ui."""
    try:
        from gradio import http_server
    except ImportError:
        yield
        return
    base: Any = getattr(http_server, "Server", None)
    if not (isinstance(base, type) and issubclass(base, uvicorn.Server)) or issubclass(base, QuietTicks):
        yield
        return
    http_server.Server = gradio_server_class(base, limits)
    try:
        yield
    finally:
        http_server.Server = base
