"""Images through the APIs, with the official clients: OpenAI content parts (data: URLs;
http(s) only when the owner allows fetching, and never a private address) and Ollama's
`images`; the same checks as the chat, each refusal a 400 naming its field; listings say
which models see."""

from __future__ import annotations

import base64
import json
import http.server
import threading

import httpx
import ollama
import openai
import pytest
import torch

from tests.conftest import ADMIN_KEY, API_KEY, free_port, make_settings
from tests.test_images import png_declaring
from tests.tiny_vision import build_vision, picture, png
from webui.chat.prompt import apply_template
from webui.generation.detok import IncrementalDecoder
from webui.images import ImageRefused, check_image

QUESTION = "What is in the picture?"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from webui.api.openai_api import APIServer
    from webui.runtime import build_runtime

    root = tmp_path_factory.mktemp("vision-api-models")
    build_vision(root / "tiny-smolvlm", "smolvlm")
    runtime = build_runtime(make_settings(root, tmp_path_factory.mktemp("vision-api-data"), model="tiny-smolvlm",
                                          dtype="fp32", api_key=API_KEY, admin_key=ADMIN_KEY))
    server = APIServer(runtime, port=free_port())
    url = server.start()
    yield runtime, url
    server.stop()
    runtime.engine.close()


@pytest.fixture()
def client(served):
    return openai.OpenAI(base_url=served[1], api_key=API_KEY, max_retries=0, timeout=120)


def data_url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def ask(client, *urls, question=QUESTION, n=16, **extra):
    parts = [{"type": "text", "text": question}] + [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return client.chat.completions.create(model="tiny-smolvlm", messages=[{"role": "user", "content": parts}],
                                          temperature=0, max_tokens=n, **extra)


def reference(runtime, images, question=QUESTION, n=16) -> str:
    """The family's own generate with its processor, for the same message."""
    loaded = runtime.models.current
    message = {"role": "user", "content": question, "images": tuple(images)}
    text = apply_template(loaded.tokenizer, [message])
    inputs = loaded.processor(text=[text], images=[[i.image for i in images]], return_tensors="pt",
                              add_special_tokens=False)
    with torch.inference_mode():
        out = loaded.model.generate(**inputs, max_new_tokens=n, do_sample=False)
    ids = out[0, inputs["input_ids"].shape[1]:].tolist()
    eos = loaded.backend.eos_ids()
    ids = ids[: next((i for i, t in enumerate(ids) if t in eos), len(ids))]
    # Decoded as the app decodes a stream (random weights write stray byte tokens, which
    # a one-shot decode would join differently): equal ids give equal text.
    decoder = IncrementalDecoder(loaded.tokenizer, inputs["input_ids"][0].tolist())
    return "".join(decoder.push(token) for token in ids) + decoder.flush()


def refusal(call) -> dict:
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    return caught.value.body


def test_a_data_url_image_is_answered_as_the_familys_generate_answers(client, served):
    runtime, _ = served
    data = png(picture(1))
    reply = ask(client, data_url(data))
    assert reply.choices[0].message.content == reference(runtime, [check_image(data)])
    assert reply.usage.prompt_tokens > 20  # the image's tokens are counted
    other = ask(client, data_url(png(picture(2))))
    assert other.choices[0].message.content != reply.choices[0].message.content
    # Streamed, the same text.
    stream = client.chat.completions.create(
        model="tiny-smolvlm", temperature=0, max_tokens=16, stream=True,
        messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION},
                                               {"type": "image_url", "image_url": {"url": data_url(data)}}]}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == reply.choices[0].message.content


def test_two_images_in_one_message(client, served):
    runtime, _ = served
    a, b = png(picture(3)), png(picture(4, (30, 60)))
    reply = ask(client, data_url(a), data_url(b))
    assert reply.choices[0].message.content == reference(runtime, [check_image(a), check_image(b)])


