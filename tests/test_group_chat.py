"""Group chats (webui/chat/group.py) through the chat tab's own events: who speaks, the
prompt the model received for that speaker, the speaker kept on the reply, every chat
action, and the group kept with the chat."""

from __future__ import annotations

import random

import pytest
from gradio_client import Client

from webui.chat import group
from webui.chat.characters import Character
from webui.chat.history import ChatError, ChatGroup, Conversation
from webui.chat.store import ChatStore

CAST = {
    "Alice": "Alice tends the rose garden behind the inn.",
    "Bobby": "Bobby repairs clocks and speaks in short sentences.",
    "Carol": "Carol captains a river barge and loves weather talk.",
}


@pytest.fixture()
def cast(runtime):
    library = runtime.users.get(None).characters
    for name, text in CAST.items():
        library.save(Character(name=name, context=text, greeting=f"{name} waves." if name == "Alice" else ""))
    yield library
    for name in CAST:
        library.delete(name)


@pytest.fixture(autouse=True)
def default_persona(runtime):
    """The user speaks as the default persona ("You"), whatever an earlier test saved;
    that persona is put back afterwards."""
    persona = runtime.users.get(None).root / "persona.yaml"
    before = persona.read_bytes() if persona.is_file() else None
    persona.unlink(missing_ok=True)
    yield
    if before is not None:
        persona.write_bytes(before)


@pytest.fixture()
def client(app_url):
    from tests.test_chat_ui import steady

    client = Client(app_url, verbose=False)
    client.predict(*steady(max_new_tokens=4), api_name="/set_params")
    return client


def open_chat(runtime) -> Conversation:
    chats = runtime.users.get(None).chats
    return chats.load(max(chats.list("Alice"), key=lambda s: s.updated).id)


def send(client, text: str, **kw):
    return client.predict(text, who="Alice", mode_name=kw.pop("mode", "chat"), api_name="/chat_send", **kw)


def last_reply(runtime):
    return open_chat(runtime).path()[-1]


def test_natural_order_the_mentioned_character_answers_with_its_own_card(cast, prompts, client, runtime):
    client.predict("Alice", api_name="/chat_character")
    client.predict("Alice", ["Bobby", "Carol"], "natural", api_name="/chat_group_start")
    conversation = open_chat(runtime)
    assert conversation.group.members == ["Alice", "Bobby", "Carol"]
    assert conversation.path()[0].speaker == "Alice"  # the greeting
    send(client, "Carol, will it rain on the river tomorrow?")
    reply = last_reply(runtime)
    assert reply.role == "assistant" and reply.speaker == "Carol"
    prompt = prompts[-1]
    assert CAST["Carol"] in prompt and CAST["Alice"] not in prompt and CAST["Bobby"] not in prompt
    assert "Alice: Alice waves.\n" in prompt  # the other speaker's line under its own name
    assert prompt.endswith("You: Carol, will it rain on the river tomorrow?\nCarol:")

    # Regenerate and continue keep the speaker, and prompt with that speaker's card.
    client.predict(who="Alice", mode_name="chat", api_name="/chat_regenerate")
    reply = last_reply(runtime)
    assert reply.speaker == "Carol" and open_chat(runtime).alternatives(len(open_chat(runtime).path()) - 1)[1] == 2
    assert CAST["Carol"] in prompts[-1] and prompts[-1].endswith("\nCarol:")
    client.predict(who="Alice", mode_name="chat", api_name="/chat_continue")
    assert last_reply(runtime).speaker == "Carol" and last_reply(runtime).id == reply.id
    assert CAST["Carol"] in prompts[-1] and prompts[-1].endswith(f"Carol: {reply.content.strip()}")

    # A mention of another member hands the turn over; the reply does not answer itself.
    send(client, "And you, Bobby?")
    assert last_reply(runtime).speaker == "Bobby" and CAST["Bobby"] in prompts[-1]
    assert prompts[-1].endswith("\nBobby:")


def test_list_order_cycles_and_a_muted_member_never_speaks(cast, prompts, client, runtime):
    client.predict("Alice", api_name="/chat_character")
    client.predict("Alice", ["Bobby", "Carol"], "list", api_name="/chat_group_start")
    speakers = []
    for n in range(4):  # the greeting was Alice's: Bobby, Carol, Alice, Bobby
        send(client, f"Line {n}.")
        speakers.append(last_reply(runtime).speaker)
        assert prompts[-1].endswith(f"\n{speakers[-1]}:") and CAST[speakers[-1]] in prompts[-1]
    assert speakers == ["Bobby", "Carol", "Alice", "Bobby"]
    client.predict("Alice", ["Carol"], api_name="/chat_group_muted")
    assert open_chat(runtime).group.muted == ["Carol"]
    for n in range(3):
        send(client, f"More {n}.")
        speakers.append(last_reply(runtime).speaker)
    assert speakers[4:] == ["Alice", "Bobby", "Alice"]
    # Natural order too never picks a muted member, even when named.
    client.predict("Alice", "natural", api_name="/chat_group_order")
    send(client, "Carol?")
    assert last_reply(runtime).speaker != "Carol"


