"""The chat's tool turns without a model: what a reply is offered (only tools the user may
use and the chat allows, none past the step limit, none after a forced call's result),
calls recorded from a reply and kept in the conversation file, approval, denial,
running through the registry, and the limits the file format holds on read and write."""

from __future__ import annotations

import json
import textwrap

import pytest
from pydantic import ValidationError

from webui.chat.history import MAX_TOOL_ARGUMENTS, MAX_TOOL_CALLS, ChatError, ChatTools, Conversation, Message
from webui.chat.tool_turns import (
    DENIED,
    MAX_STEPS,
    forced,
    needs_approval,
    offered,
    pending,
    record_calls,
    resolve,
    steps_since_user,
)
from webui.chat.tools import read_tools
from webui.generation.params import make_params
from webui.tools.registry import ToolRegistry
from webui.chat.display import shown

ADD, ECHO = read_tools([
    {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {
        "a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}},
    {"type": "function", "function": {"name": "echo", "parameters": {"type": "object", "properties": {
        "text": {"type": "string"}}}}},
])


def chat_with_call(arguments='{"a": 2, "b": 3}', choice="auto", always=()):
    conversation = Conversation(id="c1", tools=ChatTools(allowed=["add", "echo"], always=list(always), choice=choice))
    conversation.append("user", "What is 2 + 3?")
    reply = conversation.append("assistant", "")
    text = f'Let me add.<tool_call>{{"name": "add", "arguments": {arguments}}}</tool_call>'
    calls = record_calls(conversation, reply, text, (ADD, ECHO))
    return conversation, calls


def test_only_tools_the_user_may_use_and_the_chat_allows_are_offered():
    conversation = Conversation(id="c1", tools=ChatTools(allowed=["add", "secret"]))
    conversation.append("user", "hi")
    assert offered([ADD, ECHO], conversation.tools, conversation) == (ADD,)  # "secret" is not the user's
    assert offered([], conversation.tools, conversation) == ()  # a user with no tools is offered none
    assert offered([ADD], ChatTools(allowed=["add"], choice="none"), conversation) == ()
    assert offered([ADD], None, conversation) == ()


def test_calls_are_recorded_pending_and_kept_in_the_file():
    conversation, calls = chat_with_call()
    assert [m.role for m in conversation.path()] == ["user", "assistant", "tool"]
    reply = conversation.path()[1]
    assert reply.content == "Let me add." and [c.name for c in reply.tool_calls] == ["add"]
    (call,) = calls
    assert (call.tool_name, call.tool_status, call.tool_call_id) == ("add", "pending", reply.tool_calls[0].id)
    assert pending(conversation) == calls
    again = Conversation.model_validate_json(conversation.model_dump_json())
    assert again == conversation  # what is written is read back the same
    assert again.turns()[1]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}


def test_approval_deny_and_run(tmp_path):
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "add.py").write_text(textwrap.dedent('''
        tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
        def execute(arguments):
            return arguments["a"] + arguments["b"]
    '''))
    registry = ToolRegistry(tmp_path)
    conversation, calls = chat_with_call()
    assert needs_approval(calls, conversation.tools) == calls
    assert needs_approval(calls, ChatTools(allowed=["add"], always=["add"])) == []
    denied = resolve(registry, None, conversation, calls[0], approve=False)
    assert (denied.tool_status, denied.content) == ("denied", DENIED) and pending(conversation) == []
    assert conversation.turns()[-1] == {"role": "tool", "content": DENIED, "tool_call_id": denied.tool_call_id,
                                        "name": "add"}
    conversation, calls = chat_with_call()
    done = resolve(registry, None, conversation, calls[0], approve=True)
    assert (done.tool_status, done.content) == ("done", "5") and done.seconds >= 0
    blocks = shown(conversation).messages
    assert blocks[2]["metadata"]["title"].startswith("🛠️ add (") and "**Result**" in blocks[2]["content"]
    assert "```json" in blocks[2]["content"] and blocks[1]["content"] == "Let me add."


