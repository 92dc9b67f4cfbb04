"""Images in the chat tab, through the real app: gradio_client sends them with a message,
a real browser attaches and pastes them; they are stored, shown, kept across
regenerate, fork and a restart, and a text-only model says it cannot see them."""

from __future__ import annotations

import base64
import re

import pytest
from gradio_client import Client, handle_file

from tests.conftest import free_port, make_settings
from tests.test_browser import browser, wait_until  # noqa: F401 - the browser fixture, shared
from tests.tiny_vision import build_vision, picture, png
from webui.chat.history import Message

CHATBOT, LIVE, STATS, INPUT = range(4)
QUESTION = "What is in this picture?"


@pytest.fixture(scope="module")
def vision_app(tmp_path_factory):
    from webui.runtime import build_runtime
    from webui.ui.app import launch

    root = tmp_path_factory.mktemp("vision-ui-models")
    build_vision(root / "tiny-llava", "llava")
    user_data = tmp_path_factory.mktemp("vision-ui-data")
    runtime = build_runtime(make_settings(root, user_data, model="tiny-llava", dtype="fp32"))
    app, url = launch(runtime, block=False, port=free_port())
    yield runtime, url
    app.close()
    runtime.engine.close()


@pytest.fixture()
def client(vision_app):
    from tests.test_app_client import controls

    client = Client(vision_app[1], verbose=False)
    client.predict(*controls(max_new_tokens=20, ban_eos_token=True, seed=3), api_name="/set_params")
    client.predict(api_name="/chat_new")
    return client


def image_file(tmp_path, seed: int, name: str = "photo.png"):
    path = tmp_path / name
    path.write_bytes(png(picture(seed)))
    return path


def newest(runtime):
    chats = runtime.users.get(None).chats
    return chats.load(chats.list()[0].id)


def prompt_tokens(note: str) -> int:
    return int(re.search(r"prompt (\d+) tokens", note)[1])


def test_a_message_with_an_image_is_stored_shown_and_answered(client, vision_app, tmp_path):
    runtime, _ = vision_app
    job = client.submit({"text": QUESTION, "files": [handle_file(image_file(tmp_path, 1))]}, api_name="/chat_send")
    outputs = list(job)
    final = job.outputs()[-1]
    assert "tokens/s" in final[STATS], final[STATS]
    assert len({o[LIVE] for o in outputs if isinstance(o[LIVE], str) and o[LIVE]}) > 1  # it streamed
    first = final[CHATBOT][0]
    kinds = [part.get("type") for part in first["content"]]
    assert kinds == ["file", "text"] and first["content"][1]["text"] == QUESTION
    # The client downloaded the bubble's image from the app (Gradio's cache, not user data).
    from pathlib import Path

    assert Path(first["content"][0]["file"]).read_bytes().startswith(b"\x89PNG")
    saved = newest(runtime)
    message = saved.path()[0]
    assert message.content == QUESTION and len(message.images) == 1
    space = runtime.users.get(None)
    assert space.images.has(message.images[0])
    # The reply read the image: its prompt holds the image's 16 tokens, not one placeholder.
    text_only = len(runtime.models.current.tokenizer(QUESTION)["input_ids"])
    assert prompt_tokens(saved.path()[1].note) > text_only + 16


def test_images_go_with_regenerate_edit_fork_and_survive_a_restart(client, vision_app, tmp_path):
    runtime, _ = vision_app
    client.predict({"text": QUESTION, "files": [handle_file(image_file(tmp_path, 2))]}, api_name="/chat_send")
    saved = newest(runtime)
    image_id = saved.path()[0].images[0]
    first_prompt = prompt_tokens(saved.path()[1].note)
    client.predict(api_name="/chat_regenerate")
    saved = newest(runtime)
    assert len(saved.children(saved.path()[0].id)) == 2
    assert prompt_tokens(saved.path()[1].note) == first_prompt  # the image was in the prompt again
    client.predict("Assistant", 1, "What colour is it?", api_name="/chat_edit_message")
    edited = newest(runtime).path()[0]
    assert edited.content == "What colour is it?" and edited.images == [image_id]
    client.predict("Assistant", 1, api_name="/chat_fork")
    forked = newest(runtime)
    assert forked.id != saved.id and forked.path()[0].images == [image_id]
    # A restart: a fresh store reads the files back, images and all.
    from webui.userdata import UserSpace

    again = UserSpace(runtime.users.get(None).root)
    assert again.chats.load(forked.id).path()[0].images == [image_id]
    assert again.images.load(image_id).id == image_id


