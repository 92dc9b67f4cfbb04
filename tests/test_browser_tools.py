"""Tools in the chat, in a real browser: an MCP stdio server written here with the
official SDK; a chat whose tool_choice names its tool calls it (the grammar makes even
the tiny model write the call), the call waits in a collapsible block with Approve and
Deny, Approve runs it and shows the result, and the reply goes on from it; Deny runs
nothing and tells the model no."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from tests.test_browser import browser, open_page, wait_until  # noqa: F401 -- the shared Chromium fixture
from webui.chat.tool_turns import DENIED

SERVER = textwrap.dedent('''
    import pathlib, sys
    from typing import Annotated
    from pydantic import Field
    from mcp.server.mcpserver import MCPServer

    app = MCPServer("calc")
    RAN = pathlib.Path(sys.argv[1])

    @app.tool()
    def add(a: Annotated[int, Field(ge=0, le=9)], b: Annotated[int, Field(ge=0, le=9)]) -> int:
        """Add."""
        RAN.write_text(f"{a}+{b}")
        return a + b

    if __name__ == "__main__":
        app.run()
''')


@pytest.fixture()
def calc(runtime, tmp_path):
    """The MCP server in user_data/mcp.json for this test, gone afterwards."""
    from webui.generation.params import make_params

    user_data = runtime.settings.user_data_dir
    (tmp_path / "calc.py").write_text(SERVER)
    ran = tmp_path / "ran.txt"
    (user_data / "mcp.json").write_text(json.dumps({"mcpServers": {"calc": {
        "command": sys.executable, "args": [str(tmp_path / "calc.py"), str(ran)]}}}))
    runtime.tools.reload()
    # Short replies that may end by themselves (the call's grammar ends in end-of-text).
    # Room for the call (about 42 tokens of the test model's) beside a prompt listing the tool.
    runtime.remember(make_params({"seed": 3, "max_new_tokens": 64}))
    yield ran
    (user_data / "mcp.json").unlink()
    runtime.tools.reload()


def ask_with_the_tool(page, text: str) -> None:
    page.locator("#chat-tools-panel").get_by_text("Tools", exact=True).first.click()
    tool = page.locator("#chat-tools").get_by_label("add")
    tool.wait_for()  # the page's load event listed this user's tools: it will not reset the box now
    page.locator("#chat-new").click()
    assert wait_until(lambda: page.locator("#chatbot [data-testid=user]").count() == 0)
    # Tools are offered in instruct mode (a new chat keeps the mode of the chat open before it).
    page.locator("#chat-mode").get_by_label("instruct", exact=True).check()
    tool.check()
    assert wait_until(tool.is_checked)
    choice = page.locator("#chat-tool-choice input")
    choice.click()
    page.get_by_role("option", name="add", exact=True).click()
    # The panel's events have reached the server once its note says so.
    assert wait_until(lambda: "tool_choice add" in page.locator("#chat-tools-note").inner_text())
    box = page.locator("#chat-input textarea")
    box.click()
    box.fill(text)
    page.keyboard.press("Enter")


def saved_chat(runtime):
    chats = runtime.users.get(None).chats
    return chats.load(max(chats.list(), key=lambda s: s.updated).id)


def test_a_named_tool_is_called_approved_run_and_the_reply_goes_on(browser, app_url, runtime, calc):  # noqa: F811
    page = open_page(browser, app_url)
    ask_with_the_tool(page, "What is two plus three?")
    approval = page.locator("#chat-tool-approval")
    assert wait_until(lambda: approval.is_visible(), timeout=120), (page.locator("#chat-stats").inner_text(),
                                                                     saved_chat(runtime))
    assert "wants to run add" in page.locator("#chat-tool-approval-note").inner_text()
    assert page.get_by_text("add: waiting for your approval").count() >= 1
    assert not calc.exists()  # nothing runs before the user says so
    waiting = saved_chat(runtime)
    (call,) = waiting.path()[1].tool_calls
    arguments = json.loads(call.arguments)

    page.locator("#chat-tool-approve").click()
    assert wait_until(lambda: "tokens/s" in page.locator("#chat-stats").inner_text() and not approval.is_visible(),
                      timeout=120), page.locator("#chat-stats").inner_text()
    assert calc.read_text() == f"{arguments['a']}+{arguments['b']}"
    done = saved_chat(runtime)
    roles = [m.role for m in done.path()]
    assert roles == ["user", "assistant", "tool", "assistant"]
    result = done.path()[2]
    assert (result.tool_status, result.content) == ("done", str(arguments["a"] + arguments["b"]))
    # The block shows the call's name and time; opened, its arguments and result.
    block = page.locator("#chatbot").get_by_text("🛠️ add (")
    assert block.count() == 1
    block.click()
    assert wait_until(lambda: "Result" in page.locator("#chatbot").inner_text())
    assert done.path()[3].content.strip()  # the reply went on from the result
    page.close()


def test_deny_runs_nothing_and_tells_the_model(browser, app_url, runtime, calc):  # noqa: F811
    page = open_page(browser, app_url)
    ask_with_the_tool(page, "Add four and five.")
    approval = page.locator("#chat-tool-approval")
    assert wait_until(lambda: approval.is_visible(), timeout=120), page.locator("#chat-stats").inner_text()
    page.locator("#chat-tool-deny").click()
    assert wait_until(lambda: "tokens/s" in page.locator("#chat-stats").inner_text() and not approval.is_visible(),
                      timeout=120), page.locator("#chat-stats").inner_text()
    assert not calc.exists()
    done = saved_chat(runtime)
    result = done.path()[2]
    assert (result.role, result.tool_status, result.content) == ("tool", "denied", DENIED)
    assert page.locator("#chatbot").get_by_text("🚫 add: denied").count() == 1
    # The refusal is in what the model read next: the turns its reply was written from.
    assert done.turns()[2] == {"role": "tool", "content": DENIED, "tool_call_id": result.tool_call_id,
                               "name": "add"}
    assert [m.role for m in done.path()] == ["user", "assistant", "tool", "assistant"]
    page.close()
