"""A hostile re-probe's disk findings (issue 26): chats that outgrew what the reader
accepts and vanished (N32), and a signed-in user filling the disk through uploads and
exports (N36)."""

from __future__ import annotations

import json

import pytest

from webui.chat import actions
from webui.chat.history import ChatError
from webui.chat.store import MAX_CHAT_BYTES, ChatStore
from webui.userdata import UserSpace


# -- N32: one size limit, checked before every save ------------------------------------------
def test_an_edit_that_would_outgrow_the_file_limit_is_refused_and_the_chat_still_loads(tmp_path):
    """The probe's steps: "Edit a message" with 800,000 control characters, again and
    again (each edit is kept as a version; JSON writes each character as six bytes).
    On main the 14th save wrote 67 MB, past what the reader accepts, and the chat was
    set aside as unreadable."""
    space = UserSpace(tmp_path)
    conversation = actions.new(space, "Assistant").conversation
    conversation.append("user", "hi")
    space.chats.save(conversation)
    chat = conversation.id
    refused = None
    for i in range(16):  # bounded: 14 edits crossed the limit in the probe
        try:
            actions.edit(space, chat, "Assistant", 1, "\x01" * 800_000 + str(i))
        except ChatError as exc:
            refused = (i, str(exc))
            break
    assert refused is not None, "an edit past the file limit was saved"
    assert "not saved" in refused[1] and "MB" in refused[1]
    path = tmp_path / "chats" / f"{chat}.json"
    assert path.stat().st_size <= MAX_CHAT_BYTES
    space.chats._summaries.clear()
    loaded = space.chats.load(chat)  # still readable: nothing was set aside
    assert len(loaded.messages) == refused[0] + 1  # "hi" and every edit saved before the refusal
    assert space.chats.unreadable() == {}
    assert [s.id for s in space.chats.list()] == [chat]


def test_a_file_an_older_version_wrote_past_the_limit_is_recovered_whole(tmp_path):
    """A chat saved past the limit before this check existed: "recover" gave back one
    message holding the first 1,000,000 characters of raw JSON.  It now keeps the
    messages, as many as fit the limit."""
    messages = [{"id": 0, "parent": -1, "role": "user", "content": "first words"}]
    for i in range(1, 15):
        messages.append({"id": i, "parent": 0, "role": "user", "content": "\x01" * 800_000 + str(i)})
    raw = json.dumps({"format": "webui-chat", "version": 1, "id": "big1", "title": "Big",
                      "character": "Assistant", "messages": messages}, indent=1)
    assert len(raw) > MAX_CHAT_BYTES  # premise
    (tmp_path / "big1.json").write_text(raw)
    store = ChatStore(tmp_path)
    assert store.list() == []  # set aside, as before
    (label,) = store.unreadable()
    recovered = store.recover(label)
    assert recovered.messages[0].content == "first words"
    assert 1 < len(recovered.messages) < 15
    assert all(m.content.startswith("\x01") for m in recovered.messages[1:])
    store._summaries.clear()
    assert store.load(recovered.id).messages[0].content == "first words"


def test_the_store_refuses_a_save_over_the_limit_with_the_old_file_intact(tmp_path, monkeypatch):
    """Replies and every other save go through ChatStore.save: the same check for all."""
    store = ChatStore(tmp_path)
    conversation = store.new("Assistant")
    conversation.append("user", "kept")
    store.save(conversation)
    before = (tmp_path / f"{conversation.id}.json").read_bytes()
    conversation.append("assistant", "y" * 1000)
    monkeypatch.setattr("webui.chat.store.MAX_CHAT_BYTES", len(before) + 100)  # reader and writer alike
    with pytest.raises(ChatError, match="not saved"):
        store.save(conversation)
    assert (tmp_path / f"{conversation.id}.json").read_bytes() == before
    assert [m.content for m in store.load(conversation.id).messages] == ["kept"]
