"""A person chats with a thinking model in a real browser (headless Chromium).

The model is the tiny Qwen3 trained in a fixture to think before it answers
(tests/thinking_model.py), served by its own app; a model that does not think (the
session's tiny Llama) shows no thinking switch.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import free_port, make_settings
from tests.test_browser import browser, finished, open_page, wait_until  # noqa: F401  (the browser fixture)
from tests.thinking_model import answer_of, thinking_of
from tests.tiny_models import TEMPLATES

THINKER = "thinker"


@pytest.fixture(scope="module")
def thinking_app(thinker_root, tmp_path_factory):
    from webui.generation.params import make_params
    from webui.runtime import build_runtime
    from webui.ui.app import launch

    root = thinker_root
    data = tmp_path_factory.mktemp("thinking-ui-data")
    (data / "instruction-templates").mkdir()  # a template that does not think, to pick in the chat
    (data / "instruction-templates" / "plain.jinja").write_text((TEMPLATES / "qwen2.5-instruct.jinja").read_text())
    runtime = build_runtime(make_settings(root, data, model=THINKER))
    runtime.remember(make_params({"temperature": 0, "max_new_tokens": 80}))
    app, url = launch(runtime, block=False, port=free_port())
    yield runtime, url
    app.close()
    runtime.engine.close()


@pytest.fixture()
def slow_steps(thinking_app, monkeypatch):
    """Each decoding step slowed a little, so the reply's thinking is seen streaming on any
    machine (the tiny model writes its dozen thinking tokens in milliseconds)."""
    backend = thinking_app[0].models.current.backend
    step = backend.step
    monkeypatch.setattr(backend, "step", lambda slots, tokens: (time.sleep(0.04), step(slots, tokens))[1])


def record_thinking(page) -> None:
    """Have the page record, as the reply streams, the text of the open thinking block's
    live copy and whether an answer bubble shows beside it (window.__thinking)."""
    page.evaluate("""() => {
      window.__thinking = [];
      new MutationObserver(() => {
        const copy = document.querySelector('#chatbot .thought-group .webui-live');
        if (copy) window.__thinking.push(copy.textContent);
      }).observe(document.querySelector('#chatbot'), {subtree: true, childList: true, characterData: true});
    }""")


def last_reply(page):
    """The last reply's bubble (its thinking block and its answer share it)."""
    return page.locator("#chatbot .bot-row").last


