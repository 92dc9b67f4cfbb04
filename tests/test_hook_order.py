"""The order of extension hooks: webui/extensions/flows.py, docs/EXTENSIONS.md's table,
and what the chat and the Notebook really call, are one and the same."""

from __future__ import annotations

import re

import pytest

from tests.test_extensions import build, write_extension
from webui.chat.history import Conversation
from webui.chat.prompt import ChatSetup
from webui.chat.service import ReplyWriter, add_user_message, impersonate
from webui.chat.store import ChatStore
from webui.extensions import hookspecs
from webui.extensions.flows import FLOWS
from webui.generation.params import make_params
from webui.settings import PROJECT_ROOT

HOOKS = {name for name in dir(hookspecs) if callable(getattr(hookspecs, name)) and not name.startswith("_")}

# Records every hook that can run during a request; changes nothing.
RECORDER = """
calls = []

def state_modifier(state):
    calls.append("state_modifier")
    return state

def chat_input_modifier(text, visible_text, state):
    calls.append("chat_input_modifier")
    return text, visible_text

def input_modifier(string, state, is_chat):
    calls.append("input_modifier")
    return string

def history_modifier(history):
    calls.append("history_modifier")
    return history

def custom_generate_chat_prompt(user_input, state, **kwargs):
    calls.append("custom_generate_chat_prompt")
    return None  # the template, please

def bot_prefix_modifier(string, state):
    calls.append("bot_prefix_modifier")
    return string

def tokenizer_modifier(state, prompt, input_ids, input_embeds):
    calls.append("tokenizer_modifier")
    return prompt, input_ids, input_embeds

def logits_processor_modifier(processor_list, input_ids):
    calls.append("logits_processor_modifier")
    return processor_list

def output_modifier(string, state, is_chat):
    calls.append("output_modifier")
    return string
"""
PARAMS = make_params({"temperature": 0.0, "max_new_tokens": 4, "ban_eos_token": True})


def documented_flows() -> dict[str, tuple[str, ...]]:
    """docs/EXTENSIONS.md's "Which hooks run where": each row's hook names, in order."""
    text = (PROJECT_ROOT / "docs" / "EXTENSIONS.md").read_text(encoding="utf-8")
    section = text.split("## Which hooks run where", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0] not in ("flow", "---"):
            rows[cells[0]] = tuple(n for n in re.findall(r"`(\w+)`", "|".join(cells[1:])) if n in HOOKS)
    return rows


def test_the_docs_table_mirrors_the_flows_module():
    assert documented_flows() == FLOWS


def test_every_flow_names_only_real_hooks():
    assert {hook for hooks in FLOWS.values() for hook in hooks} <= HOOKS


@pytest.fixture()
def recorded(models_root, tmp_path):
    write_extension(tmp_path, "recorder", RECORDER)
    runtime = build(models_root, tmp_path, ["recorder"])
    calls = runtime.extensions.get("recorder").module.calls
    calls.clear()
    return runtime, calls


def in_order(calls: list[str]) -> tuple[str, ...]:
    """The calls with repeats in a row folded (a hook may run once per candidate prompt)."""
    return tuple(c for i, c in enumerate(calls) if i == 0 or calls[i - 1] != c)


def test_chat_send_and_reply_call_the_hooks_in_the_flows_order(recorded, tmp_path):
    runtime, calls = recorded
    conversation = Conversation(id="c")
    add_user_message(runtime, conversation, ChatSetup(), PARAMS, "hello")
    assert in_order(calls) == FLOWS["chat: Send"]
    calls.clear()
    list(ReplyWriter(runtime, "owner", ChatStore(tmp_path / "chats"), conversation, ChatSetup(), PARAMS))
    assert in_order(calls) == FLOWS["chat: each reply (Send, Regenerate, Continue)"]


def test_impersonate_and_notebook_call_the_hooks_in_the_flows_order(recorded):
    runtime, calls = recorded
    conversation = Conversation(id="c")
    conversation.append("assistant", "hello")
    list(impersonate(runtime, "owner", conversation, ChatSetup(), PARAMS))
    assert in_order(calls) == FLOWS["chat: Impersonate"]
    calls.clear()
    list(runtime.generate("owner", "In the beginning", PARAMS))
    # No extension here writes replies itself: the Notebook's flow without custom_generate_reply.
    assert in_order(calls) == tuple(h for h in FLOWS["Notebook"] if h != "custom_generate_reply")


def test_the_api_calls_the_hooks_in_the_flows_order(recorded):
    import httpx

    from tests.conftest import TINY, free_port
    from webui.api.openai_api import APIServer

    runtime, calls = recorded
    server = APIServer(runtime, port=free_port())
    url = server.start()
    try:
        body = {"model": TINY, "prompt": "The keeper", "max_tokens": 4, "temperature": 0}
        assert httpx.post(f"{url}/completions", json=body, timeout=60).status_code == 200
    finally:
        server.stop()
    assert in_order(calls) == FLOWS["API (`/v1/chat/completions`, `/v1/completions`)"]
