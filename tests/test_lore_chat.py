"""Lore in real chats: a card's character_book, a user's own lorebooks, the author's note,
and the prompt inspector, through the app's own endpoints with the tiny model."""

from __future__ import annotations

import json

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.conftest import free_port, make_settings
from tests.test_characters import V2_CARD
from tests.test_lore import ST_BOOK

ANN, BOB = ("ann", "ann-pass-1"), ("bob", "bob-pass-2")


@pytest.fixture(scope="module")
def app(models_root, tmp_path_factory):
    from webui.runtime import build_runtime
    from webui.ui.app import launch

    user_data = tmp_path_factory.mktemp("lore_user_data")
    runtime = build_runtime(make_settings(models_root, user_data,
                                          gradio_auth=f"{ANN[0]}:{ANN[1]},{BOB[0]}:{BOB[1]}"))
    app, url = launch(runtime, block=False, port=free_port())
    yield runtime, url
    app.close()


def client_for(url, auth) -> Client:
    from tests.test_app_client import controls

    client = Client(url, auth=auth, verbose=False)
    client.predict(*controls(max_new_tokens=4, seed=3, ban_eos_token=True), api_name="/set_params")
    return client


def last_prompt(runtime, user: str) -> str:
    """The prompt of the newest chat's last reply, as the engine was given it."""
    from webui.chat import last_prompt as kept

    space = runtime.users.get(user)
    newest = max(space.chats.list(), key=lambda s: s.updated)
    info = kept.last(space.chats.folder, newest.id)
    return info.text if info else ""


def test_a_v2_cards_character_book_triggers_its_entry_in_a_real_reply(app, tmp_path):
    runtime, url = app
    ann = client_for(url, ANN)
    card = tmp_path / "seraphina.json"
    card.write_text(json.dumps(V2_CARD))
    ann.predict(handle_file(str(card)), api_name="/character_import")
    ann.predict("Seraphina", api_name="/chat_character")
    ann.predict("Is the glade safe tonight?", who="Seraphina", mode_name="chat", api_name="/chat_send")
    prompt = last_prompt(runtime, "ann")
    # The book's entry goes before the character's text (V2's default position).
    assert prompt.startswith("A sacred place.\n\nSeraphina is a forest guardian"), prompt[:200]
    shown = ann.predict(api_name="/prompt_inspect")
    assert '<mark class="pi-lore"' in shown and ">A sacred place.</mark>" in shown
    assert "Lore entry: 1 (" in shown
    # A message without the key: no entry.
    ann.predict("Tell me a story", who="Seraphina", mode_name="chat", api_name="/chat_send")
    assert "A sacred place." not in last_prompt(runtime, "ann")


def test_each_user_has_their_own_lorebooks(app, tmp_path):
    runtime, url = app
    ann, bob = client_for(url, ANN), client_for(url, BOB)
    book = tmp_path / "Coast.json"
    raw = json.dumps(ST_BOOK, indent=1).encode()
    book.write_bytes(raw)
    imported = ann.predict(handle_file(str(book)), api_name="/lorebook_import")
    assert imported[0]["value"] == "Coast" and "Imported **Coast** (2 entries)" in imported[-1]
    assert "is used in: all chats" in ann.predict("Coast", ["all chats"], api_name="/lorebook_attach")
    assert runtime.users.get("ann").lorebooks.export("Coast") == raw
    assert runtime.users.get("bob").lorebooks.names() == []
    with pytest.raises(AppError, match="unknown lorebook: Coast"):  # Ann's book, named: not Bob's
        bob.predict("Coast", api_name="/lorebook_open")
    assert bob.predict(None, api_name="/lorebook_open")[0]["choices"] == []
    with pytest.raises(AppError, match="unknown lorebook|Coast"):
        bob.predict("Coast", api_name="/lorebook_export")
    with pytest.raises(AppError):
        bob.predict("Coast", ["all chats"], api_name="/lorebook_attach")
    bob.predict("Assistant", api_name="/chat_new")
    bob.predict("Is the lighthouse lit?", api_name="/chat_send")
    assert "stood for a century" not in last_prompt(runtime, "bob")
    ann.predict("Assistant", api_name="/chat_new")
    ann.predict("Is the lighthouse lit?", api_name="/chat_send")
    assert "The lighthouse has stood for a century." in last_prompt(runtime, "ann")
    exported = ann.predict("Coast", api_name="/lorebook_export")
    with open(exported["value"] if isinstance(exported, dict) else exported, "rb") as handle:
        assert handle.read() == raw  # unchanged
    ann.predict("Coast", [], api_name="/lorebook_attach")


def test_the_authors_note_is_kept_with_the_chat_and_marked(app):
    runtime, url = app
    ann = client_for(url, ANN)
    ann.predict("Assistant", api_name="/chat_new")
    ann.predict("Hello", api_name="/chat_send")
    assert "Saved with this chat." in ann.predict("Assistant", "Speak like a pirate.", 0, 1, "system",
                                                  api_name="/authors_note_save")
    ann.predict("And now?", api_name="/chat_send")
    prompt = last_prompt(runtime, "ann")
    # Depth 0: after the last message, as a system message (ChatML-like tiny template or not).
    assert prompt.index("And now?") < prompt.index("Speak like a pirate.")
    space = runtime.users.get("ann")
    newest = space.chats.load(max(space.chats.list(), key=lambda s: s.updated).id)
    assert newest.lore.note.text == "Speak like a pirate." and newest.lore.note.depth == 0
    assert '<mark class="pi-note"' in ann.predict(api_name="/prompt_inspect")


def test_a_sticky_entry_stays_in_the_next_replies_and_is_kept_with_the_chat(app, tmp_path):
    runtime, url = app
    ann = client_for(url, ANN)
    book = tmp_path / "Weather.json"
    book.write_text(json.dumps({"entries": {"0": {"uid": 0, "key": ["storm"], "content": "A storm rages outside.",
                                                  "sticky": 2, "comment": "Storm"}}}))
    ann.predict(handle_file(str(book)), api_name="/lorebook_import")
    ann.predict("Weather", ["all chats"], api_name="/lorebook_attach")
    try:
        ann.predict("Assistant", api_name="/chat_new")
        ann.predict("A storm is coming", api_name="/chat_send")  # 1 message (no greeting): in, sticky to 3
        assert "A storm rages outside." in last_prompt(runtime, "ann")
        space = runtime.users.get("ann")
        chat = space.chats.load(max(space.chats.list(), key=lambda s: s.updated).id)
        assert chat.lore.timed["Weather/0"].model_dump() == {"start": 1, "sticky": 2, "cooldown": 0}
        ann.predict("Close the shutters", api_name="/chat_send")  # 3 messages: still in, by sticky
        assert "A storm rages outside." in last_prompt(runtime, "ann")
        assert "Storm (sticky)" in ann.predict(api_name="/prompt_inspect")
        ann.predict("Is it over?", api_name="/chat_send")  # 5 messages: out
        assert "A storm rages outside." not in last_prompt(runtime, "ann")
    finally:
        ann.predict("Weather", api_name="/lorebook_delete")
