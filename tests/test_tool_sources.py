"""Tool sources behind the registry: MCP servers written here with the official SDK
(stdio and streamable HTTP), Text Generation WebUI tool files, time-outs, a crashing
server, output limits, a minimal environment for stdio servers, and per-user access."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import free_port, wait_for
from webui.tools.access import ToolAccess
from webui.tools.base import MAX_OUTPUT_CHARS
from webui.tools.mcp_config import read_mcp_config
from webui.tools.registry import ToolRegistry

SERVER = textwrap.dedent('''
    import os, sys, time
    from mcp.server.mcpserver import MCPServer

    app = MCPServer("test-tools")

    @app.tool()
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @app.tool()
    def secret() -> str:
        """What this process sees of the parent's secret."""
        return os.environ.get("WEBUI_TEST_SECRET", "unset") + "|" + os.environ.get("GIVEN", "")

    @app.tool()
    def hang() -> str:
        """Never answers in time."""
        time.sleep(120)
        return "late"

    @app.tool(name="big.output")
    def big() -> str:
        """A result larger than the limit."""
        return "x" * 100_000

    if __name__ == "__main__":
        if len(sys.argv) > 1:
            app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
        else:
            app.run()
''')

DICE = textwrap.dedent('''
    import json, pathlib
    tool = {
        "type": "function",
        "function": {
            "name": "roll_dice",
            "description": "Roll dice.",
            "parameters": {"type": "object", "properties": {"count": {"type": "integer"}, "sides": {"type": "integer"}}},
        },
    }

    def execute(arguments):
        pathlib.Path(__file__).with_suffix(".ran").write_text(json.dumps(arguments))
        count, sides = arguments.get("count", 1), arguments.get("sides", 6)
        return {"rolls": [sides] * count, "total": sides * count}
