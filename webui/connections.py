"""Connection limits for the UI's and the API's HTTP servers (slow or many clients).

uvicorn closes an idle keep-alive connection, but not one whose request is still being
received: a client that sends half a request line and then nothing holds its socket, and
a file handle, for ever.  A few thousand of them (no key or password is needed: nothing
runs before the headers end) exhausted the process's file handles, and with them the API,
the UI and the log (docs/SECURITY.md, "Connections").  So each connection here has:

- a **header deadline**: a request's headers must be complete within `header_timeout`
  seconds of the connection opening, or of the previous response ending;
- a **body deadline**: while a request's body is being received, `body_timeout` seconds
  without a byte close it (not counted while the server itself has paused reading);
- a **per-client cap**: one client address holds at most `per_client` connections to one
  server (an IPv6 client counts by its /64, which one host usually has to itself);
  connections beyond it are answered 503 and closed;
- a **total cap** per process, from the file-handle limit, so that the listening sockets,
  model files and logs always find a handle.

Once a request's headers and body are in, the app has the connection: a reply that streams
for minutes is not cut.  Refusals, expiries and accept errors ("Too many open files") are
logged at most once per `LOG_EVERY` seconds each, with a count, never as one traceback per
event.  Implemented as a subclass of uvicorn's own HTTP protocol (h11 or httptools), made
per server by `guarded_protocol`; webui/quiet_server.py puts it in place.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import itertools
import logging
import resource
import threading
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

LOG_EVERY = 10.0  # seconds between two log lines of one kind
FD_RESERVE = 256  # file handles kept for everything but connections (model files, logs, pipes)
OUT_OF_HANDLES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    per_client: int = 100


def limits_from(settings: Any) -> ConnectionLimits:
    """The limits a Settings asks for (webui/settings.py)."""
    return ConnectionLimits(header_timeout=settings.header_timeout, body_timeout=settings.body_timeout,
                            per_client=settings.max_connections_per_client)


def default_total() -> int:
    """Connections the whole process may hold: its file-handle limit less a reserve."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(32, soft - max(FD_RESERVE, soft // 8))


class ThrottledLog:
    """One log line per kind per `every` seconds; the lines in between are counted and
    the count is told with the next line."""

    def __init__(self, logger: logging.Logger, every: float = LOG_EVERY):
        self.logger = logger
        self.every = every
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: Any) -> bool:
        """Log (True) or count (False) one occurrence of `kind`."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.every:
                self._held[kind] = self._held.get(kind, 0) + 1
                return False
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        if held:
            message += f" (and {held} more like it in the last {self.every:g} s)"
        self.logger.warning(message, *args)
        return True


THROTTLED = ThrottledLog(log)


class ConnectionTable:
    """Open connections, per (server, client) and in all; thread-safe (each server has its
    own thread and event loop)."""

    def __init__(self, total: int | None = None):
        self.total = default_total() if total is None else total
        self._lock = threading.Lock()
        self._open: dict[tuple[int, str], int] = {}
        self._all = 0

    def admit(self, server: int, client: str, per_client: int) -> str | None:
        """Count one more connection; None when admitted, else why not."""
        with self._lock:
            if self._all >= self.total:
                return f"the server holds {self._all} connections, its most"
            key = (server, client)
            if self._open.get(key, 0) >= per_client:
                return f"{client} holds {per_client} connections, the most one client may"
            self._open[key] = self._open.get(key, 0) + 1
            self._all += 1
            return None

    def release(self, server: int, client: str) -> None:
        with self._lock:
            key = (server, client)
            left = self._open.get(key, 0) - 1
            if left > 0:
                self._open[key] = left
            else:
                self._open.pop(key, None)
            self._all = max(0, self._all - 1)

    def count(self, server: int, client: str | None = None) -> int:
        with self._lock:
            if client is not None:
                return self._open.get((server, client), 0)
            return sum(n for (s, _), n in self._open.items() if s == server)


# One table per process: file handles are the process's, whichever server holds them.
TABLE = ConnectionTable()


def client_key(peer: Any) -> str:
    """Whom a connection is counted against: its IPv4 address, its IPv6 /64."""
    if not isinstance(peer, (tuple, list)) or not peer:
        return "(local)"
    host = str(peer[0])
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
         b"connection: close\r\nretry-after: 5\r\ncontent-length: 44\r\n\r\n"
         b"too many connections from this client; wait")
_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"connection: close\r\ncontent-length: 32\r\n\r\nthe request was not sent in time")


class _Guarded:
    """Mixed into a uvicorn HTTP protocol class (before it in the bases).  Relies on what
    both of uvicorn's protocols have: `transport`, `loop`, `flow`, `cycle` (the request
    being answered, with `more_body`, `response_started`, `response_complete`) and
    `on_response_complete`."""

    limits: ConnectionLimits = ConnectionLimits()
    table: ConnectionTable = TABLE
    server_id: int = 0

    _timer: Any = None
    _since: float = 0.0
    _idle: bool = False
    _client: str | None = None  # set once admitted

    def connection_made(self, transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        client = client_key(transport.get_extra_info("peername"))
        refused = self.table.admit(self.server_id, client, self.limits.per_client)
        if refused is not None:
            THROTTLED.warning("refused", "connection refused: %s", refused)
            transport.write(_BUSY)
            transport.close()
            return
        self._client = client
        self._wait_for_client(idle=False)

    def connection_lost(self, exc) -> None:
        self._cancel_timer()
        if self._client is not None:
            self.table.release(self.server_id, self._client)
            self._client = None
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._client is None:
            return  # refused: nothing it sends is read
        if self._idle:  # the first byte of the next request on a kept-alive connection
            self._idle = False
            self._since = self.loop.time()  # type: ignore[attr-defined]
        cycle = getattr(self, "cycle", None)
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            self._since = self.loop.time()  # type: ignore[attr-defined]  # the body moves
        super().data_received(data)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if self._client is not None and not self.transport.is_closing():  # type: ignore[attr-defined]
            self._wait_for_client(idle=True)

    def handle_websocket_upgrade(self, *args: Any, **kwargs: Any) -> None:
        # The connection becomes the WebSocket protocol's: it is no longer ours to time.
        self._cancel_timer()
        if self._client is not None:
            self.table.release(self.server_id, self._client)
            self._client = None
        super().handle_websocket_upgrade(*args, **kwargs)  # type: ignore[misc]

    # -- deadlines ---------------------------------------------------------------------
    def _wait_for_client(self, idle: bool) -> None:
        """From now on the client owes us the next request's headers."""
        self._idle = idle
        self._since = self.loop.time()  # type: ignore[attr-defined]
        self._arm(self.limits.header_timeout)

    def _arm(self, seconds: float) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(max(0.0, seconds), self._check)  # type: ignore[attr-defined]

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        transport = self.transport  # type: ignore[attr-defined]
        if self._client is None or transport is None or transport.is_closing():
            return
        now = self.loop.time()  # type: ignore[attr-defined]
        cycle = getattr(self, "cycle", None)
        if cycle is None or cycle.response_complete:
            limit, what = self.limits.header_timeout, "headers"
        elif cycle.more_body:
            limit, what = self.limits.body_timeout, "body"
            flow = getattr(self, "flow", None)
            if flow is not None and getattr(flow, "read_paused", False):
                self._since = now  # we stopped reading (the app is behind), not the client
        else:
            return  # the app has the request; on_response_complete starts the next wait
        if now - self._since < limit:
            self._arm(self._since + limit - now)
            return
        if what == "headers" and self._idle:
            transport.close()  # an idle kept-alive connection: nothing was asked, nothing to say
            return
        THROTTLED.warning(f"slow-{what}", "closed a connection from %s: its request's %s did not arrive "
                          "within %g s", self._client, what, limit)
        if cycle is None or cycle.response_complete or not cycle.response_started:
            transport.write(_TIMEOUT)
        transport.close()


