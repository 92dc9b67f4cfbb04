"""Every chat action through the real app with gradio_client, and what lands on disk."""

from __future__ import annotations

import json
import time

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.conftest import free_port, make_settings, page_load, wait_for
from tests.test_characters import V3_CARD, card_png
from webui.chat.cards import read_card
from webui.ui.chat_tab import CURSOR

# Visible outputs of the streaming chat events and of the events that show a chat.
CHATBOT, LIVE, STATS, INPUT, CHATS = range(5)
V_CHATBOT, V_CHATS, V_TITLE, V_BRANCH, V_STATS, V_PICKED = range(6)


def texts(chat) -> list[str]:
    return ["".join(part.get("text", "") for part in m["content"]) for m in chat]


def steady(**changes):
    """Sampling values for this file's sessions: a fixed seed and no end-of-text token,
    so no reply comes out empty (an empty one is not kept) or differs between runs;
    short replies keep the suite quick.  Set per client session, whatever another test
    left in settings.yaml."""
    from tests.test_app_client import controls

    return controls(**{"max_new_tokens": 40, "ban_eos_token": True, "seed": 11, **changes})


@pytest.fixture()
def client(app_url):
    client = Client(app_url, verbose=False)
    client.predict(*steady(), api_name="/set_params")
    return client


@pytest.fixture()
def chats(runtime):
    return runtime.users.get(None).chats


def newest(chats):
    return chats.load(chats.list()[0].id)


def send(client, text, **options):
    return client.predict(text, api_name="/chat_send", **options)


def test_send_streams_into_the_live_box_and_saves_the_chat(client, chats):
    # Long enough to span many 20 ms updates even when the tiny model is at its fastest.
    client.predict(*steady(max_new_tokens=300), api_name="/set_params")
    job = client.submit("Hello there", api_name="/chat_send")
    outputs = list(job)
    final = job.outputs()[-1]
    live = [o[LIVE] for o in outputs if isinstance(o[LIVE], str) and o[LIVE]]
    assert len(set(live)) > 3, "the reply should arrive in several pieces"
    assert all(b.startswith(a) for a, b in zip(live, live[1:], strict=False))
    # Meanwhile the chat holds the reply's bubble, which the page fills from the live box.
    # (an output the event did not change comes back as a bare update, not a list)
    streaming = [texts(o[CHATBOT]) for o in outputs[:-1] if isinstance(o[CHATBOT], list)]
    assert streaming and all(chat == ["Hello there", CURSOR] for chat in streaming)
    chat = texts(final[CHATBOT])
    assert chat[0] == "Hello there" and chat[1].split() == live[-1].split()
    # The input box was cleared (it takes images too: its value is {"text", "files"}).
    assert final[LIVE] == "" and any(o[INPUT] == {"text": "", "files": []} for o in outputs)
    assert "tokens/s" in final[STATS] and "tokens that fit beside the reply" in final[STATS]
    saved = newest(chats)
    assert saved.turns()[0]["content"] == "Hello there"
    assert saved.turns()[1]["content"].split() == chat[1].split()  # (the Chatbot may trim spaces)
    assert saved.title == "Hello there"
    assert "tokens/s" in saved.path()[1].note


def test_regenerate_keeps_versions_and_flips_between_them(client, chats):
    first = texts(send(client, "Say something")[CHATBOT])
    client.predict(api_name="/chat_regenerate")
    saved = newest(chats)
    assert [m.role for m in saved.path()] == ["user", "assistant"]
    assert saved.alternatives(1) == (2, 2)
    shown = client.predict(number=0, api_name="/chat_previous_version")
    assert texts(shown[V_CHATBOT]) == first and "version 1 of 2" in shown[V_BRANCH]
    shown = client.predict(number=0, api_name="/chat_next_version")
    assert "version 2 of 2" in shown[V_BRANCH]