def test_the_step_limit_and_forced_calls():
    conversation, _ = chat_with_call(choice="add")
    # The reply after a forced call's result is written without tools.
    assert offered([ADD, ECHO], conversation.tools, conversation) == ()
    fresh = Conversation(id="c2", tools=ChatTools(allowed=["add"], choice="add"))
    fresh.append("user", "go")
    params = forced(make_params({}), (ADD,), fresh.tools, fresh)
    schema = json.loads(params.json_schema)
    assert schema["properties"]["name"] == {"const": "add"}
    with pytest.raises(ChatError):
        forced(make_params({"grammar_string": 'root ::= "x"'}), (ADD,), fresh.tools, fresh)
    with pytest.raises(ChatError):
        forced(make_params({}), (ECHO,), fresh.tools, fresh)  # the named tool is not offered
    auto = Conversation(id="c3", tools=ChatTools(allowed=["add"]))
    auto.append("user", "go")
    for _ in range(MAX_STEPS):
        reply = auto.append("assistant", "")
        (call,) = record_calls(auto, reply, '{"name": "add", "arguments": {"a": 1, "b": 1}}', (ADD,))
        auto.set_tool_result(call.id, "2", "done", 0.0)
    assert steps_since_user(auto) == MAX_STEPS and offered([ADD], auto.tools, auto) == ()


def test_the_file_format_bounds_tool_fields_on_write_and_read():
    conversation, calls = chat_with_call()
    with pytest.raises(ValidationError):
        conversation.set_tool_result(calls[0].id, "x", "exploded", None)  # not a status
    with pytest.raises(ValidationError):
        Message(id=0, parent=-1, role="tool", content="x")  # a result needs its call
    with pytest.raises(ValidationError):
        Message(id=0, parent=-1, role="user", content="x", tool_name="add", tool_call_id="1", tool_status="done")
    data = json.loads(conversation.model_dump_json())
    data["messages"][1]["tool_calls"] = data["messages"][1]["tool_calls"] * (MAX_TOOL_CALLS + 1)
    with pytest.raises(ValidationError):
        Conversation.model_validate(data)
    data = json.loads(conversation.model_dump_json())
    data["messages"][1]["tool_calls"][0]["arguments"] = "x" * (MAX_TOOL_ARGUMENTS + 1)
    with pytest.raises(ValidationError):
        Conversation.model_validate(data)
    data = json.loads(conversation.model_dump_json())
    data["tools"]["allowed"] = ["../../etc/passwd"]
    with pytest.raises(ValidationError):
        Conversation.model_validate(data)
    with pytest.raises(ChatError):
        conversation.edit(2, "a forged result")
    fork = conversation.fork(2, "c9")
    assert [m.role for m in fork.path()] == ["user", "assistant", "tool"] and fork.path()[2].tool_name == "add"


def test_a_characters_tools_are_where_each_new_chat_with_it_starts(app_url, runtime):
    """Character tab: the tools a new chat with the character may use; the chat's own
    Tools panel starts there, and another character's chat has none."""
    from gradio_client import Client

    from tests.test_chat_ui import steady

    tools_dir = runtime.settings.user_data_dir / "tools"
    tools_dir.mkdir(exist_ok=True)
    (tools_dir / "shout.py").write_text(textwrap.dedent('''
        tool = {"type": "function", "function": {"name": "shout", "description": "Upper-case a text.",
                "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}

        def execute(arguments):
            return arguments.get("text", "").upper()
    '''))
    runtime.tools.reload()
    client = Client(app_url, verbose=False)
    client.predict(*steady(max_new_tokens=4), api_name="/set_params")
    try:
        saved = client.predict("Assistant", "Crier", "{{char}} calls the news.", "", "", "", "", "", "", None, [],
                               ["shout", "no_such_tool"], api_name="/character_save")
        assert "Saved Crier" in saved[-1] and saved[-2]["value"] == ["shout"]
        assert runtime.users.get(None).characters.load("Crier").tools == ChatTools(allowed=["shout"])
        client.predict("Crier", api_name="/chat_character")
        client.predict("Hear ye", who="Crier", api_name="/chat_send")
        chats = runtime.users.get(None).chats
        newest = chats.load(max(chats.list(), key=lambda s: s.updated).id)
        assert newest.character == "Crier" and newest.tools == ChatTools(allowed=["shout"])
        client.predict("Assistant", api_name="/chat_new")  # a new chat: not one an earlier test left with tools
        client.predict("Hello", who="Assistant", api_name="/chat_send")
        newest = chats.load(max(chats.list(), key=lambda s: s.updated).id)
        assert newest.character == "Assistant" and not (newest.tools and newest.tools.allowed)
    finally:
        client.predict("Crier", api_name="/character_delete")
        (tools_dir / "shout.py").unlink()
        runtime.tools.reload()
