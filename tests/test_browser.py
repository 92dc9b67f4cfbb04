"""A real browser (headless Chromium via Playwright) chats with the app."""

from __future__ import annotations

import os
import shutil
import time
from urllib.parse import urlparse

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without these, Chromium phones home (updates, sync, field trials) at start.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is required for the browser tests: apt-get install chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_browser_chat_streams_a_reply_and_contacts_only_loopback(browser, app_url):
    page = browser.new_page()
    hosts: set[str] = set()
    page.on("request", lambda r: hosts.add(urlparse(r.url).hostname or r.url.split(":")[0]))
    page.goto(app_url)
    page.locator("#chat-new").click()
    page.locator("#chat-input textarea").fill("Hello there")
    page.locator("#chat-send").click()

    live = page.locator("#chat-live")
    seen_lengths: list[int] = []
    deadline = time.monotonic() + 90  # bounded: the test ends by itself
    while time.monotonic() < deadline:
        seen_lengths.append(len(live.inner_text().strip()))
        if "tokens/s" in page.locator("#chat-stats").inner_text():
            break
        time.sleep(0.05)
    assert "tokens/s" in page.locator("#chat-stats").inner_text()
    growing = sorted({n for n in seen_lengths if n > 0})
    assert len(growing) >= 2, f"the reply should appear piece by piece, saw lengths {seen_lengths[-20:]}"
    # When it ends, the reply moves into the chat, under the user's message.
    assert page.locator("#chatbot .user").last.inner_text().strip() == "Hello there"
    assert wait_until(lambda: len(page.locator("#chatbot .bot").last.inner_text().strip()) > 0)
    assert live.inner_text().strip() == ""
    page.close()
    assert hosts <= LOOPBACK | {"data", "blob"}, f"the page contacted {hosts - LOOPBACK}"


def wait_until(predicate, timeout=30.0) -> bool:
    deadline = time.monotonic() + timeout  # bounded
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


PAYLOADS = [
    '<img src=x onerror="window.__pwned = 1">',
    "<script>window.__pwned = 2</script>",
    "[click me](javascript:window.__pwned=3)",
    '<a href="javascript:window.__pwned=4">link</a>',
    '<iframe src="javascript:window.__pwned=5"></iframe>',
    "```html\n<img src=x onerror=\"window.__pwned=6\">\n```",
]


def assert_inert(page, where: str) -> None:
    area = page.locator(where)
    assert page.evaluate("window.__pwned") is None
    assert area.locator("img[onerror], script, iframe").count() == 0
    assert area.locator("a[href^='javascript' i]").count() == 0
    for link in area.locator("a").all():  # clicking what is left runs nothing either
        if link.is_visible():
            link.click(modifiers=["Control"], timeout=2000)
    assert page.evaluate("window.__pwned") is None


def test_html_and_script_in_messages_stay_inert(browser, app_url, runtime):
    chats = runtime.users.get(None).chats
    conversation = chats.new("Assistant", "injection")
    for payload in PAYLOADS:
        conversation.append("user", payload)
        conversation.append("assistant", f"You said: {payload}")
    chats.save(conversation)
    runtime.users.get(None).remember_chat("Assistant", conversation.id)

    page = browser.new_page()
    page.goto(app_url)
    assert wait_until(lambda: page.locator("#chatbot .user").count() == len(PAYLOADS))
    assert_inert(page, "#chatbot")
    # Model output streams through the live box: "Start reply with" puts the payload there.
    page.locator("#chat-prefix textarea").fill(PAYLOADS[0] + " " + PAYLOADS[2])
    page.locator("#chat-input textarea").fill("Repeat after me")
    page.locator("#chat-send").click()
    assert wait_until(lambda: "onerror" in page.locator("#chat-live").inner_text()
                      or "tokens/s" in page.locator("#chat-stats").inner_text(), timeout=60)
    assert_inert(page, "#chat-live")
    assert wait_until(lambda: "tokens/s" in page.locator("#chat-stats").inner_text(), timeout=90)
    assert_inert(page, "#chatbot")
    page.close()


def test_closing_the_tab_mid_reply_keeps_what_was_written(browser, app_url, runtime):
    page = browser.new_page()
    page.goto(app_url)
    page.locator("#chat-new").click()
    page.locator("#chat-input textarea").fill("Hello there")
    page.locator("#chat-send").click()
    assert wait_until(lambda: len(page.locator("#chat-live").inner_text().strip()) > 10, timeout=60)
    page.close()
    chats = runtime.users.get(None).chats

    def saved_reply() -> str:
        turns = chats.load(chats.list()[0].id).turns()
        return turns[-1]["content"] if len(turns) == 2 and turns[0]["content"] == "Hello there" else ""

    # Finished or stopped on the server, the reply is in the saved chat, and the model is free.
    assert wait_until(lambda: runtime.engine.pending == 0 and bool(saved_reply()), timeout=120)
    page = browser.new_page()
    page.goto(app_url)
    assert wait_until(lambda: page.locator("#chatbot .bot").count() > 0)
    assert page.locator("#chatbot .user").last.inner_text().strip() == "Hello there"
    page.close()


def test_editing_a_message_in_the_chat_starts_a_branch(browser, app_url, runtime):
    space = runtime.users.get(None)
    conversation = space.chats.new("Assistant", "edit in place")
    conversation.append("user", "original question")
    conversation.append("assistant", "an answer")
    space.chats.save(conversation)
    space.remember_chat("Assistant", conversation.id)

    page = browser.new_page()
    page.goto(app_url)
    assert wait_until(lambda: page.locator("#chatbot .user").count() == 1)
    page.locator("#chatbot .user").first.hover()
    page.locator("#chatbot button[aria-label='Edit']").first.click()
    page.locator("#chatbot textarea").first.fill("edited question")
    page.locator("#chatbot button[aria-label='Submit']").first.click()
    assert wait_until(lambda: "version 2 of 2" in page.locator("#chat-branch").inner_text())
    assert page.locator("#chatbot .user").first.inner_text().strip() == "edited question"
    assert page.locator("#chatbot .bot").count() == 0  # the old reply stays on the old branch
    saved = space.chats.load(conversation.id)
    assert [m.content for m in saved.path()] == ["edited question"]
    saved.flip(0, -1)
    assert [m.content for m in saved.path()] == ["original question", "an answer"]
    page.close()
