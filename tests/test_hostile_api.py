"""A hostile review's API findings: each must be a 400/413/403 in OpenAI's shape, checked before
generation, and a client that leaves must free the model within a step.  Loopback only."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.conftest import ADMIN_KEY, API_KEY, TINY, free_port, wait_for
from tests.tiny_models import build_llama

USER = {"x-api-key": API_KEY}
ADMIN = {"x-api-key": ADMIN_KEY}
HELLO = [{"role": "user", "content": "hi"}]


def post(api_url, path, body, headers=USER, **kw):
    return httpx.post(f"{api_url}{path}", json=body, headers=headers, timeout=60, **kw)


def raw_post(api_url, path, payload: bytes, headers=USER):
    """A body sent exactly as given (json= would re-encode lone surrogates)."""
    return httpx.post(f"{api_url}{path}", content=payload, timeout=60,
                      headers={**headers, "content-type": "application/json"})


def assert_openai_400(response, param: str | None = None):
    assert response.status_code == 400, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param, error


# -- item 10: 400s where 500s were -----------------------------------------------------
def test_seed_overflow_with_n_is_refused_before_generating(api_url, runtime):
    before = runtime.engine.pending
    response = post(api_url, "/chat/completions",
                    {"model": TINY, "messages": HELLO, "max_tokens": 2, "seed": 4294967295, "n": 2})
    assert_openai_400(response, "seed")
    assert runtime.engine.pending == before


@pytest.mark.parametrize("path", ["/chat/completions", "/completions"])
def test_lone_surrogate_is_refused(api_url, path):
    body = {"model": TINY, "max_tokens": 2}
    body.update({"messages": [{"role": "user", "content": "PLACEHOLDER"}]} if "chat" in path else
                {"prompt": "PLACEHOLDER"})
    payload = json.dumps(body).replace("PLACEHOLDER", "a\\ud800b").encode()
    assert_openai_400(raw_post(api_url, path, payload))


def test_lone_surrogate_in_embeddings_and_ollama_routes_is_refused(api_url):
    payload = json.dumps({"model": TINY, "input": ["ok", "PLACEHOLDER"]}).replace("PLACEHOLDER", "a\\ud800b")
    assert_openai_400(raw_post(api_url, "/embeddings", payload.encode()))
    root = api_url.removesuffix("/v1")
    for path, body in (("/api/chat", {"model": TINY, "messages": [{"role": "user", "content": "PLACEHOLDER"}]}),
                       ("/api/generate", {"model": TINY, "prompt": "PLACEHOLDER"}),
                       ("/api/embed", {"model": TINY, "input": "PLACEHOLDER"})):
        payload = json.dumps(body).replace("PLACEHOLDER", "a\\udfffb").encode()
        response = raw_post(root, path, payload)
        assert response.status_code == 400 and isinstance(response.json()["error"], str), (path, response.text)


def test_lone_surrogate_in_tokenize_is_refused(api_url):
    payload = b'{"text": "x\\udfff"}'
    assert_openai_400(raw_post(api_url, "/internal/token-count", payload, headers=ADMIN))


def test_content_part_with_a_number_as_text_is_refused(api_url):
    body = {"model": TINY, "max_tokens": 2, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}
    assert_openai_400(post(api_url, "/chat/completions", body))


def test_empty_prompt_is_refused(api_url):
    assert_openai_400(post(api_url, "/completions", {"model": TINY, "prompt": "", "max_tokens": 2}), "prompt")


def test_truncation_length_too_small_is_refused(api_url):
    body = {"model": TINY, "messages": HELLO, "max_tokens": 2, "truncation_length": 1}
    assert_openai_400(post(api_url, "/chat/completions", body), "truncation_length")


def test_loading_a_model_with_a_mistyped_safetensors_header_is_a_400(api_url, runtime, models_root):
    folder = models_root / "bad-header"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text((models_root / TINY / "config.json").read_text())
    header = json.dumps({"w": {"dtype": "F32", "shape": "x", "data_offsets": ["a", None]}}).encode()
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    try:
        response = post(api_url, "/internal/models/load", {"model": "bad-header"}, headers=ADMIN)
        assert_openai_400(response)
        assert "model.safetensors" in response.json()["error"]["message"]
        assert runtime.models.current.name == TINY
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


# -- item 11: chunked bodies over the cap -------------------------------------------------
def test_chunked_body_over_the_cap_gets_413(api_url):
    def chunks():
        for _ in range(40):
            yield b" " * 65536  # 2.5 MB in all, no Content-Length

    response = httpx.post(f"{api_url}/chat/completions", content=chunks(), timeout=60,
                          headers={**USER, "content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_chunked_body_under_the_cap_still_works(api_url):
    payload = json.dumps({"model": TINY, "messages": HELLO, "max_tokens": 2}).encode()
    response = httpx.post(f"{api_url}/chat/completions", content=iter([payload[:10], payload[10:]]), timeout=60,
                          headers={**USER, "content-type": "application/json"})
    assert response.status_code == 200, response.text


# -- item 15: strict Host ------------------------------------------------------------------
@pytest.mark.parametrize("host", ["evil.com@127.0.0.1", "localhost#.evil.com", "127.0.0.1:abc", "127.0.0.1:",
                                  "127.0.0.1:99999", "localhost.", "evil.example", "127.0.0.1 x"])
def test_malformed_or_foreign_host_is_refused(api_url, host):
    response = httpx.get(f"{api_url}/models", headers={**USER, "host": host}, timeout=30)
    assert response.status_code in (400, 403), (host, response.status_code)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost:1234", "[::1]:5000", "LOCALHOST"])
def test_loopback_hosts_are_served(api_url, host):
    assert httpx.get(f"{api_url}/models", headers={**USER, "host": host}, timeout=30).status_code == 200


# -- item 13: no CDN --------------------------------------------------------------------------
def test_docs_page_is_self_contained(api_url):
    page = httpx.get(f"{api_url}/docs", headers=USER, timeout=30)
    assert page.status_code == 200 and "/v1/chat/completions" in page.text
    assert "<script" not in page.text.lower()
    assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text


# -- item 3: a client that leaves frees the model -------------------------------------------
@pytest.fixture(scope="module")
def long_api(tmp_path_factory):
    """An API on a tiny model with a long context, so a reply can run for many seconds."""
    from tests.conftest import make_settings
    from webui.api.openai_api import APIServer
    from webui.runtime import build_runtime

    root = tmp_path_factory.mktemp("long_models")  # not the session's folder: others list it
    build_llama(root / "tiny-long", context=8192)
    settings = make_settings(root, tmp_path_factory.mktemp("long_user_data"), model="tiny-long",
                             api_key=API_KEY)
    runtime = build_runtime(settings)
    server = APIServer(runtime, port=free_port())
    url = server.start()
    yield runtime, url
    server.stop()


def leave_after(url: str, body: dict, seconds: float) -> None:
    """Send a request on a raw socket, read for `seconds`, then drop the connection."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    payload = json.dumps(body).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {API_KEY}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=seconds + 5) as sock:
        sock.sendall(head + payload)
        sock.settimeout(0.2)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                sock.recv(65536)
            except TimeoutError:
                pass


@pytest.mark.parametrize("stream", [True, False])
def test_client_that_leaves_stops_its_generation(long_api, stream):
    runtime, url = long_api
    started = []
    original = runtime.stream_many  # the API queues a request's choices together

    def spy(*args, **kwargs):
        started.extend(original(*args, **kwargs))
        return started[-len(args[2]):]

    runtime.stream_many = spy
    try:
        body = {"model": "tiny-long", "messages": HELLO, "max_tokens": 8000, "temperature": 1.0,
                "stream": stream, "logit_bias": {"2": -100}}  # end-of-text banned: it runs to the end
        leave_after(url, body, 1.5)
        assert wait_for(lambda: started and runtime.engine.pending == 0, timeout=120)
    finally:
        runtime.stream_many = original
    # Not cancelled, it would have run to all 8000 tokens (end-of-text is banned).
    made = started[0]._stream.tokens_so_far
    assert 0 < made < 8000, made
