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
    page.locator("#chat-input textarea").fill("Hello there")
    page.locator("#chat-send").click()

    bot = page.locator("#chatbot .bot").last
    seen_lengths: list[int] = []
    deadline = time.monotonic() + 90  # bounded: the test ends by itself
    while time.monotonic() < deadline:
        if bot.count():
            seen_lengths.append(len(bot.inner_text()))
        if "tokens/s" in page.locator("#chat-stats").inner_text():
            break
        time.sleep(0.05)
    assert "tokens/s" in page.locator("#chat-stats").inner_text()
    final = len(bot.inner_text())
    growing = sorted({n for n in seen_lengths if 0 < n < final})
    assert len(growing) >= 2, f"the reply should appear piece by piece, saw lengths {seen_lengths[-20:]}"
    assert page.locator("#chatbot .user").first.inner_text().strip() == "Hello there"
    page.close()
    assert hosts <= LOOPBACK | {"data", "blob"}, f"the page contacted {hosts - LOOPBACK}"
