"""One tool round trip in the chat: what running a tool adds beyond the model's own time.

    .venv/bin/python bench/bench_tools.py [--rounds 20] [--tokens 48]

A round trip is: the model writes a call (a forced call of `add`, constrained by its
grammar, on the demo model), the app parses and records it, runs the tool, records the
result, and the model starts its next reply.  The model's part is timed as the forced
reply itself (engine, demo model); the tool's part through the tool registry
(webui/tools/registry.py), as the chat calls it, for three sources of the same `add`:

- a Text Generation WebUI tool file, run in this process;
- an MCP server over stdio, written with the official SDK, already started;
- the same server's first call: starting its process, the handshake, listing tools.

Printed: each source's median milliseconds per call, and the ratio of tool time to the
model's time for the call (the overhead a tool adds to one step of a chat).  The
parse-and-record step (webui/chat/tool_turns.py) is timed too.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from common import PROMPT, bench_parser, load_model
from report import figure

from webui.chat.history import Conversation
from webui.chat.tool_turns import record_calls
from webui.chat.tools import ToolChoice, call_schema, read_tools
from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.generation.params import make_params
from webui.tools.registry import ToolRegistry

ADD = {"type": "function", "function": {"name": "add", "description": "Add two numbers", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                     "b": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["a", "b"], "additionalProperties": False}}}
TOOL_FILE = textwrap.dedent('''
    tool = {"type": "function", "function": {"name": "add_file", "description": "Add two numbers",
            "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}}

    def execute(arguments):
        return arguments["a"] + arguments["b"]
''')
SERVER = textwrap.dedent('''
    from mcp.server.mcpserver import MCPServer

    app = MCPServer("bench")

    @app.tool()
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    if __name__ == "__main__":
        app.run()
''')


def registry_in(folder: Path) -> ToolRegistry:
    (folder / "tools").mkdir(parents=True, exist_ok=True)
    (folder / "tools" / "add_file.py").write_text(TOOL_FILE)
    (folder / "server.py").write_text(SERVER)
    (folder / "mcp.json").write_text(json.dumps({"mcpServers": {"bench": {
        "command": sys.executable, "args": [str(folder / "server.py")]}}}))
    return ToolRegistry(folder)


def timed_calls(registry: ToolRegistry, name: str, rounds: int) -> list[float]:
    times = []
    for i in range(rounds):
        outcome = registry.call(None, name, json.dumps({"a": i, "b": 1}))
        assert not outcome.is_error and outcome.text == str(i + 1), outcome.text  # noqa: S101
        times.append(outcome.seconds)
    return times


def main() -> None:
    parser = bench_parser(__doc__, rounds=20)
    args = parser.parse_args()
    manager, loaded = load_model(args)
    engine = GenerationEngine(manager)
    tools = read_tools([ADD])
    schema = json.dumps(call_schema(tools, ToolChoice("named", "add"), parallel=False))

    model_times, record_times = [], []
    for seed in range(max(3, args.rounds // 4)):
        params = make_params({"json_schema": schema, "max_new_tokens": args.tokens, "seed": seed,
                              "temperature": 0.7})
        started = time.perf_counter()
        text = engine.generate(GenerationRequest(PROMPT, params)).text()
        model_times.append(time.perf_counter() - started)
        conversation = Conversation(id="bench")
        conversation.append("user", "add")
        reply = conversation.append("assistant", text)
        started = time.perf_counter()
        calls = record_calls(conversation, reply, text, tools)
        record_times.append(time.perf_counter() - started)
        assert calls, f"the forced reply was not a call: {text!r}"  # noqa: S101
    engine.close()
    model_ms = statistics.median(model_times) * 1000
    record_ms = statistics.median(record_times) * 1000
    print(f"model: a forced call, median {model_ms:.1f} ms ({len(model_times)} replies)")
    print(f"parse and record the call: median {record_ms:.3f} ms")

    with tempfile.TemporaryDirectory() as folder:
        registry = registry_in(Path(folder))
        started = time.perf_counter()
        first = registry.call(None, "add", '{"a": 1, "b": 2}')
        cold_ms = (time.perf_counter() - started) * 1000
        assert first.text == "3", first.text  # noqa: S101
        stdio_ms = statistics.median(timed_calls(registry, "add", args.rounds)) * 1000
        file_ms = statistics.median(timed_calls(registry, "add_file", args.rounds)) * 1000
        registry.close()
    for label, ms in (("tool file (in-process)", file_ms), ("MCP stdio, running", stdio_ms),
                      ("MCP stdio, first call (start, handshake, list)", cold_ms)):
        print(f"{label}: {ms:.2f} ms per call, {ms / model_ms:.2g}x the model's time for the call")
    figure("tool file, one call ÷ the model writing the call", f"{file_ms / model_ms:.2g}×",
           f"{file_ms:.2f} ms vs {model_ms:.0f} ms (demo model, forced call)")
    figure("MCP stdio (running), one call ÷ the model writing the call", f"{stdio_ms / model_ms:.2g}×",
           f"{stdio_ms:.2f} ms vs {model_ms:.0f} ms")
    figure("MCP stdio, first call (process start + handshake + tools/list) ÷ the model's call",
           f"{cold_ms / model_ms:.2g}×", f"{cold_ms:.0f} ms")
    figure("parse and record a call ÷ the model's call", f"{record_ms / model_ms:.2g}×", f"{record_ms:.3f} ms")


if __name__ == "__main__":
    main()
