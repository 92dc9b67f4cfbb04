"""A group chat in a real browser (Chromium): start one from the chat tab with three
characters, name one in a message, and see that one answer, its name on the bubble."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for
from tests.test_browser import browser, finished, last_bot, open_page  # noqa: F401 - the module's Chromium
from tests.test_browser_chat_marks import name_on


@pytest.fixture()
def trio(runtime):
    from webui.chat.characters import Character

    library = runtime.users.get(None).characters
    for name in ("Ivy", "Oren", "Tamsin"):
        library.save(Character(name=name, context=f"{name} lives by the harbour.",
                               greeting="Ivy here, welcome aboard." if name == "Ivy" else ""))
    yield library
    for name in ("Ivy", "Oren", "Tamsin"):
        library.delete(name)


def pick(page, box: str, option: str) -> None:
    page.locator(f"{box} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_the_mentioned_member_of_a_group_answers_under_its_name(browser, app_url, runtime, trio):  # noqa: F811
    from webui.generation.params import make_params

    runtime.remember(make_params({"seed": 5, "ban_eos_token": True, "max_new_tokens": 8}))  # short replies
    assert wait_for(lambda: runtime.engine.pending == 0, timeout=60)  # no earlier test's reply still going
    page = open_page(browser, app_url)
    pick(page, "#chat-character", "Ivy")
    greeting = last_bot(page)
    assert wait_for(lambda: "Ivy here, welcome aboard." in greeting.inner_text())
    page.locator("#chat-group-panel").get_by_text("Group chat", exact=True).click()  # open the panel
    note = page.locator("#chat-group-note")
    assert wait_for(lambda: "A chat with Ivy alone." in note.inner_text())  # the panel shows Ivy's chat
    pick(page, "#chat-group-members", "Oren")
    pick(page, "#chat-group-members", "Tamsin")
    page.keyboard.press("Escape")
    chosen = page.locator("#chat-group-members .token")
    assert wait_for(lambda: chosen.all_inner_texts() == ["Oren", "Tamsin"] or
                    [t.strip(" ×\n") for t in chosen.all_inner_texts()] == ["Oren", "Tamsin"]), page.locator("#chat-group-panel").inner_text()[:1500]
    page.locator("#chat-group-start").click()
    assert wait_for(lambda: "Group chat: Ivy, Oren, Tamsin" in note.inner_text())
    assert wait_for(lambda: name_on(last_bot(page)) == "Ivy")  # the greeting is the host's

    page.locator("#chat-input textarea").fill("Tamsin, how is the tide tonight?")
    page.keyboard.press("Enter")
    assert wait_for(lambda: page.locator("#chatbot [data-testid=bot]").count() == 2, timeout=60)
    assert wait_for(lambda: finished(page), timeout=60)
    reply = last_bot(page)
    assert wait_for(lambda: name_on(reply) == "Tamsin")
    assert name_on(page.locator("#chatbot [data-testid=bot]").first) == "Ivy"
    chats = runtime.users.get(None).chats
    saved = chats.load(max(chats.list("Ivy"), key=lambda s: s.updated).id)
    assert saved.group.members == ["Ivy", "Oren", "Tamsin"] and saved.path()[-1].speaker == "Tamsin"
    page.close()
    chats.delete(saved.id)
