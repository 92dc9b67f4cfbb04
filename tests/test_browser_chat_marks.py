"""Where people look in the chat, in a real browser (Chromium): who wrote each message
(names, the character's picture), its versions as ◀ 2/3 ▶ on the message itself, Stop in
Send's place only while a reply is written, and the model picker beside the chat."""

from __future__ import annotations

import io
import time

import pytest

from tests.conftest import wait_for
from tests.test_browser import browser, open_page  # noqa: F401 - the module's Chromium


@pytest.fixture()
def versions(runtime):
    """A conversation whose reply has two versions (the second shown), opened on load."""
    space = runtime.users.get(None)
    conversation = space.chats.new("Assistant", "two versions")
    conversation.append("user", "hello there")
    conversation.append("assistant", "the first answer")
    conversation.add_alternative(1, "the second answer")
    space.chats.save(conversation)
    space.remember_chat("Assistant", conversation.id)
    yield conversation
    space.chats.delete(conversation.id)


def name_on(message) -> str:
    """The name drawn on a message (CSS, from its data-webui-name: not part of its text)."""
    return message.evaluate("n => getComputedStyle(n, '::before').content").strip('"')


def test_names_and_version_arrows_are_on_the_messages(browser, app_url, runtime, versions):  # noqa: F811
    page = open_page(browser, app_url)
    user = page.locator("#chatbot [data-testid=user]").first
    reply = page.locator("#chatbot [data-testid=bot]").last
    assert wait_for(lambda: "the second answer" in reply.inner_text())
    # Who wrote what, on the message itself: the persona's name and the character's.
    assert wait_for(lambda: name_on(user) == "You")
    assert wait_for(lambda: name_on(reply) == "Assistant")
    assert user.inner_text().strip() == "hello there"  # the text itself is only the message
    # The versions where the message is: "2/2", and ◀ flips to the first one.
    assert wait_for(lambda: reply.locator(".webui-versions").count() == 1)
    assert reply.locator(".webui-versions").get_attribute("aria-label") == "version 2 of 2"
    assert user.locator(".webui-versions").count() == 0  # one version: no arrows
    reply.get_by_role("button", name="previous version").click()
    assert wait_for(lambda: "the first answer" in reply.inner_text())
    assert wait_for(lambda: reply.locator(".webui-versions").get_attribute("aria-label") == "version 1 of 2")
    saved = runtime.users.get(None).chats.load(versions.id)
    assert [m.content for m in saved.path()] == ["hello there", "the first answer"]
    reply.get_by_role("button", name="next version").click()
    assert wait_for(lambda: "the second answer" in reply.inner_text())
    page.close()


def test_the_characters_picture_is_the_replies_avatar(browser, app_url, runtime):  # noqa: F811
    from PIL import Image

    from webui.chat.characters import Character

    space = runtime.users.get(None)
    picture = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(picture, format="PNG")
    name = space.characters.save(Character(name="Painter", greeting="Hello, I paint."))
    space.characters.set_picture(name, picture.getvalue())
    try:
        page = open_page(browser, app_url)
        page.locator("#chat-character input").click()
        page.get_by_role("option", name="Painter").click()
        reply = page.locator("#chatbot [data-testid=bot]").last
        assert wait_for(lambda: "Hello, I paint." in reply.inner_text())
        avatar = page.locator("#chatbot .avatar-container img")
        assert wait_for(lambda: avatar.count() >= 1)
        assert wait_for(lambda: page.evaluate(
            "() => [...document.querySelectorAll('#chatbot .avatar-container img')].every(i => i.naturalWidth === 64)"))
        assert wait_for(lambda: name_on(reply) == "Painter")
        page.close()
    finally:
        space.characters.delete(name)


def test_stop_takes_sends_place_only_while_a_reply_is_written(browser, app_url, runtime, monkeypatch):  # noqa: F811
    from webui.generation.params import make_params

    # A reply still going while the test looks, on any machine: 50 ms a step (the demo
    # model's context ends a reply after some 450 tokens; at 10 ms a step a busy CI run saw
    # it end before Stop was clicked).
    backend = runtime.models.current.backend
    step = backend.step
    monkeypatch.setattr(backend, "step", lambda slots, tokens: (time.sleep(0.05), step(slots, tokens))[1])
    runtime.remember(make_params({"seed": 5, "ban_eos_token": True, "max_new_tokens": 2000}))
    assert wait_for(lambda: runtime.engine.pending == 0, timeout=60)  # no earlier test's reply still going
    page = open_page(browser, app_url)
    page.locator("#chat-new").click()
    send, stop = page.locator("#chat-send"), page.locator("#chat-stop")
    assert wait_for(lambda: send.is_visible() and not stop.is_visible())  # nothing runs: no Stop
    page.locator("#chat-input textarea").fill("Go on for a long time")
    page.keyboard.press("Enter")
    assert wait_for(lambda: stop.is_visible() and not send.is_visible(), timeout=60)
    # In Send's place: beside the message box, where Send was.
    box = page.locator("#chat-input").bounding_box()
    where = stop.bounding_box()
    assert where["y"] < box["y"] + box["height"] and where["y"] + where["height"] > box["y"]
    assert where["x"] >= box["x"] + box["width"] - 1
    stop.click()
    assert wait_for(lambda: send.is_visible() and not stop.is_visible(), timeout=60)
    assert wait_for(lambda: runtime.engine.pending == 0, timeout=60)
    page.close()


def test_the_model_picker_beside_the_chat_shows_the_model_that_answers(browser, app_url, runtime):  # noqa: F811
    page = open_page(browser, app_url)
    picker = page.locator("#chat-model input")
    assert wait_for(lambda: picker.input_value() == runtime.models.current.name)
    page.close()
