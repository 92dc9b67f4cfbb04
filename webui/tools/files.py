"""Python tool files in user_data/tools/, in Text Generation WebUI's format, loaded as
they are: each file defines `tool`, an OpenAI function definition
(`{"type": "function", "function": {"name", "description", "parameters"}}`), and
`execute(arguments)`, which takes the arguments as a dict and returns a string or
anything JSON can write.

A tool file is code the owner put there, run in this process (as in TGW): it is
loaded when the tools are (re)read, never because of a request.  A call runs in a
worker thread; one that passes its time limit is abandoned and reported as timed out
(Python cannot stop a thread: a file whose code never returns keeps its thread, so the
limit protects the chat, not the machine; MCP servers run in their own process and
are stopped).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webui.chat.tools import ToolError, read_tools
from webui.paths import list_entries
from webui.tools.base import ToolOutcome, ToolSpec, as_text, clip

log = logging.getLogger(__name__)
MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class FileTool:
    spec: ToolSpec
    execute: Any  # the file's execute(arguments)

    def call(self, arguments: dict[str, Any], timeout: float, cancel: threading.Event | None = None) -> ToolOutcome:
        started = time.perf_counter()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = self.execute(arguments)
            except Exception as exc:  # the tool's own failure, reported to the model  # noqa: BLE001
                box["error"] = f"{type(exc).__name__}: {exc}"

        worker = threading.Thread(target=run, daemon=True, name=f"tool-{self.spec.name}")
        worker.start()
        deadline = started + timeout
        while worker.is_alive():
            if cancel is not None and cancel.is_set():
                return ToolOutcome("the call was stopped", True, time.perf_counter() - started)
            left = deadline - time.perf_counter()
            if left <= 0:
                return ToolOutcome(f"{self.spec.name} did not finish within {timeout:g} s", True,
                                   time.perf_counter() - started)
            worker.join(min(left, 0.05))
        seconds = time.perf_counter() - started
        if "error" in box:
            return ToolOutcome(clip(box["error"]), True, seconds)
        return ToolOutcome(clip(as_text(box.get("value"))), False, seconds)


def load_tool_files(folder: Path) -> tuple[list[FileTool], list[str]]:
    """The tools in `folder` (plain-named .py files), and a problem line per file that
    could not be used (named; the others still load)."""
    tools: list[FileTool] = []
    problems: list[str] = []
    for name, path in sorted(list_entries(folder, suffixes=(".py",)).items()):
        try:
            tools.append(load_tool_file(name, path))
        except ToolFileError as exc:
            problems.append(f"tool file {path.name}: {exc}")
    return tools, problems


class ToolFileError(Exception):
    pass


def load_tool_file(name: str, path: Path) -> FileTool:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ToolFileError(f"larger than {MAX_FILE_BYTES} bytes")
    module_name = f"webui_tool_file_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ToolFileError("cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the file's own error at import  # noqa: BLE001
        raise ToolFileError(f"failed to load: {type(exc).__name__}: {exc}") from None
    finally:
        sys.modules.pop(module_name, None)
    definition, execute = getattr(module, "tool", None), getattr(module, "execute", None)
    if not callable(execute):
        raise ToolFileError("defines no execute(arguments) function")
    try:
        (tool,) = read_tools([definition])
    except ToolError as exc:
        raise ToolFileError(f"its `tool` definition: {str(exc).removeprefix('tools[0]')}") from None
    return FileTool(ToolSpec(tool.name, tool.description, tool.parameters, f"file {path.name}"), execute)