def test_hostile_attachments_are_refused_and_nothing_is_sent(client, vision_app, tmp_path):
    runtime, _ = vision_app
    before = len(runtime.users.get(None).chats.list())
    fake = tmp_path / "cat.png"
    fake.write_bytes(b"<html><script>alert(1)</script></html>")
    out = client.predict({"text": "look", "files": [handle_file(fake)]}, api_name="/chat_send")
    assert "**Error:**" in out[STATS] and "attachment 1" in out[STATS] and "allowed format" in out[STATS]
    long_strip = tmp_path / "strip.png"
    from PIL import Image
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (1, 5000)).save(buffer, format="PNG")
    long_strip.write_bytes(buffer.getvalue())
    out = client.predict({"text": "look", "files": [handle_file(long_strip)]}, api_name="/chat_send")
    assert "**Error:**" in out[STATS] and "1 x 5000" in out[STATS]
    assert len(runtime.users.get(None).chats.list()) == before


def test_a_text_model_says_it_cannot_see(app_url, tmp_path):
    client = Client(app_url, verbose=False)
    client.predict(api_name="/chat_new")
    out = client.predict({"text": QUESTION, "files": [handle_file(image_file(tmp_path, 3))]}, api_name="/chat_send")
    assert "**Error:**" in out[STATS] and "cannot see" in out[STATS]


def test_message_images_are_limited_alike_on_write_and_read():
    with pytest.raises(ValueError):
        Message(id=0, parent=-1, role="user", content="x", images=["../../etc/passwd"])
    with pytest.raises(ValueError):
        Message(id=0, parent=-1, role="user", content="x", images=["a" * 32] * 9)
    assert Message(id=0, parent=-1, role="user", content="x").images == []


def test_a_browser_attaches_and_pastes_images_and_the_reply_streams(browser, vision_app, tmp_path):  # noqa: F811
    runtime, url = vision_app
    from webui.generation.params import make_params

    runtime.remember(make_params({"seed": 5, "ban_eos_token": True, "max_new_tokens": 200}))
    page = browser.new_page()
    page.goto(url)
    page.locator("#chat-input textarea").wait_for()
    page.locator("#chat-new").click()
    page.locator("#chat-input input[type=file]").set_input_files(str(image_file(tmp_path, 4, "attached.png")))
    # A pasted screenshot: a real paste event carrying an image file.
    pasted = base64.b64encode(png(picture(5))).decode()
    page.evaluate("""(data) => {
      const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
      const transfer = new DataTransfer();
      transfer.items.add(new File([bytes], 'pasted.png', {type: 'image/png'}));
      const box = document.querySelector('#chat-input textarea');
      box.dispatchEvent(new ClipboardEvent('paste', {clipboardData: transfer, bubbles: true, cancelable: true}));
    }""", pasted)
    assert wait_until(lambda: page.locator("#chat-input img").count() == 2, timeout=30), "both images attached"
    page.evaluate("""() => {
      window.__lengths = [];
      new MutationObserver(() => {
        const copy = document.querySelector('#chatbot .webui-live');
        if (copy) window.__lengths.push(copy.textContent.length);
      }).observe(document.querySelector('#chatbot'), {subtree: true, childList: true, characterData: true});
    }""")
    box = page.locator("#chat-input textarea")
    box.click()
    page.keyboard.type("What is in these pictures?")
    page.keyboard.press("Enter")
    assert wait_until(lambda: "tokens/s" in page.locator("#chat-stats").inner_text(), timeout=90), \
        page.locator("#chat-stats").inner_text()
    growing = sorted({n for n in page.evaluate("window.__lengths") if n})
    assert len(growing) >= 2, f"the reply should stream, saw lengths {growing}"
    # Both images show in the message's bubbles (Gradio gives each file part its own).
    shown = page.locator("#chatbot [data-testid=user] img")
    assert wait_until(lambda: shown.count() == 2), page.locator("#chatbot").inner_html()[:3000]
    assert all(shown.nth(i).evaluate("img => img.complete && img.naturalWidth > 0") for i in range(2))
    saved = newest(runtime)
    assert len(saved.path()[0].images) == 2 and saved.path()[0].content == "What is in these pictures?"


