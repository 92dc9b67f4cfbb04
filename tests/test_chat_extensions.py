"""The chat calls the extensions' chat hooks: input, history, prompt, prefix, output."""

from __future__ import annotations

import pytest

from tests.conftest import make_settings
from tests.test_extensions import write_extension
from webui.chat.characters import Character
from webui.chat.history import Conversation
from webui.chat.prompt import ChatSetup
from webui.chat.service import ReplyWriter, add_user_message, from_pairs, impersonate, to_pairs
from webui.chat.store import ChatStore
from webui.generation.params import make_params

CHAT_HOOKS = """
seen = []

def state_modifier(state):
    seen.append(("state", state["mode"], state["name2"], len(state["history"]["internal"])))
    state["max_new_tokens"] = 3
    return state

def chat_input_modifier(text, visible_text, state):
    return text + " [for the model]", visible_text

def input_modifier(string, state, is_chat):
    seen.append(("input", is_chat))
    return string.upper()

def history_modifier(history):
    seen.append(("history", len(history["internal"])))
    return history

def bot_prefix_modifier(string, state):
    return string + "Indeed,"

def output_modifier(string, state, is_chat):
    return "<<" + string + ">>"
"""


@pytest.fixture()
def hooked(models_root, tmp_path):
    from webui.runtime import build_runtime

    write_extension(tmp_path, "chathooks", CHAT_HOOKS)
    runtime = build_runtime(make_settings(models_root, tmp_path, extensions=("chathooks",)))
    return runtime, runtime.extensions.get("chathooks").module


def test_pairs_round_trip():
    turns = [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Q"},
             {"role": "assistant", "content": "A"}, {"role": "user", "content": "Q2"}]
    assert to_pairs(turns) == [["", "Hi"], ["Q", "A"], ["Q2", ""]]
    assert from_pairs(to_pairs(turns)) == turns


def test_a_chat_reply_runs_every_chat_hook(hooked, tmp_path):
    runtime, module = hooked
    store = ChatStore(tmp_path / "chats")
    setup = ChatSetup(mode="chat", character=Character(name="Ann"))
    params = make_params({"temperature": 0.0, "max_new_tokens": 20})
    conversation = Conversation(id="c")
    add_user_message(runtime, conversation, setup, params, "hello")
    message = conversation.path()[0]
    assert message.content == "HELLO [FOR THE MODEL]" and message.visible == "hello"
    writer = ReplyWriter(runtime, "owner", store, conversation, setup, params)
    list(writer)
    assert writer.prompt.names == ("You", "Ann")
    reply = store.load("c").path()[-1]
    assert reply.visible == f"<<{reply.content}>>"  # output_modifier changes only what is shown
    assert writer.stream.stats.new_tokens <= 3  # state_modifier's max_new_tokens applied
    kinds = [entry[0] for entry in module.seen]
    assert kinds == ["state", "input", "state", "history"]
    assert module.seen[2] == ("state", "chat", "Ann", 1)
    assert store.load("c").shown()[0]["content"] == "hello"


def test_bot_prefix_modifier_opens_the_reply(hooked, tmp_path):
    runtime, _ = hooked
    setup = ChatSetup(mode="chat", character=Character(name="Ann"))
    conversation = Conversation(id="c")
    conversation.append("user", "hi")
    writer = ReplyWriter(runtime, "owner", ChatStore(tmp_path), conversation, setup, make_params({"max_new_tokens": 2}))
    list(writer)
    rendered = writer.prompt(runtime.models.current.tokenizer, 1000)
    assert rendered.text.endswith("Ann:Indeed,")


def test_impersonate_uses_the_modified_state(hooked):
    runtime, module = hooked
    conversation = Conversation(id="c")
    conversation.append("user", "hi")
    conversation.append("assistant", "hello")
    text = list(impersonate(runtime, "owner", conversation, ChatSetup(), make_params({"max_new_tokens": 30})))
    assert module.seen[-1][0] == "state"
    assert len(text) <= 3  # at most max_new_tokens pieces
