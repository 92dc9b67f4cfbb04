"""The conversation tree and the conversation store on disk."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from webui.chat.history import ChatError, Conversation
from webui.chat.store import ChatStore
from webui.paths import NameRefused
from webui.settings import PROJECT_ROOT


def chat(*texts: str) -> Conversation:
    conversation = Conversation(id="c1")
    for i, text in enumerate(texts):
        conversation.append("user" if i % 2 == 0 else "assistant", text)
    return conversation


def contents(conversation: Conversation) -> list[str]:
    return [m["content"] for m in conversation.turns()]


def test_regenerate_keeps_the_old_reply_as_an_alternative():
    conversation = chat("Hi", "Hello")
    conversation.add_alternative(1, "Greetings")
    assert contents(conversation) == ["Hi", "Greetings"]
    assert conversation.alternatives(1) == (2, 2)
    conversation.flip(1, -1)
    assert contents(conversation) == ["Hi", "Hello"]
    conversation.flip(1, -1)  # wraps around
    assert contents(conversation) == ["Hi", "Greetings"]


def test_editing_an_earlier_message_starts_a_branch_and_keeps_the_old_one():
    conversation = chat("Hi", "Hello", "Tell me a story", "Once upon a time")
    conversation.edit(0, "Good morning")
    assert contents(conversation) == ["Good morning"]
    conversation.append("assistant", "Morning!")
    assert contents(conversation) == ["Good morning", "Morning!"]
    conversation.flip(0, -1)  # back to the first branch, whole
    assert contents(conversation) == ["Hi", "Hello", "Tell me a story", "Once upon a time"]
    assert len(conversation.messages) == 6
    # An edit that changes nothing adds nothing.
    conversation.edit(1, "Hello")
    assert len(conversation.messages) == 6


def test_fork_copies_the_path_up_to_a_message():
    conversation = chat("Hi", "Hello", "More", "Sure")
    fork = conversation.fork(1, "c2")
    assert fork.id == "c2" and contents(fork) == ["Hi", "Hello"]
    assert contents(conversation) == ["Hi", "Hello", "More", "Sure"]


def test_remove_last_drops_the_last_exchange_with_its_alternatives():
    conversation = chat("Hi", "Hello", "More", "Sure")
    conversation.add_alternative(3, "Fine")
    conversation.remove_last()
    assert contents(conversation) == ["Hi", "Hello"]
    assert len(conversation.messages) == 2
    conversation.remove_last()
    assert contents(conversation) == []
    with pytest.raises(ChatError):
        conversation.remove_last()


def test_bad_positions_are_refused():
    conversation = chat("Hi")
    for index in (-1, 1, 99):
        with pytest.raises(ChatError):
            conversation.flip(index, 1)


@pytest.mark.parametrize("messages", [
    [{"id": 0, "parent": 5, "role": "user", "content": "x"}],  # unknown parent
    [{"id": 0, "parent": -1, "role": "user", "content": "x"},
     {"id": 0, "parent": -1, "role": "user", "content": "y"}],  # duplicate id
    [{"id": 0, "parent": -1, "role": "system", "content": "x"}],  # unknown role
])
def test_malformed_trees_are_refused(messages):
    with pytest.raises(ValueError):
        Conversation(id="x", messages=messages)


def test_store_round_trip_list_search_rename_delete(tmp_path):
    store = ChatStore(tmp_path)
    first = chat("Tell me about ravens", "They are clever")
    first.id, first.title = store.new("Assistant").id, "Birds"
    store.save(first)
    second = store.new("Other")
    second.append("user", "Hello")
    store.save(second)
    assert [s.id for s in store.list("Assistant")] == [first.id]
    assert {s.id for s in store.list()} == {first.id, second.id}
    assert [s.id for s in store.list(query="CLEVER")] == [first.id]  # message text, any case
    assert [s.id for s in store.list(query="birds")] == [first.id]
    assert store.load(first.id).turns() == first.turns()
    assert store.rename(first.id, "  Ravens   and crows ").title == "Ravens and crows"
    store.delete(first.id)
    assert [s.id for s in store.list()] == [second.id]


@pytest.mark.parametrize("name", ["../x", "..%2fx", "/etc/hosts", "a/../../b", "x\0y", "", "a" * 300, None, 5])
def test_store_refuses_ids_it_does_not_list(tmp_path, name):
    store = ChatStore(tmp_path)
    store.save(chat("Hi"))
    with pytest.raises(NameRefused):
        store.load(name)
    with pytest.raises(NameRefused):
        store.delete(name)
    assert (tmp_path / "c1.json").exists()


def test_ids_are_unguessable_and_distinct(tmp_path):
    store = ChatStore(tmp_path)
    ids = {store.new("Assistant").id for _ in range(200)}
    assert len(ids) == 200 and all(len(i) == 24 for i in ids)


def test_a_corrupt_file_is_set_aside_and_the_others_still_load(tmp_path):
    store = ChatStore(tmp_path)
    good = chat("Hi", "Hello")
    store.save(good)
    text = good.model_dump_json()
    (tmp_path / "truncated.json").write_text(text[: len(text) // 2])
    (tmp_path / "wrongschema.json").write_text(json.dumps({"id": "wrongschema", "messages": "nope"}))
    (tmp_path / "alist.json").write_text("[1, 2, 3]")
    assert [s.id for s in store.list()] == ["c1"]
    assert len(store.warnings) == 3 and all("could not be read" in w for w in store.warnings)
    aside = sorted(p.name for p in tmp_path.iterdir() if ".unreadable-" in p.name)
    assert len(aside) == 3  # kept, for the user to inspect; never deleted
    assert store.load("c1").turns() == good.turns()


def test_import_gives_a_fresh_id_and_refuses_garbage(tmp_path):
    store = ChatStore(tmp_path)
    original = chat("Hi", "Hello")
    imported = store.import_json(original.model_dump_json(), character="Assistant")
    assert imported.id != original.id and imported.turns() == original.turns()
    assert store.load(imported.id).turns() == original.turns()
    for garbage in (b"\xff\xfe", "[]", '{"messages": [{"id": 0}]}', "{" * 10):
        with pytest.raises(ValueError):
            store.import_json(garbage)
    assert [s.id for s in store.list()] == [imported.id]


def test_a_full_disk_gives_an_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    store = ChatStore(tmp_path)
    conversation = chat("Hi")
    store.save(conversation)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("webui.storage.os.fsync", disk_full)  # the fault, injected where the disk says it
    conversation.append("assistant", "Hello")
    with pytest.raises(OSError, match="No space left"):
        store.save(conversation)
    monkeypatch.undo()
    assert store.load("c1").turns() == [{"role": "user", "content": "Hi"}]
    assert [p.name for p in tmp_path.iterdir()] == ["c1.json"]  # no temp file left behind


SAVER = """
import sys, time
from pathlib import Path
from webui.chat.history import Conversation
from webui.chat.store import ChatStore
store = ChatStore(Path(sys.argv[1]))
conversation = Conversation(id="victim")
for i in range(400):
    conversation.append("user" if i % 2 == 0 else "assistant", "word " * 400)