''')


@pytest.fixture()
def user_data(tmp_path):
    (tmp_path / "server.py").write_text(SERVER)
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "roll_dice.py").write_text(DICE)
    (tmp_path / "tools" / "broken.py").write_text("tool = {'type': 'function'}\ndef execute(a):\n    return 1\n")
    (tmp_path / "tools" / "fails.py").write_text(textwrap.dedent('''
        tool = {"type": "function", "function": {"name": "fails", "parameters": {"type": "object"}}}
        def execute(arguments):
            raise RuntimeError("the disk is on fire")
    '''))
    return tmp_path


def write_config(user_data, servers):
    (user_data / "mcp.json").write_text(json.dumps({"mcpServers": servers}))


@pytest.fixture()
def registry(user_data, monkeypatch):
    monkeypatch.setenv("WEBUI_TEST_SECRET", "sk-do-not-leak")
    write_config(user_data, {
        "local": {"command": sys.executable, "args": [str(user_data / "server.py")], "env": {"GIVEN": "ok"}},
        "crashes": {"command": sys.executable, "args": ["-c", "import sys; sys.stderr.write('boom: no config'); "
                                                          "sys.exit(3)"]},
    })
    tools = ToolRegistry(user_data, timeout=20)
    yield tools
    tools.close()


def test_mcp_stdio_and_tool_files_list_and_run(registry, user_data):
    names = {spec.name: spec for spec in registry.available(None)}
    assert {"add", "secret", "hang", "big_output", "roll_dice", "fails"} <= set(names)
    assert names["add"].source == "MCP server local" and names["roll_dice"].source == "file roll_dice.py"
    assert json.loads(names["add"].parameters)["required"] == ["a", "b"]
    outcome = registry.call(None, "add", '{"a": 2, "b": 3}')
    assert (outcome.text, outcome.is_error) == ("5", False) and outcome.seconds > 0
    # A TGW tool file loads as it is, and its dict result comes back as JSON.
    dice = registry.call(None, "roll_dice", '{"count": 2, "sides": 6}')
    assert json.loads(dice.text) == {"rolls": [6, 6], "total": 12} and not dice.is_error
    failed = registry.call(None, "fails", "{}")
    assert failed.is_error and "RuntimeError: the disk is on fire" in failed.text
    # Each broken source is named; the rest still load.
    problems = "\n".join(registry.problems)
    assert "tool file broken.py" in problems
    assert "MCP server 'crashes'" in problems and "boom: no config" in problems
    bad = registry.call(None, "add", "{not json")
    assert bad.is_error and "not valid JSON" in bad.text


def test_a_stdio_server_gets_a_minimal_environment(registry):
    outcome = registry.call(None, "secret", "{}")
    assert outcome.text == "unset|ok"  # our secret stays here; the entry's own env is given


def test_a_hanging_server_is_timed_out_and_restarted(registry):
    started = time.monotonic()
    outcome = registry.call(None, "hang", "{}", timeout=1.5)
    assert outcome.is_error and "did not answer hang within 1.5 s" in outcome.text
    assert time.monotonic() - started < 15
    again = registry.call(None, "add", '{"a": 1, "b": 1}')  # the next call starts the server afresh
    assert again.text == "2" and not again.is_error


def test_output_is_clipped_and_names_are_made_callable(registry):
    outcome = registry.call(None, "big_output", "{}")
    assert len(outcome.text) < MAX_OUTPUT_CHARS + 100 and "more characters cut" in outcome.text


def test_a_crashing_server_gives_a_clear_message(user_data):
    write_config(user_data, {"crashes": {"command": sys.executable, "args": [
        "-c", "import sys; sys.stderr.write('fatal: cannot open the database'); sys.exit(2)"]}})
    tools = ToolRegistry(user_data)
    try:
        assert [s.name for s in tools.available(None) if s.source.startswith("MCP")] == []
        (problem,) = [p for p in tools.problems if p.startswith("MCP server")]
        assert problem.startswith("MCP server 'crashes' could not be started") and "cannot open the database" in problem
        gone = tools.call(None, "anything", "{}")
        assert gone.is_error and "no tool named 'anything'" in gone.text
    finally:
        tools.close()


def test_a_streamable_http_server(user_data):
    port = free_port()
    server = subprocess.Popen([sys.executable, str(user_data / "server.py"), str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import socket

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        assert wait_for(listening, 30)
        write_config(user_data, {"web": {"url": f"http://127.0.0.1:{port}/mcp"}})
        tools = ToolRegistry(user_data)
        try:
            assert tools.call(None, "add", '{"a": 20, "b": 22}').text == "42"
        finally:
            tools.close()
    finally:
        server.terminate()
        server.wait(10)


def test_a_user_not_allowed_a_tool_cannot_trigger_it(user_data):
    (user_data / "mcp.json").unlink(missing_ok=True)
    tools = ToolRegistry(user_data, owner="owner", multi_user=True)
    marker = user_data / "tools" / "roll_dice.ran"
    refused = tools.call("bob", "roll_dice", '{"count": 1}')
    assert refused.is_error and "no tool named 'roll_dice'" in refused.text and not marker.exists()
    assert [s.name for s in tools.available("bob")] == []
    assert tools.call("owner", "roll_dice", '{"count": 1}').is_error is False and marker.exists()
    marker.unlink()
    tools.access.set_allowed("bob", ["roll_dice"])
    assert [s.name for s in tools.available("bob")] == ["roll_dice"]
    assert not tools.call("bob", "roll_dice", "{}").is_error and marker.exists()
    assert tools.call("carol", "roll_dice", "{}").is_error  # another user still has none
    assert ToolAccess(user_data, "owner", True).allowed("bob", {"roll_dice", "fails"}) == {"roll_dice"}


@pytest.mark.parametrize("content, problem", [
    ("[1, 2]", "expected"), ("{", "cannot be read as JSON"),
    ('{"mcpServers": {"../x": {"command": "a"}}}', "plain name"),
    ('{"mcpServers": {"a": {"command": "a", "url": "http://x"}}}', "either a command"),
    ('{"mcpServers": {"a": {"url": "file:///etc/passwd"}}}', "url"),
    ('{"mcpServers": {"a": {"command": "a", "args": "not a list"}}}', "args"),
])
def test_broken_mcp_config_entries_are_named(tmp_path, content, problem):
    (tmp_path / "mcp.json").write_text(content)
    servers, problems = read_mcp_config(tmp_path)
    assert servers == {} and len(problems) == 1 and problem in problems[0]


def test_disabled_entries_and_no_file(tmp_path):
    assert read_mcp_config(tmp_path) == ({}, [])
    (tmp_path / "mcp.json").write_text(json.dumps({"mcpServers": {
        "off": {"command": "x", "disabled": True}, "on": {"command": "y", "args": ["1"]}}}))
    servers, problems = read_mcp_config(tmp_path)
    assert list(servers) == ["on"] and problems == [] and os.fspath(servers["on"].command) == "y"


def test_stop_cancels_a_running_call(registry, user_data):
    import threading

    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    outcome = registry.call(None, "hang", "{}", timeout=60, cancel=stop)
    assert outcome.is_error and outcome.text == "the call was stopped"
    assert time.monotonic() - started < 20  # not the hang's 120 s, nor the 60 s limit