def test_continue_extends_the_last_reply(client, chats):
    send(client, "Begin a list", start_with="One,")
    before = newest(chats).path()[-1].content
    assert before.startswith("One,")
    client.predict(api_name="/chat_continue")
    after = newest(chats).path()[-1]
    # End of text is banned: Continue must add text, not merely keep the reply.
    assert after.content.startswith(before) and len(after.content) > len(before)
    assert "40 tokens" in after.note  # the note is the continuation's own
    assert len(newest(chats).messages) == 2  # continued in place, not a new message


def test_continue_on_a_reply_the_model_ends_says_nothing_was_added(client, chats, runtime):
    from webui.ui.parameters_tab import to_control

    send(client, "Begin a list", start_with="One,")
    before = newest(chats).path()[-1].content
    # The model's next token is now its end of text, whatever the reply so far.
    eos = runtime.models.current.tokenizer.eos_token_id
    bias = to_control("logit_bias", "bias", {str(eos): 100.0})
    client.predict(*steady(ban_eos_token=False, logit_bias=bias), api_name="/set_params")
    shown = client.predict(api_name="/chat_continue")
    after = newest(chats).path()[-1]
    assert after.content == before and len(newest(chats).messages) == 2
    assert "Nothing added" in shown[STATS] and "1 tokens" not in shown[STATS]


def test_impersonate_writes_the_users_next_message_without_saving(client, chats):
    send(client, "Hello")
    count = len(newest(chats).messages)
    text, note = client.predict(api_name="/chat_impersonate")
    assert text and "Impersonated" in note
    assert len(newest(chats).messages) == count


def test_edit_an_earlier_message_branches_and_keeps_the_old_one(client, chats):
    send(client, "First question")
    send(client, "Second question")
    shown = client.predict(number=1, text="Edited first question", api_name="/chat_edit_message")
    assert texts(shown[V_CHATBOT]) == ["Edited first question"]
    back = client.predict(number=1, api_name="/chat_previous_version")
    assert texts(back[V_CHATBOT])[0] == "First question" and len(back[V_CHATBOT]) == 4
    assert len(newest(chats).messages) == 5


def test_remove_last_and_fork(client, chats):
    send(client, "Keep me")
    send(client, "Remove me")
    shown = client.predict(api_name="/chat_remove_last")
    assert texts(shown[V_CHATBOT])[0] == "Keep me" and len(shown[V_CHATBOT]) == 2
    original = newest(chats).id
    forked = client.predict(number=1, api_name="/chat_fork")
    assert texts(forked[V_CHATBOT]) == ["Keep me"] and "(fork)" in forked[V_TITLE]
    assert newest(chats).id != original and len(chats.load(original).path()) == 2


def test_new_rename_search_open_delete(client, chats):
    send(client, "Zebra stripes")
    zebra = newest(chats).id
    client.predict(api_name="/chat_new")
    send(client, "Walrus tusks")
    walrus = newest(chats).id
    renamed = client.predict(new_title="Walrus notes", api_name="/chat_rename")
    assert renamed[V_TITLE] == "Walrus notes"
    found = client.predict(query="zebra", api_name="/chat_search")
    assert [value for _, value in found["choices"]] == [zebra]
    opened = client.predict(chat=zebra, api_name="/chat_open")
    assert texts(opened[V_CHATBOT])[0] == "Zebra stripes"
    client.predict(api_name="/chat_delete")
    assert zebra not in {s.id for s in chats.list()} and walrus in {s.id for s in chats.list()}


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/hosts", "..%2f..%2fx", "a/../../b", "x\0y", "", "a" * 300])
def test_hostile_names_are_refused(client, name):
    for endpoint in ("/chat_open", "/chat_character"):
        with pytest.raises(AppError, match="unknown|invalid"):
            client.predict(name, api_name=endpoint)
    if name:  # an empty template name means the model's own
        with pytest.raises(AppError, match="unknown"):
            client.predict("hi", template_name=name, api_name="/chat_send")


