"""The chat as a person uses it, in real Chromium (issue 31): searching then leaving the
list, an error shown in the chat with no half turn kept, an edit sent again, typed HTML
shown as typed, and a conversation's mode brought back when it is reopened."""

from __future__ import annotations

from urllib.parse import urlparse

from tests.conftest import TINY
from tests.test_browser import browser, finished, open_page, steady_sampling, wait_until  # noqa: F401

# Records every toast and every component's error badge the page shows (window.__problems),
# however briefly: a test then asks whether any appeared at all.
WATCH_PROBLEMS = """() => {
  window.__problems = [];
  const look = () => document.querySelectorAll('.toast-body, [data-testid=toast-body], .error').forEach((node) => {
    const text = node.textContent.trim();
    if (text && !window.__problems.includes(text)) window.__problems.push(text);
  });
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def seeded(runtime, title: str, *texts: str, remember: bool = True):
    """A saved conversation of the default character with these messages (user first)."""
    space = runtime.users.get(None)
    conversation = space.chats.new("Assistant", title)
    for i, text in enumerate(texts):
        conversation.append("user" if i % 2 == 0 else "assistant", text)
    space.chats.save(conversation)
    if remember:
        space.remember_chat("Assistant", conversation.id)
    return conversation


def user_bubbles(page) -> list[str]:
    return [t.strip() for t in page.locator("#chatbot [data-testid=user]").all_inner_texts()]


def bot_bubbles(page) -> list[str]:
    return [t.strip() for t in page.locator("#chatbot [data-testid=bot]").all_inner_texts()]


def type_and_send(page, text: str) -> None:
    page.locator("#chat-input textarea").click()
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def test_search_then_leaving_the_list_keeps_the_chat_working(browser, app_url, runtime):  # noqa: F811
    chats = runtime.users.get(None).chats
    seeded(runtime, "apples chat", "I like apples", "Apples are red.", remember=False)
    pears = seeded(runtime, "pears chat", "pears please", "Pears are green.")
    page = open_page(browser, app_url)
    assert wait_until(lambda: "pears please" in user_bubbles(page))
    page.evaluate(WATCH_PROBLEMS)
    listed = page.locator("#chat-list input")
    assert wait_until(lambda: "pears chat" in listed.input_value())

    # Search for the other chat: the open one is no longer listed.
    page.locator("#chat-search textarea, #chat-search input").first.click()
    page.keyboard.type("apples")
    assert wait_until(lambda: listed.input_value() == "")
    listed.click()  # open the list...
    assert wait_until(lambda: page.get_by_role("option", name="apples chat").count() > 0 or
                      page.locator("#chat-list li", has_text="apples chat").count() > 0)
    page.locator("body").click(position={"x": 3, "y": 3})  # ...and click away without picking

    # The open chat still works: a message sent now is answered in it.
    type_and_send(page, "still here?")
    assert wait_until(lambda: finished(page) and "still here?" in user_bubbles(page), timeout=90)
    assert page.evaluate("window.__problems") == []
    assert [m.content for m in chats.load(pears.id).path()][:3] == ["pears please", "Pears are green.", "still here?"]
    assert user_bubbles(page)[0] == "pears please"
    page.close()


def test_an_error_shows_in_the_chat_and_leaves_no_half_turn(browser, app_url, runtime):  # noqa: F811
    chats = runtime.users.get(None).chats
    page = open_page(browser, app_url)
    page.locator("#chat-new").click()
    assert wait_until(lambda: page.locator("#chatbot [data-testid=user]").count() == 0)
    before = {s.id for s in chats.list()}
    runtime.models.unload()
    try:
        type_and_send(page, "hello orphan")
        # The error is in the chat, where the reply would be, under the message that was not sent.
        assert wait_until(lambda: any("no model is loaded" in t for t in bot_bubbles(page)), timeout=30)
        assert user_bubbles(page)[-1] == "hello orphan"
        assert "not sent" in bot_bubbles(page)[-1]
        # Nothing half was kept, and the text is still there to send again.
        assert page.locator("#chat-input textarea").input_value() == "hello orphan"
        assert {s.id for s in chats.list()} == before
    finally:
        runtime.models.load(TINY)
    page.locator("#chat-input textarea").click()
    page.keyboard.press("Enter")  # the same text, now that a model is loaded
    assert wait_until(lambda: finished(page), timeout=90)
    saved = chats.load(chats.list()[0].id)
    assert [m.role for m in saved.path()] == ["user", "assistant"]
    assert saved.path()[0].content == "hello orphan" and len(saved.messages) == 2
    assert user_bubbles(page) == ["hello orphan"]
    assert not any("Error" in t for t in bot_bubbles(page))
    page.close()


def test_editing_in_the_accordion_sends_the_message_again(browser, app_url, runtime):  # noqa: F811
    chats = runtime.users.get(None).chats
    conversation = seeded(runtime, "accordion edit", "first question", "a first answer")
    page = open_page(browser, app_url)
    assert wait_until(lambda: user_bubbles(page) == ["first question"])
    page.locator("#chatbot [data-testid=user]").first.click()  # picks the message to edit
    edit_box = page.locator("#chat-edit-text textarea")
    page.get_by_text("Edit a message").click()
    assert wait_until(lambda: edit_box.input_value() == "first question")
    edit_box.fill("second try at the question")
    page.locator("#chat-edit-save").click()

    def answered():
        path = chats.load(conversation.id).path()
        return [m.role for m in path] == ["user", "assistant"] and path[0].content == "second try at the question" \
            and "tokens/s" in path[1].note

    assert wait_until(answered, timeout=90)
    assert wait_until(lambda: finished(page) and len(bot_bubbles(page)) == 1 and bot_bubbles(page)[0]
                      and user_bubbles(page) == ["second try at the question"], timeout=30)
    saved = chats.load(conversation.id)
    saved.flip(0, -1)  # the old branch is kept
    assert [m.content for m in saved.path()] == ["first question", "a first answer"]
    page.close()


def test_typed_html_is_shown_as_typed(browser, app_url, runtime):  # noqa: F811
    page = open_page(browser, app_url)
    paths: list[str] = []
    page.on("request", lambda r: paths.append(urlparse(r.url).path))
    page.locator("#chat-new").click()
    assert wait_until(lambda: page.locator("#chatbot [data-testid=user]").count() == 0)
    typed = "Why is <b>this</b> bold? <script>window.__ran = 1</script> <img src=x> and **this** too &amp; Tom & Jerry"
    type_and_send(page, typed)
    assert wait_until(lambda: finished(page), timeout=90)
    bubble = page.locator("#chatbot [data-testid=user]").last
    shown = bubble.inner_text()
    for part in ("<b>this</b>", "<script>window.__ran = 1</script>", "<img src=x>", "&amp; Tom & Jerry"):
        assert part in shown, shown
    assert bubble.locator("strong").all_inner_texts() == ["this"]  # Markdown still renders
    assert bubble.locator("b, img, script").count() == 0
    assert page.evaluate("window.__ran") is None
    assert not any(p.endswith("/x") for p in paths)
    # Editing the message starts from the text as typed.
    bubble.hover()
    page.locator("#chatbot button[aria-label='Edit']").first.click()  # the first message's: the user's
    editor = page.locator("#chatbot textarea").first
    assert editor.input_value() == typed
    editor.fill(typed + " <i>edited</i>")
    page.locator("#chatbot button[aria-label='Submit']").first.click()
    chats = runtime.users.get(None).chats
    assert wait_until(lambda: chats.load(chats.list()[0].id).path()[0].content == typed + " <i>edited</i>")
    page.close()


def checked_mode(page) -> str | None:
    return page.evaluate("""() => {
      const chosen = document.querySelector('#chat-mode input:checked');
      return chosen ? (chosen.value || chosen.closest('label').innerText.trim()) : null;
    }""")


def test_a_chats_mode_comes_back_when_it_is_reopened(browser, app_url, runtime):  # noqa: F811
    chats = runtime.users.get(None).chats
    page = open_page(browser, app_url)
    mode = page.locator("#chat-mode")

    def chat_in(name: str, text: str) -> str:
        page.locator("#chat-new").click()
        assert wait_until(lambda: page.locator("#chatbot [data-testid=user]").count() == 0)
        mode.get_by_label(name, exact=True).check()
        type_and_send(page, text)
        assert wait_until(lambda: finished(page) and text in user_bubbles(page), timeout=90)
        return chats.list()[0].id

    role_play = chat_in("chat", "a role-play line")
    plain = chat_in("instruct", "a plain question")

    listed = page.locator("#chat-list input")
    listed.click()
    page.get_by_role("option", name="a role-play line").first.click()
    assert wait_until(lambda: user_bubbles(page) == ["a role-play line"])
    assert wait_until(lambda: checked_mode(page) == "chat")
    page.reload()  # the last chat opened comes back, in its own mode
    page.locator("#chat-input textarea").wait_for()
    assert wait_until(lambda: user_bubbles(page) == ["a role-play line"])
    assert wait_until(lambda: checked_mode(page) == "chat")
    assert chats.load(role_play).settings.mode == "chat"  # kept in its file
    page.close()
    for chat_id in (role_play, plain):  # the next page starts in the default mode again
        chats.delete(chat_id)