print("ready", flush=True)
n = 0
while True:
    n += 1
    conversation.title = f"version {n}"
    store.save(conversation)
"""


def test_sigkill_while_saving_leaves_the_old_or_the_new_file(tmp_path):
    store = ChatStore(tmp_path)
    original = Conversation(id="victim", title="original")
    original.append("user", "first version")
    store.save(original)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    for delay in (0.05, 0.2, 0.45):
        process = subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path)], stdout=subprocess.PIPE, env=env)
        assert process.stdout.readline().strip() == b"ready"
        time.sleep(delay)  # somewhere in the middle of a save
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        loaded = ChatStore(tmp_path).load("victim")  # parses: never truncated or empty
        assert loaded.title == "original" or loaded.title.startswith("version ")
        assert loaded.messages
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".json")]
    assert leftovers == ["victim.json"]


def test_a_reply_abandoned_before_its_first_piece_is_cancelled_and_the_chat_saved(runtime, tmp_path):
    from tests.conftest import wait_for
    from webui.chat.prompt import ChatSetup
    from webui.chat.service import ReplyWriter
    from webui.generation.params import make_params

    store = ChatStore(tmp_path)
    conversation = chat("Hello there")
    writer = ReplyWriter(runtime, "abandoner", store, conversation, ChatSetup(),
                         make_params({"max_new_tokens": 4000, "ban_eos_token": True}))
    writer.close()  # as when the tab closes before the first piece arrives
    assert writer.stream._stream.request.cancel.cancelled  # the engine stops it within a step
    assert wait_for(lambda: runtime.engine.pending == 0, timeout=60)
    assert store.load("c1").turns() == [{"role": "user", "content": "Hello there"}]  # no blank reply
    assert runtime.stop("abandoner") == 0  # nothing left registered for Stop