def test_hostile_images_are_400s_naming_the_part(client):
    bomb = refusal(lambda: ask(client, data_url(png_declaring(50_000, 50_000))))
    assert bomb["param"] == "messages[0].content[1].image_url.url"
    animated = [picture(5), picture(6)]
    import io

    gif = io.BytesIO()
    animated[0].save(gif, format="GIF", save_all=True, append_images=animated[1:])
    body = refusal(lambda: ask(client, data_url(png(picture(1))), data_url(gif.getvalue(), "image/gif")))
    assert body["param"] == "messages[0].content[2].image_url.url" and "animated" in body["message"]
    assert "--allow-image-urls" in refusal(lambda: ask(client, "ftp://example.com/x.png"))["message"]
    svg = refusal(lambda: ask(client, data_url(b"<svg onload=alert(1)/>", "image/svg+xml")))
    assert svg["param"] == "messages[0].content[1].image_url.url"
    not_b64 = refusal(lambda: ask(client, "data:image/png;base64,@@@@"))
    assert "base64" in not_b64["message"]
    too_many = refusal(lambda: ask(client, *[data_url(png(picture(1)))] * 9))
    assert too_many["code"] == "too_many_images"


def test_http_urls_are_refused_unless_the_owner_allows_fetching(client):
    body = refusal(lambda: ask(client, "https://example.com/cat.png"))
    assert body["param"] == "messages[0].content[1].image_url.url" and "--allow-image-urls" in body["message"]


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - the standard library's name
        _Recorder.hits.append(self.path)
        data = png(picture(1))
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_the_fetch_refuses_private_addresses_even_when_allowed():
    from webui.api.image_fetch import fetch_image, public_address

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        for url in (f"http://127.0.0.1:{port}/a.png", f"http://localhost:{port}/b.png", f"http://[::1]:{port}/c.png",
                    "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/x.png", "http://192.168.1.1/x.png",
                    f"http://0.0.0.0:{port}/d.png", f"http://2130706433:{port}/e.png"):
            with pytest.raises(ImageRefused) as caught:
                fetch_image(url, "image_url", allowed=True)
            assert caught.value.code == "image_url_refused", url
        with pytest.raises(ImageRefused):
            fetch_image("file:///etc/passwd", "image_url", allowed=True)
        with pytest.raises(ImageRefused):
            fetch_image(f"http://user:pw@127.0.0.1:{port}/x.png", "image_url", allowed=True)
        assert _Recorder.hits == []  # the local server was never contacted
    finally:
        server.shutdown()
    assert public_address("8.8.8.8") and not public_address("::ffff:127.0.0.1") and not public_address("fe80::1")
    assert not public_address("100.64.0.1")  # carrier-grade NAT


def test_ollama_images_on_chat_and_generate(served, client):
    runtime, url = served
    data = png(picture(7))
    root = url.removesuffix("/v1")
    olla = ollama.Client(host=root, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120)
    options = {"temperature": 0, "num_predict": 16}
    chat = olla.chat(model="tiny-smolvlm", messages=[{"role": "user", "content": QUESTION, "images": [data]}],
                     options=options)
    expected = reference(runtime, [check_image(data)])
    assert chat.message.content == expected
    generated = olla.generate(model="tiny-smolvlm", prompt=QUESTION, images=[data], options=options)
    assert generated.response == expected
    with pytest.raises(ollama.ResponseError) as caught:
        olla.chat(model="tiny-smolvlm", messages=[{"role": "user", "content": "x", "images": [b"not an image"]}])
    assert caught.value.status_code == 400 and "messages[0].images[0]" in str(caught.value)
    raw = httpx.post(f"{root}/api/generate", headers={"Authorization": f"Bearer {API_KEY}"}, json={
        "model": "tiny-smolvlm", "prompt": "x", "raw": True, "stream": False,
        "images": [base64.b64encode(data).decode()]})
    assert raw.status_code == 400 and "images" in raw.text


def test_listings_say_the_model_sees(served, client):
    _, url = served
    card = next(m for m in client.models.list().data if m.id == "tiny-smolvlm")
    assert "vision" in card.capabilities
    root = url.removesuffix("/v1")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    shown = httpx.post(f"{root}/api/show", headers=headers, json={"model": "tiny-smolvlm"}).json()
    assert "vision" in shown["capabilities"]
    tags = httpx.get(f"{root}/api/tags", headers=headers).json()
    assert "vision" in next(m for m in tags["models"] if m["name"] == "tiny-smolvlm")["capabilities"]


