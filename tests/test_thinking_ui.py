"""A thinking model's replies wherever a reply shows: the chat's messages and their indices,
continue, edit and fork, the exports, the Notebook's raw text and the token view.

The model is the tiny Qwen3 trained to think (tests/thinking_model.py, built once per
session by conftest's `thinker_root`); the display functions are checked on conversations
built by hand.  The browser's view of the same is tests/test_browser_thinking.py.
"""

from __future__ import annotations

import importlib.util
import json

import gradio as gr
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import make_settings
from tests.thinking_model import answer_of, thinking_of
from webui.chat import actions, display
from webui.chat.history import MAX_MESSAGE_CHARS, ChatError, Conversation, Thought
from webui.chat.prompt import ChatSetup
from webui.chat.service import ReplyWriter
from webui.chat.store import ChatStore
from webui.generation.params import make_params
from webui.settings import PROJECT_ROOT
from webui.userdata import UserSpaces

GREEDY = {"temperature": 0, "max_new_tokens": 80}


def thought_chat() -> Conversation:
    """Question, a reply that thought, question, a reply that did not, question, and a
    reply stopped while it was still thinking (no answer)."""
    conversation = Conversation(id="t1")
    conversation.append("user", "Tell me about water.")
    reply = conversation.append("assistant", "Water is the answer.")
    conversation.set_content(reply.id, "Water is the answer.", thinking=Thought("About water.", 7, 1.26))
    conversation.append("user", "And fire?")
    conversation.append("assistant", "Fire is the answer.")
    conversation.append("user", "And land?")
    stopped = conversation.append("assistant", "")
    conversation.set_content(stopped.id, "", thinking=Thought("Land is", 2, 0.3))
    return conversation


# -- what the Chatbot gets ---------------------------------------------------------------------
def test_a_reply_that_thought_shows_a_folded_block_above_its_answer():
    view = display.shown(thought_chat())
    roles = [(m["role"], m.get("metadata", {}).get("title")) for m in view.messages]
    assert roles == [("user", None), ("assistant", "Thought for 1.3 s · 7 tokens"), ("assistant", None),
                     ("user", None), ("assistant", None), ("user", None), ("assistant", "Thought for 0.3 s · 2 tokens")]
    assert view.messages[1] == {"role": "assistant", "content": "About water.",
                                "metadata": {"title": "Thought for 1.3 s · 7 tokens", "status": "done"}}
    assert view.messages[2]["content"] == "Water is the answer."
    # The Chatbot's indices back to path positions (and which part of the message).
    assert [view.where(i) for i in range(len(view.messages))] == [
        (0, "message"), (1, "thinking"), (1, "message"), (2, "message"), (3, "message"), (4, "message"),
        (5, "thinking")]
    for bad in (-1, 7, "1", None):
        with pytest.raises(ChatError):
            view.where(bad)
    # One time per shown message (page.js puts them on each message element, in order).
    assert len(json.loads(view.times())) == len(view.messages)


def test_while_a_reply_streams_its_thinking_is_open_then_folds_when_the_answer_starts():
    conversation = Conversation(id="s1")
    conversation.append("user", "Tell me about water.")
    conversation.append("assistant", "")
    thinking = display.shown(conversation, "thinking").messages
    assert thinking[-1] == {"role": "assistant", "content": display.CURSOR,
                            "metadata": {"title": "Thinking…", "status": "pending"}}
    answering = display.shown(conversation, "answer", Thought("About water.", 0, 2.04)).messages
    assert answering[-2]["metadata"] == {"title": "Thought for 2.0 s", "status": "done"}
    assert answering[-1] == {"role": "assistant", "content": display.CURSOR}
    # A reply that does not think streams as before: one bubble with the cursor.
    assert display.shown(conversation, "answer", None).messages[1:] == [{"role": "assistant",
                                                                         "content": display.CURSOR}]


