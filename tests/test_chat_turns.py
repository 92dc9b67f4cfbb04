"""The logic under issue 31's chat fixes, without a browser (tests/test_browser_chat_turns.py
shows each in Chromium): typed text shown as typed, a half turn withdrawn, an edit that
awaits a reply, and the prompt settings kept with a conversation."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from webui.chat import actions, display, settings
from webui.chat.history import ChatSettings, Conversation
from webui.chat.service import withdraw
from webui.chat.store import ChatStore
from webui.chat.templates import MODEL_TEMPLATE


def chat(*texts: str) -> Conversation:
    conversation = Conversation(id="c1")
    for i, text in enumerate(texts):
        conversation.append("user" if i % 2 == 0 else "assistant", text)
    return conversation


def test_the_users_text_is_shown_as_typed_and_replies_as_markdown():
    conversation = chat("Is <b>this</b> bold? **yes** `<i>` a < b, Tom & Jerry &amp;", "<b>Sure</b>")
    user, reply = display.shown(conversation).messages
    # Tags and entities escaped; code as written, Markdown kept, and the rest left as typed.
    assert user["content"] == "Is &lt;b>this&lt;/b> bold? **yes** `<i>` a < b, Tom & Jerry &amp;amp;"
    assert reply["content"] == "<b>Sure</b>"  # a reply's Markdown and HTML render as before (sanitized)


@given(st.text(alphabet="<>&;#/!`~\nabmplt1 *", max_size=60))
def test_typed_reads_back_exactly_what_as_typed_was_given(text):
    assert display.typed(display.as_typed(text)) == text


def test_failed_shows_the_error_and_the_message_not_sent():
    shown = display.failed("no model is loaded", "hi <b>")
    assert shown[0] == {"role": "user", "content": "hi &lt;b>"}  # shown as typed
    assert shown[1]["role"] == "assistant" and "no model is loaded" in shown[1]["content"]
    assert display.NOT_SENT in shown[1]["content"]
    assert [m["role"] for m in display.failed("the reply stopped")] == ["assistant"]


def test_withdraw_takes_back_a_message_left_without_a_reply():
    conversation = chat("first", "an answer")
    sent = conversation.append("user", "unanswered")
    assert withdraw(conversation, sent) == "unanswered"
    assert [m.content for m in conversation.path()] == ["first", "an answer"]
    assert withdraw(conversation, sent) is None  # already gone
    answered = conversation.append("user", "answered")
    conversation.append("assistant", "a reply")
    assert withdraw(conversation, answered) is None  # a full turn is kept
    assert withdraw(conversation, None) is None


def test_an_edited_user_message_awaits_a_reply_and_an_edited_reply_does_not():
    conversation = chat("question", "answer")
    conversation.edit(0, "better question")
    assert actions.awaits_reply(conversation)
    conversation = chat("question", "answer")
    conversation.edit(1, "better answer")
    assert not actions.awaits_reply(conversation)


def test_prompt_settings_are_kept_and_restored(tmp_path):
    conversation = chat("hello")
    assert settings.restored(conversation, [MODEL_TEMPLATE]) is None  # none kept: controls stay
    settings.remember(conversation, "chat", "Alpaca", False, "high")
    store = ChatStore(tmp_path)
    store.save(conversation)
    again = store.load(conversation.id)
    assert again.settings == ChatSettings(mode="chat", template="Alpaca", enable_thinking=False, effort="high")
    assert settings.restored(again, [MODEL_TEMPLATE, "Alpaca"]).template == "Alpaca"
    assert settings.restored(again, [MODEL_TEMPLATE]).template == ""  # removed since: left as it is
    assert again.fork(0, "c2").settings == again.settings
    settings.remember(again, "instruct", MODEL_TEMPLATE, "yes", "extreme")  # odd switch values: defaults
    assert again.settings == ChatSettings(mode="instruct", template="")
    assert settings.restored(again, [MODEL_TEMPLATE]).template == MODEL_TEMPLATE


def test_a_conversation_saved_before_settings_were_kept_still_opens(tmp_path):
    old = chat("hello").model_dump()
    del old["settings"]
    (tmp_path / "c1.json").write_text(json.dumps(old))
    assert ChatStore(tmp_path).load("c1").settings is None