def guarded_protocol(base: type, limits: ConnectionLimits, table: ConnectionTable = TABLE) -> type:
    """`base` (uvicorn's H11Protocol or HttpToolsProtocol) with the limits above, for one
    server: its connections are counted apart from other servers'."""
    return type(f"Guarded{base.__name__}", (_Guarded, base),
                {"limits": limits, "table": table, "server_id": next(_SERVER_IDS), "__module__": __name__})


_SERVER_IDS = itertools.count(1)


def handle_loop_exception(loop, context: dict) -> None:
    """An event loop's exception handler: accept errors for want of file handles (which
    asyncio reports on every retry, with a traceback) become one throttled line; anything
    else goes to the default handler."""
    exc = context.get("exception")
    if isinstance(exc, OSError) and exc.errno in OUT_OF_HANDLES:
        THROTTLED.warning("accept", "cannot accept connections: %s (the process is out of file handles; "
                          "connections are refused until some close)", exc.strerror or exc)
        return
    loop.default_exception_handler(context)


def pause_accepting_when_out_of_handles(loop: asyncio.AbstractEventLoop) -> None:
    """Make `loop` stop accepting for a second at the first accept that fails for want of
    file handles.  asyncio's selector loop (Python 3.11) goes on round its accept loop
    instead -- up to the listen backlog, 2,048 with uvicorn -- reporting the error and
    scheduling one more retry each time: thousands of tracebacks a second, and thousands of
    retries that each run the loop again (35 MB of log in 5 s, measured; round 2's N28 saw
    103 MB in 40 s).  Only a selector loop is changed; another kind (uvloop) is left as is."""
    needed = ("_accept_connection", "_accept_connection2", "_remove_reader", "_start_serving")
    if not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop) or not all(
            hasattr(loop, name) for name in needed):
        return

    def accept(protocol_factory, sock, sslcontext=None, server=None, backlog=100, *timeouts):
        for _ in range(backlog):
            try:
                conn, addr = sock.accept()
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # nobody else is waiting
            except OSError as exc:
                if exc.errno not in OUT_OF_HANDLES:
                    raise
                loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                             "exception": exc, "socket": sock})
                loop._remove_reader(sock.fileno())  # type: ignore[attr-defined]
                loop.call_later(1.0, loop._start_serving, protocol_factory, sock,  # type: ignore[attr-defined]
                                sslcontext, server, backlog, *timeouts)
                return  # one retry, in a second: not one per turn of this loop
            else:
                loop.create_task(loop._accept_connection2(  # type: ignore[attr-defined]
                    protocol_factory, conn, {"peername": addr}, sslcontext, server, *timeouts))

    loop._accept_connection = accept  # type: ignore[attr-defined]