def test_thinking_shows_as_inert_text_and_code_as_written():
    hostile = '<img src=x onerror="alert(1)"> & <script>alert(2)</script>'
    assert display.inert(hostile) == '&lt;img src=x onerror="alert(1)"> &amp; &lt;script>alert(2)&lt;/script>'
    code = "Use `a < b` here, and\n```python\nif x < 3 and y & 1:\n    pass\n```\nthen <b>bold</b>"
    assert display.inert(code) == ("Use `a < b` here, and\n```python\nif x < 3 and y & 1:\n    pass\n```\n"
                                   "then &lt;b>bold&lt;/b>")
    assert display.inert("```\nstill open <x>") == "```\nstill open <x>"  # a fence still being written
    conversation = Conversation(id="h1")
    conversation.append("user", "q")
    reply = conversation.append("assistant", "a")
    conversation.set_content(reply.id, "a", thinking=Thought(hostile))
    assert "<img" not in display.shown(conversation).messages[1]["content"]


# -- acting on messages by the Chatbot's indices ---------------------------------------------------
@pytest.fixture()
def space(tmp_path):
    return UserSpaces(tmp_path).get(None)


def saved(space, conversation: Conversation) -> Conversation:
    conversation.character = "Assistant"
    space.chats.save(conversation)
    return conversation


def test_picking_and_editing_by_the_chatbots_index_reach_the_right_message(space):
    chat = saved(space, thought_chat())
    # The answer of the first reply is the Chatbot's message 2, the conversation's message 2.
    picked = actions.pick_message(space, chat.id, "Assistant", 2)
    assert (picked.number, picked.text) == (2, "Water is the answer.")
    assert actions.pick_message(space, chat.id, "Assistant", 1).number == 2  # its thinking block: the same reply
    assert actions.pick_message(space, chat.id, "Assistant", 4).text == "Fire is the answer."
    assert actions.pick_message(space, chat.id, "Assistant", 6).number == 6

    view = actions.edit_shown(space, chat.id, "Assistant", 3, "And bread?")  # the Chatbot's 3: message 3
    assert [m.content for m in view.conversation.path()] == ["Tell me about water.", "Water is the answer.",
                                                            "And bread?"]
    with pytest.raises(ChatError, match="thinking"):
        actions.edit_shown(space, chat.id, "Assistant", 1, "other thoughts")
    # An edited answer keeps the thinking it came from.
    view = actions.edit_shown(space, chat.id, "Assistant", 2, "Water, mostly.")
    edited = view.conversation.path()[1]
    assert (edited.content, edited.reasoning, edited.reasoning_tokens) == ("Water, mostly.", "About water.", 7)
    assert view.conversation.alternatives(1) == (2, 2)


def test_fork_flip_and_remove_last_keep_each_replys_own_thinking(space):
    chat = saved(space, thought_chat())
    forked = actions.fork(space, chat.id, "Assistant", 2).conversation
    assert [(m.content, m.reasoning) for m in forked.path()] == [("Tell me about water.", ""),
                                                                ("Water is the answer.", "About water.")]
    left = actions.remove_last(space, chat.id, "Assistant").conversation  # the stopped reply's exchange
    assert [m.content for m in left.path()] == ["Tell me about water.", "Water is the answer.", "And fire?",
                                               "Fire is the answer."]
    assert display.shown(left).messages[1]["metadata"]["title"] == "Thought for 1.3 s · 7 tokens"
    conversation = space.chats.load(chat.id)
    other = conversation.add_alternative(1, "Another answer.")
    conversation.set_content(other.id, "Another answer.", thinking=Thought("Other thoughts.", 3, 0.5))
    saved(space, conversation)
    flipped = actions.flip(space, chat.id, "Assistant", 2, -1).conversation
    assert flipped.path()[1].reasoning == "About water."
    flipped = actions.flip(space, chat.id, "Assistant", 2, +1).conversation
    assert flipped.path()[1].reasoning == "Other thoughts."
    assert display.shown(flipped).messages[1]["content"] == "Other thoughts."
    assert display.shown(flipped).messages[1]["metadata"]["title"] == "Thought for 0.5 s · 3 tokens"


