"""A real browser (headless Chromium via Playwright) chats with the app."""

from __future__ import annotations

import os
import re
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


@pytest.fixture(autouse=True)
def steady_sampling(runtime):
    """A page starts from the user's last used values: make them this file's own (a
    fixed seed, no end-of-text token, short replies), whatever other tests saved."""
    from webui.generation.params import make_params

    runtime.remember(make_params({"seed": 5, "ban_eos_token": True, "max_new_tokens": 60}))


def open_page(browser, app_url, **options):
    page = browser.new_page(**options)
    page.goto(app_url)
    page.locator("#chat-input textarea").wait_for()
    return page


def last_bot(page):
    return page.locator("#chatbot [data-testid=bot]").last


def finished(page) -> bool:
    return "tokens/s" in page.locator("#chat-stats").inner_text()


def record_stream(page) -> None:
    """Have the page record each length of the streamed copy in the chat as it changes
    (window.__lengths): polling from the test would miss a fast reply's pieces."""
    page.evaluate("""() => {
      window.__lengths = [];
      new MutationObserver(() => {
        const copy = document.querySelector('#chatbot .webui-live');
        if (copy) window.__lengths.push(copy.textContent.length);
      }).observe(document.querySelector('#chatbot'), {subtree: true, childList: true, characterData: true});
    }""")


def test_browser_chat_streams_a_reply_and_contacts_only_loopback(browser, app_url, runtime):
    from webui.generation.params import make_params

    # Long enough to span many updates however fast the tiny model runs.
    runtime.remember(make_params({"seed": 5, "ban_eos_token": True, "max_new_tokens": 300}))
    page = browser.new_page()
    hosts: set[str] = set()
    page.on("request", lambda r: hosts.add(urlparse(r.url).hostname or r.url.split(":")[0]))
    page.goto(app_url)
    page.locator("#chat-new").click()
    assert wait_until(lambda: page.locator("#chatbot [data-testid=user]").count() == 0)
    box = page.locator("#chat-input textarea")
    box.click()
    # Real key presses: Shift+Enter adds a line, Enter sends.
    page.keyboard.type("Hello there")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    assert box.input_value() == "Hello there\nsecond line"
    record_stream(page)
    page.keyboard.press("Enter")

    # The reply grows inside the chat, as its last message, until the stats say it ended.
    assert wait_until(lambda: finished(page), timeout=90)
    growing = sorted({n for n in page.evaluate("window.__lengths") if n})
    assert len(growing) >= 2, f"the reply should appear piece by piece in the chat, saw lengths {growing}"
    assert box.input_value() == ""
    chats = runtime.users.get(None).chats
    saved = chats.load(chats.list()[0].id)
    assert [m.content for m in saved.path()][0] == "Hello there\nsecond line"
    # When it ends, the chat's own message takes over from the streamed copy.
    assert wait_until(lambda: page.locator("#chatbot .webui-live").count() == 0)
    assert last_bot(page).inner_text().split() == saved.path()[1].content.split()
    page.close()
    assert hosts <= LOOPBACK | {"data", "blob"}, f"the page contacted {hosts - LOOPBACK}"


def test_timestamps_token_counter_and_copying_the_conversation(browser, app_url, runtime):
    from datetime import datetime

    space = runtime.users.get(None)
    conversation = space.chats.new("Assistant", "stamped")
    conversation.append("user", "when was this")
    conversation.append("assistant", "just now")
    conversation.messages[0].created = datetime(2024, 5, 6, 7, 8).timestamp()
    space.chats.save(conversation)
    space.remember_chat("Assistant", conversation.id)

    context = browser.new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(app_url)
    first = page.locator("#chatbot [data-testid=user]").first
    assert wait_until(lambda: "2024" in (first.get_attribute("title") or ""))
    assert datetime(2024, 5, 6, 7, 8).strftime("%-m/%-d/%Y") in first.get_attribute("title")

    def counted() -> tuple[int, int]:
        found = re.search(r"(\d+) / (\d+) tokens", page.locator("#chat-tokens").inner_text())
        return (int(found[1]), int(found[2])) if found else (0, 0)

    assert wait_until(lambda: counted()[0] > 0)
    before, context_length = counted()
    assert context_length == runtime.models.current.context_length
    page.locator("#chat-input textarea").fill("a few more words to count here")
    assert wait_until(lambda: counted()[0] > before)

    page.locator("#chatbot button[aria-label='Copy conversation']").click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert "when was this" in copied and "just now" in copied
    context.close()


def test_keyboard_shortcuts(browser, app_url, runtime):
    space = runtime.users.get(None)
    conversation = space.chats.new("Assistant", "shortcuts")
    conversation.append("user", "first")
    conversation.append("assistant", "an answer")
    conversation.append("user", "second")
    conversation.append("assistant", "another answer")
    space.chats.save(conversation)
    space.remember_chat("Assistant", conversation.id)
    saved = lambda: space.chats.load(conversation.id)  # noqa: E731

    page = open_page(browser, app_url)
    assert wait_until(lambda: page.locator("#chatbot [data-testid=bot]").count() == 2)
    page.locator("#chat-input textarea").click()
    page.keyboard.press("Control+Enter")  # Regenerate (not Send: the box is empty anyway)
    assert wait_until(lambda: saved().alternatives(3) == (2, 2), timeout=90)
    assert wait_until(lambda: finished(page), timeout=90)
    regenerated = saved().path()[3].content
    page.keyboard.press("Alt+Enter")  # Continue
    assert wait_until(lambda: len(saved().path()[3].content) > len(regenerated), timeout=90)
    assert wait_until(lambda: page.locator("#chatbot .webui-live").count() == 0, timeout=90)
    page.keyboard.press("Control+Shift+Backspace")  # Remove last: the last exchange
    assert wait_until(lambda: [m.content for m in saved().path()] == ["first", "an answer"])
    assert wait_until(lambda: page.locator("#chatbot [data-testid=bot]").count() == 1)
    page.close()