def test_a_text_model_answers_400_that_it_cannot_see(api_url):
    plain = openai.OpenAI(base_url=api_url, api_key=API_KEY, max_retries=0, timeout=60)
    name = plain.models.list().data[0].id
    assert "vision" not in plain.models.list().data[0].capabilities
    with pytest.raises(openai.BadRequestError) as caught:
        plain.chat.completions.create(model=name, max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": data_url(png(picture(1)))}}]}])
    assert "cannot see" in caught.value.body["message"] and caught.value.body["param"] == "messages"


@pytest.fixture(scope="module")
def gateway(served, tmp_path_factory):
    """A second server with no model of its own, the vision server as its remote engine."""
    import os

    from webui.api.openai_api import APIServer
    from webui.remote.config import RemoteEngineConfig
    from webui.runtime import build_runtime

    os.environ["VISION_UPSTREAM_KEY"] = API_KEY
    engine = RemoteEngineConfig(url=served[1], name="vision-box", api_key_env="VISION_UPSTREAM_KEY", kind="webui")
    runtime = build_runtime(make_settings(tmp_path_factory.mktemp("gw-models"), tmp_path_factory.mktemp("gw-data"),
                                          model=None, api_key=API_KEY, remote_engines=(engine,)))
    server = APIServer(runtime, port=free_port())
    url = server.start()
    yield runtime, url
    server.stop()


def test_image_parts_are_forwarded_to_a_remote_engine(gateway, client):
    runtime, url = gateway
    front = openai.OpenAI(base_url=url, api_key=API_KEY, max_retries=0, timeout=120)
    data = png(picture(8))
    direct = ask(client, data_url(data)).choices[0].message.content
    assert ask(front, data_url(data)).choices[0].message.content == direct
    assert ask(front, data_url(png(picture(9)))).choices[0].message.content != direct
    # Through the chat too: the prompt's images go out as image_url parts.
    from webui.chat.prompt import ChatPrompt, ChatSetup
    from webui.generation.params import make_params

    prompt = ChatPrompt(ChatSetup(mode="instruct"), [{"role": "user", "content": QUESTION,
                                                      "images": (check_image(data),)}])
    stream = runtime.stream("tester", prompt, make_params({"temperature": 0.0, "max_new_tokens": 16}),
                            model="tiny-smolvlm")
    assert "".join(stream) == direct


def test_anthropic_image_blocks_are_read_as_the_openai_parts_are(client, served):
    """Anthropic's client sends an image block (a base64 source): the same reply as the
    OpenAI route's image part; a hostile one is a 400 naming its block."""
    import anthropic

    runtime, url = served
    claude = anthropic.Anthropic(base_url=url.removesuffix("/v1"), api_key=API_KEY, max_retries=0, timeout=120)
    data = png(picture(1))
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": base64.b64encode(data).decode()}}
    reply = claude.messages.create(model="tiny-smolvlm", max_tokens=16, extra_body={"temperature": 0},
                                   messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION},
                                                                          block]}])
    assert reply.content[0].text == ask(client, data_url(data)).choices[0].message.content
    bomb = {**block, "source": {**block["source"], "data": base64.b64encode(png_declaring(50_000, 50_000)).decode()}}
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(model="tiny-smolvlm", max_tokens=4,
                               messages=[{"role": "user", "content": [{"type": "text", "text": "x"}, bomb]}])
    assert "messages[0].content[1].source.data" in str(refused.value)
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(model="tiny-smolvlm", max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "http://127.0.0.1:1/x.png"}}]}])
    assert "messages[0].content[0].source" in str(refused.value)


def test_an_image_and_tools_in_one_request(client, served):
    """The image goes into the prompt (its tokens counted) and the forced call comes back
    as a tool call (this route refused images with tools before)."""
    tools = [{"type": "function", "function": {"name": "describe", "parameters": {
        "type": "object", "required": ["colour"], "properties": {"colour": {"type": "string", "enum": [
            "red", "orange", "yellow", "green", "blue", "purple", "black", "white"]}}}}}]
    replies = []
    for seed in (1, 2):
        reply = ask(client, data_url(png(picture(seed))), n=40, tools=tools,
                    tool_choice={"type": "function", "function": {"name": "describe"}})
        call = reply.choices[0].message.tool_calls[0]
        assert call.function.name == "describe" and "colour" in json.loads(call.function.arguments)
        replies.append((reply.usage.prompt_tokens, call.function.arguments))
    text_only = client.chat.completions.create(
        model="tiny-smolvlm", messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=40,
        tools=tools, tool_choice={"type": "function", "function": {"name": "describe"}})
    assert replies[0][0] == replies[1][0] > text_only.usage.prompt_tokens  # the image's tokens are in the prompt