# -- exports ------------------------------------------------------------------------------------------
def test_json_export_round_trips_the_thinking_with_equal_limits(space):
    chat = saved(space, thought_chat())
    name, text = actions.export(space, chat.id)
    back = space.chats.import_json(text, character="Assistant")
    assert [(m.content, m.reasoning, m.reasoning_tokens, m.reasoning_seconds) for m in back.path()] == \
        [(m.content, m.reasoning, m.reasoning_tokens, m.reasoning_seconds) for m in chat.path()]
    # As long as a message may be: written, and read back; one longer: neither.
    longest = "x" * MAX_MESSAGE_CHARS
    conversation = space.chats.load(chat.id)
    conversation.set_content(conversation.path()[1].id, "a", thinking=Thought(longest))
    space.chats.save(conversation)
    assert space.chats.import_json(actions.export(space, chat.id)[1]).path()[1].reasoning == longest
    with pytest.raises(ChatError):
        conversation.set_content(conversation.path()[1].id, "a", thinking=Thought(longest + "x"))
    data = json.loads(text)
    data["messages"][1]["reasoning"] = longest + "x"
    with pytest.raises(ValueError, match="reasoning"):
        space.chats.import_json(json.dumps(data))
    data["messages"][1]["reasoning"], data["messages"][1]["reasoning_tokens"] = "ok", -1
    with pytest.raises(ValueError, match="reasoning_tokens"):
        space.chats.import_json(json.dumps(data))


