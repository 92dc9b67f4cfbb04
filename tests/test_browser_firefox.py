"""The chat in Firefox: Enter sends, Shift+Enter adds a line, the reply grows inside
the chat (stock Firefox over WebDriver BiDi: tests/firefox_bidi.py)."""

from __future__ import annotations


import pytest

from tests.firefox_bidi import ENTER, FIREFOX, SHIFT, Firefox
from tests.test_browser import wait_until


@pytest.fixture(scope="module")
def firefox():
    if FIREFOX is None:
        pytest.skip("Firefox is not installed: apt-get install firefox-esr")
    browser = Firefox()
    yield browser
    browser.close()


def test_firefox_enter_sends_and_the_reply_grows_in_the_chat(firefox, app_url, runtime):
    from webui.generation.params import make_params

    runtime.remember(make_params({"seed": 5, "ban_eos_token": True, "max_new_tokens": 300}))
    firefox.goto(app_url)
    assert wait_until(lambda: firefox.evaluate("!!document.querySelector('#chat-input textarea')"), 60)
    firefox.evaluate("document.querySelector('#chat-new').click()")
    assert wait_until(lambda: firefox.evaluate("document.querySelectorAll('#chatbot [data-testid=user]').length") == 0)
    firefox.evaluate("document.querySelector('#chat-input textarea').focus()")
    firefox.type("Hello fox")
    firefox.press(SHIFT, ENTER)
    firefox.type("line two")
    box = "document.querySelector('#chat-input textarea').value"
    assert firefox.evaluate(box) == "Hello fox\nline two"  # Shift+Enter added a line, sent nothing
    # Record each length of the streamed copy in the chat as it changes.
    firefox.evaluate("""(() => {
      window.__lengths = [];
      new MutationObserver(() => {
        const copy = document.querySelector('#chatbot .webui-live');
        if (copy) window.__lengths.push(copy.textContent.length);
      }).observe(document.querySelector('#chatbot'), {subtree: true, childList: true, characterData: true});
    })()""")
    firefox.press(ENTER)

    stats = "document.querySelector('#chat-stats').innerText"
    bot_text = "[...document.querySelectorAll('#chatbot [data-testid=user]')].map(e => e.innerText)"
    assert wait_until(lambda: "tokens/s" in firefox.evaluate(stats), timeout=90), (
        f"no reply's stats: {firefox.evaluate(stats)!r}; chat: {firefox.evaluate(bot_text)!r}")
    growing = sorted({n for n in firefox.evaluate("window.__lengths") if n})
    assert len(growing) >= 2, f"the reply should appear piece by piece in the chat, saw lengths {growing}"
    # Emptied by Send's first update; Firefox may apply it after later ones have landed.
    assert wait_until(lambda: firefox.evaluate(box) == "", 30), (
        f"the message box was not emptied after Send: {firefox.evaluate(box)!r}; chat: {firefox.evaluate(bot_text)!r}")
    chats = runtime.users.get(None).chats
    saved = chats.load(chats.list()[0].id)
    assert [m.content for m in saved.path()][0] == "Hello fox\nline two"
    bot = "[...document.querySelectorAll('#chatbot [data-testid=bot]')].pop().innerText"
    assert wait_until(lambda: firefox.evaluate(bot).split() == saved.path()[1].content.split())