def test_export_and_import_a_conversation(client, chats, tmp_path):
    send(client, "Export me")
    exported = client.predict(api_name="/chat_export")
    data = json.loads(open(exported["value"] if isinstance(exported, dict) else exported).read())
    assert data["format"] == "webui-chat" and data["messages"][0]["content"] == "Export me"
    target = tmp_path / "..evil name.json"  # the upload's own name never matters
    target.write_text(json.dumps(data))
    shown = client.predict(file=handle_file(str(target)), api_name="/chat_import")
    assert texts(shown[V_CHATBOT])[0] == "Export me"
    assert newest(chats).id != data["id"]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AppError, match="import failed"):
        client.predict(file=handle_file(str(bad)), api_name="/chat_import")


def test_modes_characters_and_persona(client, runtime, chats):
    client.predict(handle_file(str(write_card(runtime))), api_name="/character_import")
    opened = client.predict("Seraphina V3", api_name="/chat_character")
    assert texts(opened[V_CHATBOT]) == ["Welcome, You."]  # the greeting, {{user}} filled in
    client.predict("Bo", "A sailor.", api_name="/persona_save")
    client.predict("Seraphina V3", 1, api_name="/chat_next_version")  # an alternate greeting
    out = send(client, "Who are you?", who="Seraphina V3", mode_name="chat")
    assert "tokens/s" in out[STATS]
    saved = newest(chats)
    assert saved.character == "Seraphina V3" and saved.alternatives(0) == (2, 3)
    assert saved.path()[0].content == "Oh, Bo! You are awake."  # the second greeting, with Bo's name
    out = send(client, "And now?", who="Seraphina V3", mode_name="chat-instruct")
    assert "tokens/s" in out[STATS]
    client.predict("You", "", api_name="/persona_save")


def write_card(runtime):
    path = runtime.settings.user_data_dir.parent / f"card-{time.monotonic_ns()}.png"
    path.write_bytes(card_png(ccv3=V3_CARD))
    return path


def test_context_overflow_drops_oldest_messages_and_says_so(client, chats):
    # Every reply non-empty (an empty one is not kept), so the chat holds all twelve messages.
    client.predict(*steady(truncation_length=96, max_new_tokens=16, seed=7), api_name="/set_params")
    out = None
    for i in range(6):
        out = send(client, f"message number {i} with several words to fill the context window")
    assert "oldest" in out[STATS] and "left out" in out[STATS]
    assert len(newest(chats).path()) == 12  # the chat itself keeps everything


def test_a_closed_tab_mid_reply_still_saves_what_was_written(app_url, runtime, chats):
    client = Client(app_url, verbose=False)
    client.predict(*steady(max_new_tokens=400), api_name="/set_params")
    job = client.submit("Write at length", api_name="/chat_send")
    assert wait_for(lambda: any(isinstance(o[LIVE], str) and len(o[LIVE]) > 20 for o in job.outputs()))
    job.cancel()
    # The reply is stopped or finishes on the server, and lands in the saved chat.
    assert wait_for(lambda: runtime.engine.pending == 0, timeout=120)
    assert wait_for(lambda: len(newest(chats).path()) == 2 and newest(chats).path()[1].content)
    assert newest(chats).turns()[0]["content"] == "Write at length"


def test_chats_survive_a_restart(client, runtime, models_root, chats):
    from webui.runtime import build_runtime
    from webui.ui.app import launch

    send(client, "Remember this after a restart")
    saved = newest(chats)
    settings = make_settings(models_root, runtime.settings.user_data_dir)
    second = build_runtime(settings)
    app, url = launch(second, block=False, port=free_port())
    try:
        fresh = Client(url, verbose=False)
        loaded = page_load(fresh)
        # (the Chatbot trims surrounding whitespace of what it shows)
        assert [t.strip() for t in texts(loaded["chatbot"])] == [m["content"].strip() for m in saved.turns()]
    finally:
        app.close()


