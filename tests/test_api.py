"""The OpenAI-compatible API, driven with the official openai client over loopback."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, API_KEY, TINY, wait_for


@pytest.fixture()
def client(api_url):
    return openai.OpenAI(base_url=api_url, api_key=API_KEY, max_retries=0, timeout=120)


def chat(client, text="Hello there", **kw):
    return client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": text}], **kw)


def test_models_list_and_get(client):
    assert [m.id for m in client.models.list().data] == [TINY]
    assert client.models.retrieve(TINY).id == TINY
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_chat_completion_with_usage_and_finish_reason(client):
    reply = chat(client, max_tokens=12, temperature=0)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= 12 and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_chat_matches_non_streaming(client):
    whole = chat(client, max_tokens=30, temperature=0).choices[0].message.content
    chunks = list(chat(client, max_tokens=30, temperature=0, stream=True,
                       stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 30
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_completions_stop_sequences_and_n(client):
    full = client.completions.create(model=TINY, prompt="The keeper", max_tokens=40, temperature=0).choices[0].text
    stop = full[10:13]
    cut = client.completions.create(model=TINY, prompt="The keeper", max_tokens=40, temperature=0, stop=[stop])
    assert cut.choices[0].text == full[: full.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    many = client.completions.create(model=TINY, prompt="The keeper", max_tokens=8, n=3, seed=5)
    assert [c.index for c in many.choices] == [0, 1, 2]


def batch_sizes(runtime, monkeypatch) -> list[int]:
    """The size of every batch the loaded model decodes from now on (its real step, watched)."""
    backend = runtime.models.current.backend
    sizes: list[int] = []
    step = backend.step
    monkeypatch.setattr(backend, "step", lambda slots, tokens: sizes.append(len(slots)) or step(slots, tokens))
    return sizes


@pytest.mark.parametrize("chat_route", [False, True])
def test_n_choices_stream_with_their_indices_from_one_batch(client, runtime, monkeypatch, chat_route):
    """stream + n=3 gives three choices, each chunk with its index (as vLLM streams n),
    each ending with its finish_reason, usage adding them up; the three decode as one
    batch, streamed or whole, and choice i samples with seed + i in both."""
    sizes = batch_sizes(runtime, monkeypatch)
    kw = dict(model=TINY, max_tokens=8, n=3, seed=5, temperature=1.0)
    if chat_route:
        create = client.chat.completions.create
        kw["messages"] = [{"role": "user", "content": "Tell me about the sea"}]
    else:
        create = client.completions.create
        kw["prompt"] = "The keeper"
    chunks = list(create(stream=True, stream_options={"include_usage": True}, **kw))
    streamed_batches, sizes[:] = list(sizes), []
    texts: dict[int, str] = {}
    finished: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            piece = (choice.delta.content or "") if chat_route else choice.text
            texts[choice.index] = texts.get(choice.index, "") + piece
            if choice.finish_reason:
                finished[choice.index] = choice.finish_reason
    assert sorted(texts) == [0, 1, 2] and sorted(finished) == [0, 1, 2]
    assert all(texts.values()) and len(set(texts.values())) == 3  # three seeds, three replies
    usage = chunks[-1].usage
    assert usage is not None and 3 <= usage.completion_tokens <= 24
    assert max(streamed_batches) == 3  # admitted together: one batch of three
    whole = create(**kw)
    assert [c.index for c in whole.choices] == [0, 1, 2]
    assert max(sizes) == 3
    assert whole.usage.completion_tokens <= 24 and whole.usage.prompt_tokens == usage.prompt_tokens


def test_a_backend_that_declares_nothing_is_refused_each_field_by_name(client, runtime, monkeypatch):
    """Capabilities say no unless a backend declares yes: a backend that declares only
    its batch size has every sampler, a grammar and log-probabilities refused with a 400
    naming the field as it was sent, never silently ignored; length and seed still go."""
    from webui.generation.backend import Capabilities

    backend = runtime.models.current.backend
    monkeypatch.setattr(backend, "capabilities", Capabilities(max_batch=backend.capabilities.max_batch))
    for kw, param in ((dict(extra_body={"grammar_string": 'start: "yes"'}), "grammar_string"),
                      (dict(response_format={"type": "json_object"}), "response_format"),
                      (dict(temperature=0.5), "temperature"), (dict(extra_body={"min_p": 0.1}), "min_p"),
                      (dict(logprobs=True), "logprobs")):
        with pytest.raises(openai.BadRequestError) as caught:
            chat(client, max_tokens=4, **kw)
        assert caught.value.body["param"] == param, (kw, caught.value.body)
    assert chat(client, max_tokens=4, seed=3).usage.completion_tokens >= 1


def test_seed_reproduces_and_extra_samplers_are_accepted(client):
    kw = dict(max_tokens=20, temperature=1.2, seed=42, extra_body={"min_p": 0.05, "dry_multiplier": 0.8})
    assert chat(client, **kw).choices[0].message.content == chat(client, **kw).choices[0].message.content


@pytest.mark.parametrize(
    ("kw", "param"),
    [({"temperature": -1}, "temperature"), ({"top_p": 2}, "top_p"), ({"max_tokens": 10**9}, "max_new_tokens"),
     ({"extra_body": {"bogus_sampler": 1}}, "bogus_sampler"), ({"extra_body": {"min_p": "lots"}}, "min_p"),
     ({"logit_bias": {"99999999": 5}}, "logit_bias")],
)
def test_bad_parameters_get_openai_shaped_errors(client, kw, param):
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, **kw)
    assert param in str(info.value)


def test_chat_logprobs_greedy_pick_the_top_token(client):
    reply = chat(client, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)  # greedy: the top one
    streamed = chat(client, max_tokens=8, temperature=0, logprobs=True, top_logprobs=1, stream=True)
    entries = [e for c in streamed if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.token for e in entries] == [e.token for e in content]


def test_completion_logprobs_legacy_layout(client):
    reply = client.completions.create(model=TINY, prompt="The keeper", max_tokens=6, temperature=0.8, seed=3,
                                      logprobs=2)
    logprobs = reply.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 6
    assert all(lp <= 0 for lp in logprobs.token_logprobs)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=TINY, prompt="x", max_tokens=2, logprobs=9)
    with pytest.raises(openai.BadRequestError):
        chat(client, max_tokens=2, top_logprobs=2)


def test_wrong_model_and_oversized_prompt(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, text="keeper " * 2000, max_tokens=10)
    assert info.value.code == "context_length_exceeded"


def test_a_prompt_far_beyond_the_context_is_refused_without_tokenizing_it(client, runtime, monkeypatch):
    """1 MB of prompt cost 1.2 s of tokenizing and hundreds of MB (hostile round 2, N19)."""
    from webui.generation.request import most_chars_per_token

    tokenizer = runtime.models.current.tokenizer
    longest = most_chars_per_token(tokenizer)
    assert all(len(tokenizer.decode([i])) <= longest for i in range(len(tokenizer)))  # a true upper bound
    calls = []
    original = type(tokenizer).__call__
    monkeypatch.setattr(type(tokenizer), "__call__", lambda self, text, *a, **k: (
        calls.append(len(text)), original(self, text, *a, **k))[1])
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, text="x " * 500_000, max_tokens=10)
    assert info.value.code == "context_length_exceeded" and "characters" in str(info.value)
    assert not [n for n in calls if n >= 1_000_000], "the 1 MB prompt was tokenized"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {API_KEY}x"}, {"x-api-key": "short"},
     {"Authorization": f"Basic {API_KEY}"}],
)
def test_missing_or_wrong_key_is_401(api_url, headers):
    response = httpx.get(f"{api_url}/models", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_both_key_headers_work(api_url):
    for headers in ({"Authorization": f"Bearer {API_KEY}"}, {"x-api-key": API_KEY}):
        assert httpx.get(f"{api_url}/models", headers=headers).status_code == 200


def test_dns_rebinding_cors_and_body_cap(api_url):
    auth = {"x-api-key": API_KEY}
    assert httpx.get(f"{api_url}/models", headers={**auth, "Host": "evil.example"}).status_code == 403
    cross = httpx.get(f"{api_url}/models", headers={**auth, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in cross.headers
    form = httpx.post(f"{api_url}/chat/completions", headers=auth, content=b"model=x")
    assert form.status_code == 415
    huge = httpx.post(f"{api_url}/chat/completions", headers={**auth, "content-type": "application/json"},
                      content=b"{" + b" " * (2 << 20) + b"}")
    assert huge.status_code == 413


def test_management_needs_the_admin_key(api_url):
    admin = {"x-api-key": ADMIN_KEY}
    assert httpx.get(f"{api_url}/internal/models", headers={"x-api-key": API_KEY}).status_code == 401
    listing = httpx.get(f"{api_url}/internal/models", headers=admin).json()
    assert listing["loaded"] == TINY and TINY in listing["models"]
    tokens = httpx.post(f"{api_url}/internal/tokenize", headers=admin, json={"text": "The keeper"}).json()
    text = httpx.post(f"{api_url}/internal/detokenize", headers=admin, json={"tokens": tokens["tokens"]}).json()
    assert text["text"].strip() == "The keeper"
    bad = httpx.post(f"{api_url}/internal/detokenize", headers=admin, json={"tokens": [-1]})
    assert bad.status_code == 400
    evil = httpx.post(f"{api_url}/internal/models/load", headers=admin,
                      json={"model": TINY, "trust_remote_code": True})
    assert evil.status_code == 400
    missing = httpx.post(f"{api_url}/internal/models/load", headers=admin, json={"model": "../../etc"})
    assert missing.status_code == 404
    reloaded = httpx.post(f"{api_url}/internal/models/load", headers=admin, json={"model": TINY, "dtype": "fp32"},
                          timeout=120)
    assert reloaded.status_code == 200 and TINY in reloaded.json()["loaded"]


def test_disconnect_mid_stream_cancels_generation(api_url, runtime, monkeypatch):
    tokens = []
    start = runtime.requests.start
    monkeypatch.setattr(runtime.requests, "start", lambda owner: tokens.append(start(owner)) or tokens[-1])
    body = {"model": TINY, "prompt": "Ships", "max_tokens": 480, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{api_url}/completions", json=body, headers={"x-api-key": API_KEY}) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                break  # leave after the first chunk: the connection closes
    # The request's own cancel token is set (a finished request's never is), and a new
    # request is served meanwhile (it decodes beside the first until that one stops).
    follow = httpx.post(f"{api_url}/completions", headers={"x-api-key": API_KEY},
                        json={"model": TINY, "prompt": "The", "max_tokens": 3}, timeout=60)
    assert follow.status_code == 200
    assert wait_for(lambda: tokens[0].cancelled, timeout=60)
    assert not tokens[1].cancelled


def test_two_api_streams_and_a_ui_chat_at_once_without_cross_talk(client, app_url):
    from gradio_client import Client

    prompts = ["Hello there", "Tell me a long story"]
    alone = {p: chat(client, p, max_tokens=60, temperature=0).choices[0].message.content for p in prompts}
    results: dict[str, str] = {}

    def run(p):
        chunks = chat(client, p, max_tokens=60, temperature=0, stream=True)
        results[p] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    threads = [threading.Thread(target=run, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    ui = Client(app_url, verbose=False).predict("Ships", api_name="/chat_send")
    for t in threads:
        t.join(timeout=120)
    assert results == alone
    assert ui[0][-1]["role"] == "assistant"


def test_openapi_schema_documents_v1(api_url):
    schema = httpx.get(f"{api_url}/openapi.json", headers={"x-api-key": API_KEY}).json()
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models"} <= set(schema["paths"])


def variant(runtime, **settings_changes):
    """The same model and runtime behind an API built with other settings."""
    import dataclasses

    from fastapi.testclient import TestClient

    from webui.api.openai_api import build_api

    changed = dataclasses.replace(runtime, settings=runtime.settings.model_copy(update=settings_changes))
    return changed, TestClient(build_api(changed), base_url="http://127.0.0.1")


def test_cors_only_for_allowlisted_origins(runtime):
    _, api = variant(runtime, api_cors_origins=("https://tools.example",))
    headers = {"x-api-key": API_KEY}
    allowed = api.get("/v1/models", headers={**headers, "Origin": "https://tools.example"})
    assert allowed.headers.get("access-control-allow-origin") == "https://tools.example"
    other = api.get("/v1/models", headers={**headers, "Origin": "null"})
    assert "access-control-allow-origin" not in other.headers
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    ok = api.options("/v1/chat/completions", headers={"Origin": "https://tools.example", **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://tools.example"
    evil = api.options("/v1/chat/completions", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in evil.headers
    # Host and size checks still run first, for everyone.
    assert api.get("/v1/models", headers={**headers, "Host": "evil.example"}).status_code == 403


def test_a_full_queue_gets_503_at_once(runtime):
    from webui.generation.engine import GenerationEngine, GenerationRequest
    from webui.generation.params import make_params

    from webui.generation.backend import ServingOptions
    from webui.loaders.registry import default_registry
    from webui.model_manager import ModelManager

    changed, api = variant(runtime)
    # One place in the batch and one in the queue: a third request finds both taken.
    one_at_a_time = ModelManager(runtime.models.model_dir, default_registry(ServingOptions(max_batch=1)),
                                 runtime.models.options)
    one_at_a_time.load(TINY)
    changed.engine = GenerationEngine(one_at_a_time, max_pending=1)
    busy = [GenerationRequest("Ships", make_params({"temperature": 0.0, "max_new_tokens": 400}), owner=o)
            for o in ("a", "b")]
    running = [changed.engine.generate(busy[0])]
    assert wait_for(lambda: changed.engine.running == 1, timeout=30)
    running.append(changed.engine.generate(busy[1]))
    try:
        response = api.post("/v1/completions", headers={"x-api-key": API_KEY},
                            json={"model": TINY, "prompt": "The", "max_tokens": 3})
        assert response.status_code == 503 and response.json()["error"]["code"] == "server_busy"
    finally:
        for request, stream in zip(busy, running, strict=True):
            request.cancel.cancel()
            stream.text()


def test_api_beyond_loopback_without_key_refuses_to_start(tmp_path, capsys):
    from webui.__main__ import main

    code = main(["--user-data-dir", str(tmp_path), "--api", "--listen", "--gradio-auth", "u:p"])
    assert code == 2 and "--api-key" in capsys.readouterr().err


def test_a_backend_that_lacks_a_sampler_or_logprobs_gets_a_400_naming_it(client, runtime, monkeypatch):
    """The API reads the backend's declared capabilities: nothing is dropped silently."""
    import dataclasses

    backend = runtime.models.current.backend
    limited = dataclasses.replace(backend.capabilities, samplers=frozenset({"temperature", "top_p", "stop"}),
                                  logprobs=False)
    monkeypatch.setattr(backend, "capabilities", limited)
    with pytest.raises(openai.BadRequestError) as refused:
        chat(client, max_tokens=5, extra_body={"min_p": 0.1})
    assert refused.value.param == "min_p" and refused.value.code == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as refused:
        chat(client, max_tokens=5, logprobs=True)
    assert refused.value.param == "logprobs"
    # What it does support still works.
    answered = chat(client, max_tokens=5, temperature=0.5, top_p=0.9)
    assert answered.choices[0].finish_reason in ("stop", "length") and 1 <= answered.usage.completion_tokens <= 5


def test_a_client_that_leaves_mid_stream_is_charged_for_what_was_made(api_url):
    def totals() -> tuple[int, int, int]:
        usage = httpx.get(f"{api_url}/internal/usage", headers={"x-api-key": ADMIN_KEY}, timeout=60).json()["usage"]
        return tuple(sum(entry[field] for entry in usage.values())
                     for field in ("requests", "prompt_tokens", "completion_tokens"))

    before = totals()
    body = {"model": TINY, "prompt": "In the beginning", "max_tokens": 400, "stream": True, "temperature": 0,
            "ban_eos_token": True}
    with httpx.stream("POST", f"{api_url}/completions", json=body, headers={"x-api-key": API_KEY},
                      timeout=60) as response:
        pieces = 0
        for line in response.iter_lines():
            pieces += line.startswith("data: {")
            if pieces == 5:
                break  # leave mid-reply: the server notices and stops the generation
    # Counted once the server notices the client left (another test's leftover stream
    # may be counted meanwhile: at least ours).
    assert wait_for(lambda: totals()[0] >= before[0] + 1, timeout=60)
    requests, prompt_tokens, completion_tokens = totals()
    assert prompt_tokens > before[1] and completion_tokens - before[2] >= 4
