"""MCP servers as tool sources, through the official SDK (`mcp.Client`): a stdio server
is started as a child process, a streamable HTTP one is connected to by URL.

One asyncio loop, in a daemon thread, holds every connection; the chat's threads reach
it through `McpHub.run` with a time limit.  A server is connected when its tools are
first listed, and kept.  What can go wrong stays inside the server's own entry:

- a stdio server starts with a minimal environment: the SDK passes on only HOME, PATH,
  SHELL, TERM, USER and LOGNAME, plus the `env` its mcp.json entry gives -- never this
  process's API keys or other secrets;
- a server that does not answer in time is disconnected (a stdio server's process is
  stopped), and the call reports the time-out; the next call connects afresh;
- a server that exits or cannot start gives a message naming it, with the last lines
  it wrote to stderr.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import re
import tempfile
import threading
import time
from typing import Any

from webui.tools.base import ToolFailure, ToolOutcome, ToolSpec, clip
from webui.tools.mcp_config import HttpServerConfig, ServerConfig

CONNECT_TIMEOUT = 20.0  # seconds to start a server and list its tools
STDERR_TAIL = 600  # characters of a failed server's stderr shown in its message
MAX_TOOLS_PER_SERVER = 128
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def function_name(name: str) -> str:
    """An MCP tool's name as an OpenAI function name (letters, digits, '_' and '-')."""
    return _BAD_NAME_CHARS.sub("_", name)[:64] or "tool"


class McpHub:
    """The loop thread that owns every MCP connection."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, daemon=True, name="mcp").start()
                self._loop = loop
            return self._loop

    def run(self, coroutine, timeout: float, cancel: threading.Event | None = None):
        """Run `coroutine` on the hub's loop; TimeoutError after `timeout` seconds
        (the coroutine is cancelled), CancelledError when `cancel` is set first."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop())
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                future.cancel()
                raise TimeoutError
            if cancel is not None and cancel.is_set():
                future.cancel()
                raise concurrent.futures.CancelledError
            try:
                return future.result(timeout=min(left, 0.05))
            except concurrent.futures.TimeoutError:
                continue

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)