def test_character_create_edit_picture_export_delete_through_the_ui(client, runtime, tmp_path):
    from tests.test_characters import png

    picture = tmp_path / "face.png"
    picture.write_bytes(png(40, 60))
    saved = client.predict(
        "Assistant", "Maren", "{{char}} keeps the lighthouse.", "calm", "A stormy night.", "Ahoy, {{user}}!",
        "Back again?\n---\nMind the stairs.", "", "", handle_file(str(picture)), api_name="/character_save",
    )
    assert "Saved Maren" in saved[-1]
    library = runtime.users.get(None).characters
    maren = library.load("Maren")
    assert maren.alternate_greetings == ["Back again?", "Mind the stairs."]
    assert library.picture("Maren") is not None
    opened = client.predict("Maren", api_name="/character_open")
    assert opened[2] == "{{char}} keeps the lighthouse." and opened[9] is not None  # picture shown
    chat = client.predict("Maren", api_name="/chat_character")
    assert texts(chat[V_CHATBOT]) == ["Ahoy, You!"]
    exported = client.predict("Maren", api_name="/character_export_png")
    card = read_card(open(exported["value"] if isinstance(exported, dict) else exported, "rb").read())
    assert card["data"]["name"] == "Maren" and card["data"]["alternate_greetings"][1] == "Mind the stairs."
    with pytest.raises(AppError, match="built in"):
        client.predict("Assistant", api_name="/character_delete")
    client.predict("Maren", api_name="/character_delete")
    assert "Maren" not in library.names()


def test_a_long_chat_is_not_resent_to_the_chatbot_per_piece(client, chats, monkeypatch):
    """README: a 500-message chat streams as fast as an empty one, because the history
    goes to the Chatbot when a reply starts and ends, never per piece."""
    import gradio as gr

    long_chat = chats.new("Assistant", "long")
    for i in range(200):
        long_chat.append("user" if i % 2 == 0 else "assistant", f"message {i}")
    chats.save(long_chat)
    client.predict(chat=long_chat.id, api_name="/chat_open")
    client.predict(*steady(max_new_tokens=200), api_name="/set_params")
    sent: list[int] = []
    postprocess = gr.Chatbot.postprocess

    def counting(self, value):
        if self.elem_id == "chatbot" and value and len(value) > 200:
            sent.append(len(value))
        return postprocess(self, value)

    monkeypatch.setattr(gr.Chatbot, "postprocess", counting)
    job = client.submit("One more", api_name="/chat_send")
    outputs = list(job)
    pieces = {o[LIVE] for o in outputs if isinstance(o[LIVE], str) and o[LIVE]}
    assert len(pieces) > 3, "the reply should arrive in several pieces"
    assert len(sent) == 2, f"the history went to the Chatbot {len(sent)} times for {len(pieces)} pieces"
    assert texts(job.outputs()[-1][CHATBOT])[-2] == "One more"


def test_two_browser_sessions_chat_at_once_in_one_batch(app_url, runtime, chats):
    """Gradio hands both tabs' requests to the engine, which decodes them together."""
    from tests.test_app_client import controls

    clients = [Client(app_url, verbose=False) for _ in range(2)]
    for client in clients:
        client.predict(*controls(max_new_tokens=400, ban_eos_token=True, seed=3), api_name="/set_params")
    most = 0

    def peak() -> bool:
        nonlocal most
        most = max(most, runtime.engine.running)
        return most >= 2

    jobs = [client.submit(f"Tell me about the sea, part {i}", api_name="/chat_send") for i, client in enumerate(clients)]
    assert wait_for(peak, timeout=120), "the second tab's reply waited for the first to finish"
    for job in jobs:
        job.result()
    assert all("tokens/s" in job.outputs()[-1][STATS] for job in jobs)
