"""Several users and tools: only the owner chooses who may use which tool (the panel's
handlers refuse anyone else), the choice is saved, and a user not allowed a tool cannot
make the chat run it."""

from __future__ import annotations

import textwrap

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.conftest import free_port, make_settings, page_load

OWNER, BOB = ("ann", "ann-pass-1"), ("bob", "bob-pass-2")
MARK = textwrap.dedent('''
    import pathlib
    tool = {"type": "function", "function": {"name": "mark", "parameters": {"type": "object", "properties": {}}}}
    def execute(arguments):
        pathlib.Path(__file__).with_suffix(".ran").write_text("ran")
        return "marked"
''')


@pytest.fixture(scope="module")
def app(models_root, tmp_path_factory):
    from webui.runtime import build_runtime
    from webui.ui.app import launch

    user_data = tmp_path_factory.mktemp("tool_users")
    (user_data / "tools").mkdir()
    (user_data / "tools" / "mark.py").write_text(MARK)
    settings = make_settings(models_root, user_data, gradio_auth=f"{OWNER[0]}:{OWNER[1]},{BOB[0]}:{BOB[1]}")
    runtime = build_runtime(settings)
    app, url = launch(runtime, block=False, port=free_port())
    yield runtime, url
    app.close()


def test_only_the_owner_chooses_and_others_get_only_what_is_chosen(app):
    runtime, url = app
    marker = runtime.settings.user_data_dir / "tools" / "mark.ran"
    owner, bob = Client(url, auth=OWNER, verbose=False), Client(url, auth=BOB, verbose=False)
    assert page_load(owner)["chat-tools"]["choices"] == [["mark", "mark"]]
    assert page_load(bob)["chat-tools"]["choices"] == []  # nothing allowed yet: nothing listed
    with pytest.raises(AppError, match="owner"):
        bob.predict("bob", [], api_name="/tools_access_save")
    # Bob's own tool calls are Bob's to approve or deny (nothing waits here).
    assert "No tool call is waiting" in str(bob.predict(api_name="/chat_tool_deny"))
    with pytest.raises(AppError):  # a name the server does not have as a user
        owner.predict("../ann", ["mark"], api_name="/tools_access_save")
    assert runtime.tools.access.allowed("bob", {"mark"}) == set()
    with pytest.raises(AppError):  # the chat will not take a tool this user may not use
        bob.predict("hi", tools=["mark"], choice="mark", api_name="/chat_send")
    assert not marker.exists()
    assert "bob may use mark" in owner.predict("bob", ["mark"], api_name="/tools_access_save")
    assert runtime.tools.access.allowed("bob", {"mark", "other"}) == {"mark"}
    assert page_load(Client(url, auth=BOB, verbose=False))["chat-tools"]["choices"] == [["mark", "mark"]]
    assert runtime.tools.call("bob", "mark", "{}").text == "marked" and marker.exists()