def test_thinking_streams_then_folds_above_the_answer_and_stays_after_a_reload(thinking_app, browser, slow_steps):  # noqa: F811
    runtime, url = thinking_app
    page = open_page(browser, url)
    switch = page.locator("#chat-thinking")
    assert wait_until(lambda: switch.is_visible())  # Qwen3's template reads enable_thinking
    assert not page.locator("#chat-effort").is_visible()  # ... and no reasoning_effort
    page.locator("#chat-new").click()
    page.locator("#chat-input textarea").click()
    page.keyboard.type("Tell me about water.")
    record_thinking(page)
    page.keyboard.press("Enter")

    assert wait_until(lambda: finished(page), timeout=120), page.locator("#chat-stats").inner_text()
    seen = [t for t in page.evaluate("window.__thinking") if t.strip()]
    # The thinking streamed into the open block, piece by piece, before the answer.
    assert len(set(seen)) >= 2, seen
    assert thinking_of("water").startswith(seen[0].rstrip("▍").strip()) and seen[0].strip()
    assert page.locator("#chatbot .webui-live").count() == 0

    reply = last_reply(page)
    block = reply.locator(".thought-group")
    assert block.count() == 1
    title = block.locator(".title").inner_text()
    assert title.startswith("Thought for ") and " s · " in title and "tokens" in title, title
    # Folded above the answer: the thinking is not shown until the block is opened.
    assert answer_of("water") in reply.inner_text()
    assert thinking_of("water") not in reply.inner_text()
    above = page.evaluate("""() => {
      const row = [...document.querySelectorAll('#chatbot .bot-row')].pop();
      const block = row.querySelector('.thought-group'), answer = [...row.querySelectorAll('.message-content')].pop();
      return !!(block.compareDocumentPosition(answer) & Node.DOCUMENT_POSITION_FOLLOWING);
    }""")
    assert above
    block.locator(".title").click()
    assert wait_until(lambda: thinking_of("water") in block.inner_text())

    chats = runtime.users.get(None).chats
    saved = chats.load(chats.list()[0].id).path()[-1]
    assert (saved.reasoning, saved.content) == (thinking_of("water"), answer_of("water"))
    assert saved.reasoning_tokens > 0

    page.reload()
    page.locator("#chat-input textarea").wait_for()
    reply = last_reply(page)
    assert wait_until(lambda: reply.locator(".thought-group").count() == 1)
    assert reply.locator(".thought-group .title").inner_text() == title
    assert thinking_of("water") not in reply.inner_text()
    reply.locator(".thought-group .title").click()
    assert wait_until(lambda: thinking_of("water") in reply.locator(".thought-group").inner_text())
    assert answer_of("water") in reply.inner_text()

    # Thinking switched off: the next reply (in a new chat: the model was trained on single
    # questions) answers with no thinking block.
    switch.locator("input").uncheck()
    page.locator("#chat-new").click()
    assert wait_until(lambda: page.locator("#chatbot .bot-row").count() == 0)
    page.locator("#chat-input textarea").fill("Tell me about fire.")
    page.keyboard.press("Enter")
    assert wait_until(lambda: page.locator("#chatbot .bot-row").count() == 1, timeout=60)
    assert wait_until(lambda: finished(page) and page.locator("#chatbot .webui-live").count() == 0, timeout=120)
    saved = chats.load(chats.list()[0].id).path()[-1]
    assert saved.reasoning == "" and saved.content.strip() == answer_of("fire"), saved
    fire = last_reply(page)
    assert wait_until(lambda: answer_of("fire") in fire.inner_text()), fire.inner_text()
    assert fire.locator(".thought-group").count() == 0
    page.close()


def pick_template(page, name: str) -> None:
    page.locator("#chat-template input").click()
    page.get_by_role("option", name=name).click()


def test_the_switch_follows_the_template_in_use(thinking_app, browser):  # noqa: F811
    page = open_page(browser, thinking_app[1])
    switch = page.locator("#chat-thinking")
    assert wait_until(lambda: switch.is_visible())
    pick_template(page, "plain")  # an instruction template with no thinking in it
    assert wait_until(lambda: not switch.is_visible())
    pick_template(page, "(model's own)")
    assert wait_until(lambda: switch.is_visible())
    # The thinking budget is a parameter like the others, with its help beside it.
    page.get_by_role("tab", name="Parameters").click()
    budget = page.get_by_label("thinking_budget")
    assert wait_until(lambda: budget.is_visible())
    assert budget.input_value() == "-1"
    assert page.get_by_text("-1 = no limit, 0 = no thinking").is_visible()
    page.close()


def test_a_model_that_does_not_think_shows_no_switch(browser, app_url, runtime):  # noqa: F811
    from webui.generation.params import make_params

    runtime.remember(make_params({"seed": 5, "max_new_tokens": 8}))
    page = open_page(browser, app_url)
    page.locator("#chat-new").click()
    page.locator("#chat-input textarea").fill("Hello")
    page.keyboard.press("Enter")
    # A reply came: the chat changed, and the switches were shown or hidden for its template.
    assert wait_until(lambda: finished(page), timeout=120)
    assert wait_until(lambda: runtime.engine.pending == 0)
    time.sleep(1)
    assert not page.locator("#chat-thinking").is_visible()
    assert not page.locator("#chat-effort").is_visible()
    assert page.locator("#chatbot .thought-group").count() == 0
    page.close()


