"""Small things a newcomer met in the chat, in a real browser (Chromium): the Chatbot's
trash icon that only emptied the view, the message box below the fold at phone width,
the exported file's name cut to ".js"."""

from __future__ import annotations

from tests.conftest import wait_for
from tests.test_browser import browser, finished, open_page  # noqa: F401 - the module's Chromium

PHONE = {"width": 390, "height": 844}


def send(page, text: str) -> None:
    page.locator("#chat-input textarea").click()
    page.keyboard.type(text)
    page.keyboard.press("Enter")
    assert wait_for(lambda: finished(page), timeout=300), page.locator("#chat-stats").inner_text()


def test_the_chat_shows_no_trash_icon_that_deletes_nothing(browser, app_url):  # noqa: F811 - the fixture
    page = open_page(browser, app_url)
    page.get_by_role("button", name="New chat", exact=True).click()
    send(page, "Keep this one")
    toolbar_clear = page.locator('#chatbot button[aria-label="Clear"]')
    assert toolbar_clear.count() >= 1  # Gradio still renders it: the page hides it
    assert not toolbar_clear.first.is_visible()
    # The chat's own controls say what they do.
    page.get_by_text("Manage conversation").click()
    assert page.locator("#chat-new").is_visible() and page.locator("#chat-delete").is_visible()
    page.close()


def test_at_phone_width_the_message_box_is_on_the_first_screen(browser, app_url):  # noqa: F811
    page = open_page(browser, app_url, viewport=PHONE)
    box = page.locator("#chat-input textarea").bounding_box()
    assert box is not None
    assert 0 <= box["y"] and box["y"] + box["height"] <= PHONE["height"], box
    # The conversations list comes after the chat, not before it.
    assert page.locator("#chat-new").bounding_box()["y"] > box["y"]
    page.close()


def test_the_exported_files_whole_name_is_shown(browser, app_url, runtime):  # noqa: F811
    page = open_page(browser, app_url)
    page.get_by_role("button", name="New chat", exact=True).click()
    send(page, "Export me")
    page.get_by_text("Manage conversation").click()
    page.get_by_role("button", name="Export JSON", exact=True).click()
    name = page.locator("#chat-exported td.filename")
    assert wait_for(lambda: name.count() and name.inner_text().strip().endswith(".json"), timeout=30)
    shown = "".join(name.inner_text().split())  # the name and its extension may wrap apart
    chat_id = runtime.users.get(None).chats.list()[0].id
    assert shown == f"chat-{chat_id}.json"
    # All of it visible, not cut with an ellipsis: no part is wider than the room it has.
    cut = page.locator("#chat-exported td.filename, #chat-exported td.filename span").evaluate_all(
        "els => els.filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.className)")
    assert cut == []
    page.close()
