"""Every tool source behind one interface: list the tools a user may use, call one.

Sources, in the order their names are claimed: tool files (user_data/tools/), the web
tools (when the owner turned them on), then each MCP server in user_data/mcp.json.
A name already taken gets its server's name in front (`server_tool`).  Nothing is
read, loaded or started until the tools are first asked for; `reload` reads the
files again (the owner changed them).

A call is checked against the user's access (webui/tools/access.py) before anything
runs, bounded in time (DEFAULT_TIMEOUT) and in output (webui/tools/base.py), and always
comes back as a ToolOutcome: a failure is an outcome with is_error set and a message
that names the tool, which the model reads as the result.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from webui.tools.access import ToolAccess
from webui.tools.base import DEFAULT_TIMEOUT, ToolFailure, ToolOutcome, ToolSpec, parse_arguments
from webui.tools.files import FileTool, load_tool_files
from webui.tools.mcp import McpHub, McpServer
from webui.tools.mcp_config import read_mcp_config

log = logging.getLogger(__name__)
TOOLS_FOLDER = "tools"


class ToolRegistry:
    def __init__(self, user_data: Path, owner: str | None = None, multi_user: bool = False,
                 web: Any = None, timeout: float = DEFAULT_TIMEOUT):
        self.user_data = user_data
        self.access = ToolAccess(user_data, owner, multi_user)
        self.web = web  # webui/tools/web.py's WebTools, or None (off)
        self.timeout = timeout
        self.hub = McpHub()
        self.problems: list[str] = []
        self._lock = threading.RLock()
        self._loaded = False
        self._files: list[FileTool] = []
        self._servers: dict[str, McpServer] = {}
        self._index: dict[str, tuple[ToolSpec, Any, str]] | None = None  # name -> (spec, source, its own name)

    def reload(self) -> list[str]:
        """Read the tool files and mcp.json again; returns the problems found."""
        with self._lock:
            for server in self._servers.values():
                server.disconnect()
            self._files, problems = load_tool_files(self.user_data / TOOLS_FOLDER)
            configs, more = read_mcp_config(self.user_data)
            self._servers = {name: McpServer(name, config, self.hub) for name, config in configs.items()}
            self.problems = problems + more
            self._index = None
            self._loaded = True
            for problem in self.problems:
                log.warning("%s", problem)
            return list(self.problems)

    def servers(self) -> list[str]:
        with self._lock:
            if not self._loaded:
                self.reload()
            return list(self._servers)

    def index(self) -> dict[str, tuple[ToolSpec, Any, str]]:
        """Every tool by the name the model calls it; MCP servers are connected here."""
        with self._lock:
            if not self._loaded:
                self.reload()
            if self._index is not None:
                return self._index
            index: dict[str, tuple[ToolSpec, Any, str]] = {}
            problems = [p for p in self.problems if not p.startswith("MCP server")]

            def claim(spec: ToolSpec, source: Any, prefix: str) -> None:
                name = spec.name if spec.name not in index else f"{prefix}_{spec.name}"[:64]
                if name in index:
                    problems.append(f"{spec.source}: a second tool named {spec.name!r} is left out")
                    return
                index[name] = (ToolSpec(name, spec.description, spec.parameters, spec.source), source, spec.name)

            for tool in self._files:
                claim(tool.spec, tool, "file")
            for spec in self.web.specs() if self.web is not None else ():
                claim(spec, self.web, "web")
            for server in self._servers.values():
                try:
                    specs = server.tools()
                except ToolFailure as exc:
                    problems.append(exc.message)
                    continue
                for spec in specs:
                    claim(spec, server, server.name)
            self.problems = problems
            self._index = index
            return index

    def available(self, user: str | None) -> list[ToolSpec]:
        """The tools `user` may use, in a stable order."""
        index = self.index()
        allowed = self.access.allowed(user, set(index))
        return [spec for name, (spec, _, _) in index.items() if name in allowed]

    def call(self, user: str | None, name: str, arguments: str, timeout: float | None = None,
             cancel: threading.Event | None = None) -> ToolOutcome:
        """Run `name` for `user` with `arguments` (the model's JSON text)."""
        started = time.perf_counter()
        index = self.index()
        if name not in index or name not in self.access.allowed(user, {name}):
            # Unknown and not allowed read alike: a user learns nothing of tools they may not use.
            return ToolOutcome(f"there is no tool named {name!r} available here", True, 0.0)
        try:
            values = parse_arguments(arguments)
        except ToolFailure as exc:
            return ToolOutcome(f"{name}: {exc.message}", True, time.perf_counter() - started)
        spec, source, own_name = index[name]
        limit = timeout if timeout is not None else self.timeout
        try:
            if isinstance(source, FileTool):
                return source.call(values, limit, cancel)
            if isinstance(source, McpServer):
                return source.call(own_name, values, limit, cancel)
            return source.call(own_name, values, limit, cancel)  # the web tools
        except ToolFailure as exc:
            return ToolOutcome(exc.message, True, time.perf_counter() - started)

    def close(self) -> None:
        with self._lock:
            for server in self._servers.values():
                server.disconnect()
        self.hub.close()