def test_a_reply_stopped_while_thinking_looks_finished(thinking_app, browser, monkeypatch):  # noqa: F811
    runtime, url = thinking_app
    backend = runtime.models.current.backend
    step = backend.step
    # Slow enough that Escape meets the reply inside its thinking on any machine.
    monkeypatch.setattr(backend, "step", lambda slots, tokens: (time.sleep(0.3), step(slots, tokens))[1])
    page = open_page(browser, url)
    page.locator("#chat-new").click()
    assert wait_until(lambda: page.locator("#chatbot .bot-row").count() == 0)
    # Thinking on (a new chat starts with the switches of the chat open before it).
    page.locator("#chat-thinking input").check()
    page.locator("#chat-input textarea").fill("Tell me about bread.")
    page.keyboard.press("Enter")
    live = page.locator("#chatbot .thought-group .webui-live")
    assert wait_until(lambda: live.count() == 1 and live.inner_text().strip() != "", timeout=60)
    page.keyboard.press("Escape")
    assert wait_until(lambda: runtime.engine.pending == 0, timeout=60)
    chats = runtime.users.get(None).chats
    saved = lambda: chats.load(chats.list()[0].id).path()[-1]  # noqa: E731
    assert wait_until(lambda: saved().role == "assistant" and saved().reasoning, timeout=30)
    assert saved().content == "" and thinking_of("bread").startswith(saved().reasoning)
    # Finished in the chat too: the block folded with its title, no spinner, no cursor.
    chat = page.locator("#chatbot")
    assert wait_until(lambda: chat.locator(".loading-spinner").count() == 0 and "▍" not in chat.inner_text()
                      and chat.locator(".webui-live").count() == 0, timeout=30), chat.inner_text()
    assert last_reply(page).locator(".thought-group .title").inner_text().startswith("Thought for ")
    page.close()


def test_the_switch_and_the_template_come_back_with_their_chat(thinking_app, browser):  # noqa: F811
    runtime, url = thinking_app
    chats = runtime.users.get(None).chats
    page = open_page(browser, url)
    switch, template = page.locator("#chat-thinking"), page.locator("#chat-template input")
    assert wait_until(lambda: switch.is_visible())

    def chat(question: str) -> str:
        page.locator("#chat-new").click()
        assert wait_until(lambda: page.locator("#chatbot .bot-row").count() == 0)
        page.locator("#chat-input textarea").fill(question)
        page.keyboard.press("Enter")
        assert wait_until(lambda: finished(page) and question in page.locator("#chatbot").inner_text(), timeout=120)
        return chats.list()[0].id

    def reopen(question: str) -> None:
        page.locator("#chat-list input").click()
        page.get_by_role("option", name=question).first.click()  # the newest of that title
        assert wait_until(lambda: page.locator("#chatbot .user").first.inner_text().strip() == question)

    pick_template(page, "(model's own)")
    switch.locator("input").uncheck()
    quiet = chat("Tell me about fire.")
    switch.locator("input").check()
    thinking = chat("Tell me about water.")
    pick_template(page, "plain")
    assert wait_until(lambda: not switch.is_visible())
    plain = chat("Tell me about stone.")

    reopen("Tell me about fire.")  # thinking off, with the model's own template
    assert wait_until(lambda: template.input_value() == "(model's own)" and switch.is_visible())
    assert wait_until(lambda: not switch.locator("input").is_checked())
    reopen("Tell me about water.")
    assert wait_until(lambda: switch.locator("input").is_checked())
    reopen("Tell me about stone.")
    assert wait_until(lambda: template.input_value() == "plain" and not switch.is_visible())
    kept = {chat_id: chats.load(chat_id).settings for chat_id in (quiet, thinking, plain)}
    assert (kept[quiet].enable_thinking, kept[thinking].enable_thinking, kept[plain].template) == (False, True, "plain")
    page.close()
    for chat_id in kept:  # the next page starts from the default switches again
        chats.delete(chat_id)