def test_escape_stops_a_reply(browser, app_url, runtime, monkeypatch):
    from webui.generation.params import make_params

    # A reply still going when Escape arrives, on any machine: the tiny model fills its
    # 512-token context in a fraction of a second on a fast CPU, before the key's event.
    backend = runtime.models.current.backend
    step = backend.step
    monkeypatch.setattr(backend, "step", lambda slots, tokens: (time.sleep(0.01), step(slots, tokens))[1])
    runtime.remember(make_params({"seed": 5, "ban_eos_token": True, "max_new_tokens": 2000}))
    page = open_page(browser, app_url)
    page.locator("#chat-new").click()
    page.locator("#chat-input textarea").fill("Go on for a long time")
    page.keyboard.press("Enter")
    assert wait_until(lambda: page.locator("#chatbot .webui-live").count() == 1, timeout=60)
    page.keyboard.press("Escape")
    # Stop answers, or the reply's own summary says it was cancelled (whichever shows last).
    stats = lambda: page.locator("#chat-stats").inner_text()  # noqa: E731
    assert wait_until(lambda: "Stopped." in stats() or "cancelled" in stats(), timeout=30), stats()
    assert wait_until(lambda: runtime.engine.pending == 0, timeout=60)
    chats = runtime.users.get(None).chats
    reply = lambda: chats.load(chats.list()[0].id).path()[-1]  # noqa: E731
    # What was written is kept; it was cut short, not run to its length limit.
    assert wait_until(lambda: reply().role == "assistant" and reply().content.strip())
    assert "length" not in reply().note
    page.close()


def test_theme_follows_the_system_and_the_toggle_is_remembered(browser, app_url):
    context = browser.new_context(color_scheme="dark")
    page = context.new_page()
    page.goto(app_url)
    page.locator("#chat-input textarea").wait_for()
    is_dark = lambda: page.evaluate("document.body.classList.contains('dark')")  # noqa: E731
    assert wait_until(is_dark)
    page.locator("#theme-toggle").click()
    assert wait_until(lambda: not is_dark())
    page.reload()
    page.locator("#chat-input textarea").wait_for()
    assert wait_until(lambda: page.evaluate("localStorage.getItem('webui-theme')") == "light")
    assert not is_dark()
    context.close()


def test_default_tab_writes_beside_the_prompt(browser, app_url):
    page = open_page(browser, app_url)
    page.get_by_role("tab", name="Default").click()
    page.locator("#default-input textarea").fill("In the beginning")
    page.locator("#default-generate").click()
    assert wait_until(lambda: "tokens/s" in page.locator("#default-stats").inner_text(), timeout=90)
    assert page.locator("#default-output textarea").input_value().strip()
    assert page.locator("#default-input textarea").input_value() == "In the beginning"
    page.close()


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
            link.click(modifiers=["Control"], timeout=10_000, no_wait_after=True)
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
    # A streaming reply is copied into the chat from the live box: "Start reply with"
    # puts the payload there, and it must stay inert while it streams.
    page.locator("#chat-prefix textarea").fill(PAYLOADS[0] + " " + PAYLOADS[2])
    page.locator("#chat-input textarea").fill("Repeat after me")
    page.locator("#chat-send").click()
    assert wait_until(lambda: "onerror" in page.locator("#chatbot .webui-live").all_inner_texts().__str__()
                      or finished(page), timeout=60)
    assert_inert(page, "#chatbot")
    assert wait_until(lambda: finished(page), timeout=90)
    assert_inert(page, "#chatbot")
    page.close()


def test_closing_the_tab_mid_reply_keeps_what_was_written(browser, app_url, runtime):
    from webui.generation.params import make_params

    runtime.remember(make_params({"seed": 5, "ban_eos_token": True, "max_new_tokens": 400}))  # still going
    page = open_page(browser, app_url)
    page.locator("#chat-new").click()
    page.locator("#chat-input textarea").fill("Hello there")
    record_stream(page)
    page.locator("#chat-send").click()
    assert wait_until(lambda: max(page.evaluate("window.__lengths"), default=0) > 10, timeout=60)
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


def test_editing_a_message_in_the_chat_sends_it_again_on_a_branch(browser, app_url, runtime):
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
    # Sent again, as Open WebUI does: a new reply is written on the new branch.
    def answered():
        path = space.chats.load(conversation.id).path()
        return [m.content for m in path][:1] == ["edited question"] and len(path) == 2 and "tokens/s" in path[1].note

    assert wait_until(answered, timeout=90)
    assert wait_until(lambda: finished(page) and page.locator("#chatbot .bot").count() == 1, timeout=30)
    assert page.locator("#chatbot .user").first.inner_text().strip() == "edited question"
    saved = space.chats.load(conversation.id)
    assert saved.alternatives(0) == (2, 2) and saved.path()[1].content.strip()
    saved.flip(0, -1)  # the old reply stays on the old branch
    assert [m.content for m in saved.path()] == ["original question", "an answer"]
    page.close()
