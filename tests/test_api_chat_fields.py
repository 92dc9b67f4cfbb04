"""Text Generation WebUI's chat fields on /v1/chat/completions (webui/api/chat_fields.py):
with the real openai client, `mode` and `character` give the model the very prompt the
chat tab builds for the same history; a V2 card saved as JSON in user_data/characters/
is a character; unknown characters and templates are 400s naming their field."""

from __future__ import annotations

import json

import openai
import pytest
from gradio_client import Client

from tests.conftest import API_KEY, TINY

WREN = {
    "spec": "chara_card_v2", "spec_version": "2.0",
    "data": {"name": "Wren", "description": "{{char}} keeps the lighthouse and talks to gulls.",
             "personality": "dry, patient", "scenario": "A stormy night at the lighthouse.",
             "first_mes": "Evening, {{user}}. Mind the stairs.", "mes_example": "<START>\n{{char}}: Gulls know.",
             "extensions": {"talkativeness": "0.8"}, "character_book": None, "tags": ["sea"]},
}


@pytest.fixture()
def wren(runtime):
    """A card dropped into user_data/characters/ as a JSON file, as a user would save it."""
    path = runtime.users.get(None).characters.folder / "Wren.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(WREN))
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture()
def api(api_url):
    return openai.OpenAI(base_url=api_url, api_key=API_KEY, max_retries=0, timeout=120)


def openai_messages(conversation) -> list[dict]:
    return [{"role": m.role, "content": m.content} for m in conversation.path()]


@pytest.mark.parametrize("mode", ["chat", "chat-instruct", "instruct"])
def test_the_api_gets_the_chat_tabs_prompt_for_a_character(mode, wren, prompts, api, app_url, runtime):
    from tests.test_chat_ui import steady

    client = Client(app_url, verbose=False)
    client.predict(*steady(max_new_tokens=4), api_name="/set_params")
    client.predict("Wren", api_name="/chat_character")
    client.predict("Wren", api_name="/chat_new")
    client.predict("Is the lamp lit, Wren?", who="Wren", mode_name=mode, api_name="/chat_send")
    chats = runtime.users.get(None).chats
    conversation = chats.load(max(chats.list("Wren"), key=lambda s: s.updated).id)
    tab_prompt = prompts[-1]
    assert "Wren keeps the lighthouse" in tab_prompt or mode == "instruct"

    history = openai_messages(conversation)[:-1]  # up to the user's message, as a client holds it
    assert history[0] == {"role": "assistant", "content": f"Evening, {runtime.users.get(None).persona().name}. "
                                                          "Mind the stairs."}
    api.chat.completions.create(model=TINY, messages=history, max_tokens=4,
                                extra_body={"mode": mode, "character": "Wren"})
    assert prompts[-1] == tab_prompt
    # Without the greeting the API opens the history with it, as a new chat does.
    api.chat.completions.create(model=TINY, messages=history[1:], max_tokens=4,
                                extra_body={"mode": mode, "character": "Wren"})
    assert prompts[-1] == tab_prompt


def test_chat_fields_override_the_card_and_continue_goes_on(wren, prompts, api):
    history = [{"role": "user", "content": "Hello there"}]
    reply = api.chat.completions.create(
        model=TINY, messages=history, max_tokens=4, seed=1,
        extra_body={"mode": "chat", "character": "Wren", "name1": "Ada", "name2": "Old Wren", "user_bio": "A poet.",
                    "context": "{{char}} is very old.", "greeting": "Hm."})
    prompt = prompts[-1]
    assert prompt.startswith("Old Wren is very old.\n\nOld Wren's personality: dry, patient")
    assert "About Ada: A poet." in prompt and prompt.endswith("Old Wren: Hm.\nAda: Hello there\nOld Wren:")
    assert "lighthouse and talks" not in prompt
    assert reply.choices[0].message.content is not None
    # continue: the last reply goes on, the prompt ends with its text; user_name is name1's other name.
    api.chat.completions.create(
        model=TINY, messages=[*history, {"role": "assistant", "content": "Well, well"}], max_tokens=4,
        extra_body={"mode": "chat", "character": "Wren", "user_name": "Ada", "continue": True})
    assert prompts[-1].endswith("Ada: Hello there\nWren: Well, well")
    # A group chat's speakers: an assistant message's name is its speaker's line.
    api.chat.completions.create(
        model=TINY, messages=[*history, {"role": "assistant", "content": "Caw!", "name": "Gull"}], max_tokens=4,
        extra_body={"mode": "chat", "character": "Wren"})
    assert prompts[-1].endswith("You: Hello there\nGull: Caw!\nWren:")