class McpServer:
    """One configured server: its connection (made on first use) and its tools."""

    def __init__(self, name: str, config: ServerConfig, hub: McpHub):
        self.name = name
        self.config = config
        self.hub = hub
        self._client: Any = None
        self._closing: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stderr: Any = None
        self._lock = threading.Lock()  # one connect at a time
        self.originals: dict[str, str] = {}  # function name offered -> the server's tool name

    # -- on the hub's loop -------------------------------------------------------------
    def _transport(self):
        from mcp.client.stdio import StdioServerParameters, stdio_client

        config = self.config
        if isinstance(config, HttpServerConfig):
            return config.url  # the SDK connects to a URL over streamable HTTP
        # The SDK merges `env` over its minimal default environment (see the module's docstring).
        params = StdioServerParameters(command=config.command, args=config.args, env=config.env or None,
                                       cwd=config.cwd)
        self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        return stdio_client(params, errlog=self._stderr)

    async def _connect(self) -> list[Any]:
        from mcp import Client

        ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self._closing = asyncio.Event()

        async def hold() -> None:
            try:
                async with Client(self._transport(), mode="legacy") as client:
                    listed = await client.list_tools()
                    self._client = client
                    ready.set_result(listed.tools)
                    await self._closing.wait()
            except BaseException as exc:  # noqa: BLE001 -- reported through `ready`, or ends a dead connection
                if not ready.done():
                    ready.set_exception(exc if isinstance(exc, Exception) else ConnectionError(repr(exc)))
            finally:
                self._client = None

        self._task = asyncio.create_task(hold())
        try:
            return await ready
        except asyncio.CancelledError:
            await self._disconnect()
            raise

    async def _disconnect(self) -> None:
        task, self._task = self._task, None
        if self._closing is not None:
            self._closing.set()
        if task is not None:
            with contextlib.suppress(asyncio.TimeoutError, Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 5.0)
        self._client = None

    # -- from the chat's threads ----------------------------------------------------------
    def stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.flush()
            self._stderr.seek(0)
            text = self._stderr.read()
        except (OSError, ValueError):
            return ""
        text = text.strip()
        return text[-STDERR_TAIL:]

    def failure(self, what: str, exc: BaseException | None = None) -> ToolFailure:
        detail = f": {type(exc).__name__}: {exc}" if exc is not None and str(exc) else ""
        tail = self.stderr_tail()
        said = f"; it wrote: {tail}" if tail else ""
        return ToolFailure(f"MCP server '{self.name}' {what}{detail}{said}")

    def tools(self, timeout: float = CONNECT_TIMEOUT) -> list[ToolSpec]:
        """Connect if not connected, and list the server's tools (ToolFailure otherwise)."""
        with self._lock:
            if self._client is not None and self._task is not None and not self._task.done():
                listed = self.hub.run(self._client.list_tools(), timeout)
                return self._specs(listed.tools)
            try:
                return self._specs(self.hub.run(self._connect(), timeout))
            except TimeoutError:
                self.disconnect()
                raise self.failure(f"did not start and list its tools within {timeout:g} s") from None
            except ToolFailure:
                raise
            except Exception as exc:  # noqa: BLE001 -- whatever the SDK or the process raised, named
                self.disconnect()
                raise self.failure("could not be started or reached", _root(exc)) from None

    def _specs(self, tools: list[Any]) -> list[ToolSpec]:
        specs, originals = [], {}
        for tool in tools[:MAX_TOOLS_PER_SERVER]:
            schema = getattr(tool, "input_schema", None) or getattr(tool, "inputSchema", None) or {"type": "object"}
            name = function_name(tool.name)
            originals[name] = tool.name
            specs.append(ToolSpec(name, (tool.description or "")[:4000], json.dumps(without_titles(schema)),
                                  f"MCP server {self.name}"))
        self.originals = originals
        return specs

    def call(self, tool: str, arguments: dict[str, Any], timeout: float,
             cancel: threading.Event | None = None) -> ToolOutcome:
        started = time.perf_counter()
        if self._client is None:
            self.tools()
        client = self._client
        if client is None:
            raise self.failure("is not connected")
        tool = self.originals.get(tool, tool)
        try:
            result = self.hub.run(client.call_tool(tool, arguments), timeout, cancel)
        except TimeoutError:
            self.disconnect()  # a server that hangs is stopped; the next call starts it again
            return ToolOutcome(f"MCP server '{self.name}' did not answer {tool} within {timeout:g} s; "
                               "it was stopped", True, time.perf_counter() - started)
        except concurrent.futures.CancelledError:
            return ToolOutcome("the call was stopped", True, time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 -- the connection broke: the process exited, ...
            self.disconnect()
            failure = self.failure(f"failed while running {tool}", _root(exc))
            return ToolOutcome(failure.message, True, time.perf_counter() - started)
        return ToolOutcome(clip(result_text(result)), bool(getattr(result, "is_error", False)),
                           time.perf_counter() - started)

    def disconnect(self) -> None:
        if self._task is None:
            return
        with contextlib.suppress(Exception):
            self.hub.run(self._disconnect(), 10.0)


DATA_KEYS = frozenset({"default", "const", "enum", "examples"})  # values, not schemas
NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions"})  # name -> schema


def without_titles(schema: Any) -> Any:
    """A JSON schema without its `title` annotations: SDKs generate them from function
    and argument names ("addArguments", "A"), and in the prompt they cost a small
    model's context tokens and say nothing the names do not."""
    if isinstance(schema, list):
        return [without_titles(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in NAMED_SCHEMAS and isinstance(value, dict):
            out[key] = {name: without_titles(sub) for name, sub in value.items()}
        else:
            out[key] = value if key in DATA_KEYS else without_titles(value)
    return out


def _root(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (anyio wraps a task's failure in one)."""
    while getattr(exc, "exceptions", None):
        exc = exc.exceptions[0]
    return exc


def result_text(result: Any) -> str:
    """An MCP CallToolResult as text: its text parts; other parts named by their kind."""
    parts = []
    for item in getattr(result, "content", None) or []:
        kind = getattr(item, "type", "")
        if kind == "text":
            parts.append(item.text)
        else:
            parts.append(f"[{kind} content]")
    if not parts:
        structured = getattr(result, "structured_content", None)
        if structured is not None:
            return json.dumps(structured, ensure_ascii=False)
    return "\n".join(parts)