def test_markdown_export_keeps_the_thinking_as_a_quoted_section():
    spec = importlib.util.spec_from_file_location("markdown_export_script",
                                                  PROJECT_ROOT / "extensions" / "markdown_export" / "script.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    conversation = thought_chat()
    reply = conversation.path()[1]
    conversation.set_content(reply.id, reply.content, thinking=Thought("First this.\n\nThen that.", 7, 1.26))
    text = module.to_markdown(conversation)
    assert ("## Assistant\n\n> **Thought for 1.3 s · 7 tokens**\n>\n> First this.\n>\n> Then that.\n\n"
            "Water is the answer.\n") in text
    assert "## Assistant\n\nFire is the answer." in text  # a reply that did not think: as before
    assert text.rstrip().endswith("> Land is")  # stopped while thinking: the thinking alone


# -- with the model ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def thinker(thinker_root, tmp_path_factory):
    from webui.runtime import build_runtime

    runtime = build_runtime(make_settings(thinker_root, tmp_path_factory.mktemp("thinker-ui"), model="thinker"))
    yield runtime
    runtime.engine.close()


def ask(topic: str) -> Conversation:
    conversation = Conversation(id=f"ask-{topic}")
    conversation.append("user", f"Tell me about {topic}.")
    return conversation


def test_continue_goes_on_from_a_reply_stopped_while_it_was_thinking(thinker, tmp_path):
    store = ChatStore(tmp_path)
    conversation = ask("water")
    whole = thinking_of("water")
    cut = whole[: whole.index(".") + 1]  # "The question is about water."
    reply = conversation.append("assistant", "")
    conversation.set_content(reply.id, "", thinking=Thought(cut, 6, 0.5))
    writer = ReplyWriter(thinker, "cont", store, conversation, ChatSetup(), make_params(GREEDY), "continue")
    # The prompt gives the model its own thinking back, still open.
    assert writer.prompt(thinker.models.current.tokenizer, 4096).text.endswith("<think>\n" + cut)
    list(writer)
    continued = store.load(conversation.id).path()[-1]
    assert (continued.reasoning, continued.content) == (whole, answer_of("water"))
    assert continued.reasoning_tokens > 6 and continued.reasoning_seconds >= 0.5
    assert len(conversation.messages) == 2  # continued in place


def test_continue_after_the_answer_keeps_the_thinking_and_writes_it_back(thinker, tmp_path):
    conversation = ask("fire")
    reply = conversation.append("assistant", "Fire is")
    conversation.set_content(reply.id, "Fire is", thinking=Thought(thinking_of("fire"), 12, 1.0))
    writer = ReplyWriter(thinker, "cont2", ChatStore(tmp_path), conversation, ChatSetup(), make_params(GREEDY),
                         "continue")
    prompt = writer.prompt(thinker.models.current.tokenizer, 4096).text
    assert prompt.endswith(f"<think>\n{thinking_of('fire')}\n</think>\n\nFire is")
    list(writer)
    continued = conversation.path()[-1]
    assert continued.content == answer_of("fire")
    assert (continued.reasoning, continued.reasoning_tokens) == (thinking_of("fire"), 12)


def test_regenerate_gives_the_new_version_its_own_thinking(thinker, tmp_path):
    conversation = ask("bread")
    old = conversation.append("assistant", "Old answer.")
    conversation.set_content(old.id, "Old answer.", thinking=Thought("Old thoughts.", 2, 0.1))
    list(ReplyWriter(thinker, "regen", ChatStore(tmp_path), conversation, ChatSetup(), make_params(GREEDY),
                     "regenerate"))
    new = conversation.path()[-1]
    assert (new.reasoning, new.content) == (thinking_of("bread"), answer_of("bread"))
    conversation.flip(1, -1)
    assert conversation.path()[-1].reasoning == "Old thoughts."


def test_the_switch_off_gives_a_reply_without_thinking(thinker, tmp_path):
    from webui.ui.thinking_ui import with_switches

    setup = with_switches(thinker, ChatSetup(), False, "high")
    assert dict(setup.variables) == {"enable_thinking": False}  # no reasoning_effort in Qwen3's template
    conversation = ask("king")
    list(ReplyWriter(thinker, "off", ChatStore(tmp_path), conversation, setup, make_params(GREEDY)))
    reply = conversation.path()[-1]
    assert reply.reasoning == "" and reply.content.strip() == answer_of("king")
    # Not a switch's value: ignored, and the template's switch stays at its default (on).
    assert dict(with_switches(thinker, ChatSetup(), "yes", "extreme").variables) == {"enable_thinking": True}


def test_notebook_shows_the_raw_text_thinking_included(thinker):
    from webui.chat.prompt import apply_template
    from webui.ui.notebook_tab import completion

    tokenizer = thinker.models.current.tokenizer
    prompt = apply_template(tokenizer, [{"role": "user", "content": "Tell me about light."}])
    *_, (text, summary, _) = completion(thinker, prompt, GREEDY, gr.Request(session_hash="notebook-thinking"))
    assert text == f"<think>\n{thinking_of('light')}\n</think>\n\n{answer_of('light')}", text
    assert "tokens/s" in summary


def test_the_token_view_covers_the_thinking_and_the_answer(thinker, tmp_path):
    conversation = ask("land")
    writer = ReplyWriter(thinker, "probs", ChatStore(tmp_path), conversation, ChatSetup(), make_params(GREEDY),
                         token_view=5)
    list(writer)
    records = writer.stream.logprobs
    text = "".join(r.text for r in records)
    assert thinking_of("land") in text and answer_of("land") in text
    assert text.index(thinking_of("land")) < text.index(answer_of("land"))
    assert len(records) == writer.stream.stats.new_tokens


# -- the parser's held-back end, made cheaper per piece (bench/bench_thinking.py) -------------------
@given(st.text(alphabet="<>/thinkTHIN|a ", max_size=24),
       st.lists(st.sampled_from(["</think>", "<think>", "<|end|>", "<|channel|>final<|message|>", ""]), max_size=3))
def test_the_held_back_end_is_the_longest_start_of_a_marker(text, markers):
    from webui.generation.reasoning import _partial_suffix

    expected = max((size for marker in markers for size in range(1, min(len(marker) - 1, len(text)) + 1)
                    if marker.startswith(text[len(text) - size:])), default=0)
    assert _partial_suffix(text, tuple(markers)) == expected