def test_each_user_has_their_own_images(vision_app, tmp_path_factory, tmp_path):
    """With sign-in, an image is stored in its sender's folder only, and its bubble copy
    sits under a folder no other user's copies share."""
    from webui.runtime import build_runtime
    from webui.ui.app import launch

    ann, bob = ("ann", "ann-pass-1"), ("bob", "bob-pass-2")
    root = vision_app[0].settings.model_dir
    runtime = build_runtime(make_settings(root, tmp_path_factory.mktemp("vision-users"), model="tiny-llava",
                                          dtype="fp32", gradio_auth=f"{ann[0]}:{ann[1]},{bob[0]}:{bob[1]}"))
    app, url = launch(runtime, block=False, port=free_port())
    try:
        from tests.test_app_client import controls

        clients = {}
        for who in (ann, bob):
            clients[who[0]] = Client(url, auth=who, verbose=False)
            clients[who[0]].predict(*controls(max_new_tokens=4, ban_eos_token=True), api_name="/set_params")
        out_ann = clients["ann"].predict({"text": "mine", "files": [handle_file(image_file(tmp_path, 21, "a.png"))]},
                                         api_name="/chat_send")
        out_bob = clients["bob"].predict({"text": "mine", "files": [handle_file(image_file(tmp_path, 22, "b.png"))]},
                                         api_name="/chat_send")
        spaces = {name: runtime.users.get(name) for name in ("ann", "bob")}
        ids = {name: newest_of(space).path()[0].images[0] for name, space in spaces.items()}
        assert ids["ann"] != ids["bob"]
        assert spaces["ann"].images.has(ids["ann"]) and not spaces["ann"].images.has(ids["bob"])
        assert spaces["bob"].images.has(ids["bob"]) and not spaces["bob"].images.has(ids["ann"])
        # Bob's chat shows only his image; the bubbles' copies (in the server's Gradio cache)
        # sit in a folder per user.
        assert out_ann[CHATBOT][0]["content"][0]["file"] and out_bob[CHATBOT][0]["content"][0]["file"]
        import os
        from pathlib import Path

        shelf = Path(os.environ["GRADIO_TEMP_DIR"]) / "chat-images"
        holder = {name: [p.parent for p in shelf.glob(f"*/{image}.png")] for name, image in ids.items()}
        assert len(holder["ann"]) == len(holder["bob"]) == 1 and holder["ann"] != holder["bob"]
        assert not (holder["ann"][0] / f"{ids['bob']}.png").exists()
    finally:
        app.close()
        runtime.engine.close()


def newest_of(space):
    return space.chats.load(space.chats.list()[0].id)


def test_an_extensions_history_rewrite_keeps_the_images_or_is_refused():
    from webui.chat.history import ChatError
    from webui.chat.service import keep_images

    before = [{"role": "user", "content": "look", "images": ["a" * 32]}, {"role": "assistant", "content": "ok"},
              {"role": "user", "content": "and?"}]
    after = [{"role": "user", "content": "LOOK"}, {"role": "assistant", "content": "OK"},
             {"role": "user", "content": "AND?"}]
    assert keep_images(before, after)[0] == {"role": "user", "content": "LOOK", "images": ["a" * 32]}
    with pytest.raises(ChatError, match="images"):
        keep_images(before, after[1:])
    assert keep_images(after, after[1:]) == after[1:]  # no images: the rewrite stands