def test_manual_order_speak_now_and_reload_keep_the_group(cast, prompts, client, runtime, app_url):
    client.predict("Alice", api_name="/chat_character")
    client.predict("Alice", ["Bobby", "Carol"], "manual", api_name="/chat_group_start")
    refused = send(client, "Anyone?")  # manual order, no one chosen: no reply, the message withdrawn
    assert "choose who speaks next" in str(refused) and open_chat(runtime).path()[-1].speaker == "Alice"
    client.predict("Alice", "Bobby", api_name="/chat_group_next")
    send(client, "Anyone?")
    assert last_reply(runtime).speaker == "Bobby"
    # "Speak now": Carol answers Bobby, with no message of the user's between.
    client.predict("Alice", "Carol", api_name="/chat_group_next")
    client.predict(who="Alice", mode_name="chat", api_name="/chat_group_speak")
    path = open_chat(runtime).path()
    assert [m.speaker for m in path[-2:]] == ["Bobby", "Carol"]
    assert prompts[-1].endswith(f"Bobby: {path[-2].content.strip()}\nCarol:") and CAST["Carol"] in prompts[-1]
    chat_id = open_chat(runtime).id

    # Reload: a new page session opens the same chat, and the group goes on as it was kept.
    store = ChatStore(runtime.users.get(None).chats.folder)
    kept = store.load(chat_id)
    assert kept.group == ChatGroup(members=["Alice", "Bobby", "Carol"], order="manual", next="Carol")
    assert [m.speaker for m in kept.path() if m.role == "assistant"] == ["Alice", "Bobby", "Carol"]
    again = Client(app_url, verbose=False)
    from tests.conftest import page_load
    from tests.test_chat_ui import steady

    again.predict(*steady(max_new_tokens=4), api_name="/set_params")
    page_load(again)
    again.predict("Go on.", who="Alice", mode_name="chat", api_name="/chat_send")
    assert open_chat(runtime).id == chat_id and last_reply(runtime).speaker == "Carol"

    # A fork keeps the group and the speakers.
    client.predict(who="Alice", number=4, api_name="/chat_fork")  # up to Carol's reply
    fork = open_chat(runtime)
    assert fork.id != chat_id and fork.group.members == ["Alice", "Bobby", "Carol"]
    assert fork.path()[-1].speaker == "Carol"


def test_who_speaks_next_rules():
    conversation = Conversation(id="g1", character="Alice")
    conversation.append("assistant", "Hello all.", speaker="Alice")
    group.start(conversation, ["Bobby", "Carol"])
    conversation.append("user", "What do you think, carol?")
    assert group.next_speaker(conversation) == "Carol"  # any case, a word of the name
    conversation.append("assistant", "I think Carol likes it.", speaker="Carol")
    # Carol names herself: she does not answer herself; talkativeness 0 for Bobby.
    talk = {"Alice": 1.0, "Bobby": 0.0, "Carol": 1.0}.get
    assert group.next_speaker(conversation, talk, random.Random(1)) == "Alice"
    group.change(conversation, muted=["Alice", "Bobby", "Carol"])
    with pytest.raises(ChatError, match="muted"):
        group.next_speaker(conversation)
    assert group.change(conversation, members=["Alice", "Carol"]).muted == ["Alice", "Carol"]  # follows members
    with pytest.raises(ValueError, match="only a member"):
        ChatGroup(members=["A"], muted=["B"])
    assert group.mentioned("Ask BOB-by or carol", ["Bobby Tables", "Carol"]) == ["Carol"]


def test_instruct_mode_sees_the_other_members_as_named_user_turns():
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello", "name": "Bobby"},
             {"role": "assistant", "content": "Ahoy", "name": "Carol"}, {"role": "user", "content": "Well?"}]
    assert group.as_spoken_to(turns, "Carol") == [
        {"role": "user", "content": "Hi\n\nBobby: Hello"}, {"role": "assistant", "content": "Ahoy", "name": "Carol"},
        {"role": "user", "content": "Well?"}]
    plain = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    assert group.as_spoken_to(plain, "Carol") is plain