def test_a_json_card_in_the_characters_folder_is_listed_and_bounded(wren, runtime):
    library = runtime.users.get(None).characters
    assert "Wren" in library.names()
    character = library.load("Wren")
    assert character.name == "Wren" and character.personality == "dry, patient"
    assert character.card["data"]["extensions"] == {"talkativeness": "0.8"}
    big = library.folder / "Huge.json"
    big.write_text(json.dumps({**WREN, "data": {**WREN["data"], "description": "x" * (21 << 20)}}))
    try:
        from webui.chat.characters import CharacterError

        with pytest.raises(CharacterError, match="larger than 20 MB"):
            library.load("Huge")
    finally:
        big.unlink()


def test_unknown_names_are_400s_naming_their_field(api, runtime, wren):
    base = dict(model=TINY, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(**base, extra_body={"mode": "chat", "character": "Nobody"})
    assert caught.value.body["param"] == "character"
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(**base, extra_body={"character": "../Wren"})
    assert caught.value.body["param"] == "character"
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(**base, extra_body={"mode": "chat", "instruction_template": "none-such"})
    assert caught.value.body["param"] == "instruction_template"
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(**base, extra_body={"mode": "roleplay"})
    assert "mode" in str(caught.value)
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(**base, extra_body={"mode": "chat", "continue": True})
    assert caught.value.body["param"] == "continue"
    # Another user's character is theirs: the API (the owner's) does not see it.
    theirs = runtime.users.get("someone-else").characters
    from webui.chat.characters import Character

    theirs.save(Character(name="Secret", context="Theirs."))
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(**base, extra_body={"mode": "chat", "character": "Secret"})
    assert caught.value.body["param"] == "character"


def test_a_cards_lore_reaches_the_api_as_the_chat_tab_puts_it(wren, prompts, api, app_url, runtime):
    """Issue 34: "a client gets the same prompt (character, lore...) as the chat tab":
    a card's character_book entry fires on its key through the API too."""
    from tests.test_chat_ui import steady

    book = {"name": "Wren's lore", "entries": [
        {"keys": ["lamp"], "content": "The lamp burns whale oil and must be trimmed at midnight.", "enabled": True,
         "insertion_order": 100, "position": "after_char", "id": 1}]}
    wren.write_text(json.dumps({**WREN, "data": {**WREN["data"], "character_book": book}}))
    client = Client(app_url, verbose=False)
    client.predict(*steady(max_new_tokens=4), api_name="/set_params")
    client.predict("Wren", api_name="/chat_character")
    client.predict("Wren", api_name="/chat_new")
    client.predict("Is the lamp lit, Wren?", who="Wren", mode_name="chat", api_name="/chat_send")
    tab_prompt = prompts[-1]
    assert "trimmed at midnight" in tab_prompt
    chats = runtime.users.get(None).chats
    conversation = chats.load(max(chats.list("Wren"), key=lambda s: s.updated).id)
    api.chat.completions.create(model=TINY, messages=openai_messages(conversation)[:-1], max_tokens=4,
                                extra_body={"mode": "chat", "character": "Wren"})
    assert prompts[-1] == tab_prompt
    # No key in the history, no entry.
    api.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "Good evening."}], max_tokens=4,
                                extra_body={"mode": "chat", "character": "Wren"})
    assert "trimmed at midnight" not in prompts[-1]
