"""Remote engines (docs/SCALING.md), against real servers on loopback.

The engine is this app's own API (build_api under uvicorn) over a tiny model: a real
OpenAI-compatible server, with its own key.  In front of it, a second app (the
gateway) with a local model of its own and the first configured as a remote engine.
Misbehaving engines are real HTTP servers too (tests/remote_servers.py).
"""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.conftest import ADMIN_KEY, TINY, free_port, make_settings, wait_for
from tests.remote_servers import Misbehaving
from tests.tiny_models import build_llama
from webui.generation.params import make_params
from webui.remote.config import RemoteEngineConfig

UPSTREAM_KEY = "upstream-secret-7f3a9c2e51"
KEY_ENV = "WEBUI_TEST_UPSTREAM_KEY"
LOCAL = "tiny-local"


def serve(runtime):
    from webui.api.openai_api import APIServer

    server = APIServer(runtime, port=free_port())
    return server, server.start()


# Long enough that the engine cannot finish a reply before it notices its client left
# (this app's API notices within a second or two, at its next write).
LONG = 4000


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """The engine: this app's API over a tiny model with a long context, behind its own key."""
    from webui.runtime import build_runtime

    root = tmp_path_factory.mktemp("up-models")
    build_llama(root / TINY, context=LONG + 96)
    runtime = build_runtime(make_settings(root, tmp_path_factory.mktemp("up"), api_key=UPSTREAM_KEY))
    server, url = serve(runtime)
    yield runtime, url
    server.stop()


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory):
    """This app with a local model of its own and the upstream as a remote engine."""
    from webui.runtime import build_runtime

    root = tmp_path_factory.mktemp("gw-models")
    build_llama(root / LOCAL, seed=1)
    engine = RemoteEngineConfig(url=upstream[1], name="upstream", api_key_env=KEY_ENV, kind="webui", timeout=60)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(KEY_ENV, UPSTREAM_KEY)
        runtime = build_runtime(make_settings(root, tmp_path_factory.mktemp("gw"), model=LOCAL, admin_key=ADMIN_KEY,
                                              remote_engines=(engine,)))
    server, url = serve(runtime)
    yield runtime, url
    server.stop()


@pytest.fixture(scope="module")
def flaky(upstream, tmp_path_factory):
    """A gateway with no local model and four bad engines: down, slow, garbage, echoing."""
    from webui.runtime import build_runtime

    bad = Misbehaving(free_port())
    base = bad.start()
    engines = (
        RemoteEngineConfig(url=f"http://127.0.0.1:{free_port()}/v1", name="down"),  # nothing listens there
        RemoteEngineConfig(url=f"{base}/slow/v1", name="slow", timeout=1.0),
        RemoteEngineConfig(url=f"{base}/garbage/v1", name="garbage"),
        RemoteEngineConfig(url=f"{base}/echo/v1", name="echo", api_key_env=KEY_ENV),
        RemoteEngineConfig(url=upstream[1], name="generic", api_key_env=KEY_ENV, kind="openai"),
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv(KEY_ENV, UPSTREAM_KEY)
        runtime = build_runtime(make_settings(tmp_path_factory.mktemp("none"), tmp_path_factory.mktemp("fl"),
                                              model=None, remote_engines=engines))
    server, url = serve(runtime)
    yield runtime, url, bad
    server.stop()
    bad.stop()


def direct(upstream, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{upstream[1]}/{path}", json=body, headers={"x-api-key": UPSTREAM_KEY}, timeout=120)


def via(gateway, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{gateway[1]}/{path}", json=body, timeout=120)


def streamed(base: str, path: str, body: dict, headers: dict | None = None) -> tuple[str, list[str]]:
    import json

    pieces = []
    with httpx.stream("POST", f"{base}/{path}", json={**body, "stream": True}, headers=headers or {},
                      timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                choice = (json.loads(line[6:]).get("choices") or [{}])[0]
                pieces.append((choice.get("delta") or {}).get("content") or choice.get("text") or "")
    return "".join(pieces), [p for p in pieces if p]


CHAT = {"model": TINY, "messages": [{"role": "user", "content": "Tell me about ships"}], "max_tokens": 24,
        "temperature": 0}
COMPLETION = {"model": TINY, "prompt": "In the beginning", "max_tokens": 24, "temperature": 0}


def test_models_lists_local_and_remote(gateway):
    cards = httpx.get(f"{gateway[1]}/models", timeout=60).json()["data"]
    assert {(c["id"], c["owned_by"]) for c in cards} == {(LOCAL, "local"), (TINY, "upstream")}
    assert httpx.get(f"{gateway[1]}/models/{TINY}", timeout=60).json()["owned_by"] == "upstream"


@pytest.mark.parametrize(("path", "body"), [("chat/completions", CHAT), ("completions", COMPLETION)])
def test_greedy_reply_through_us_equals_asking_the_engine(gateway, upstream, path, body):
    ours, theirs = via(gateway, path, body).json(), direct(upstream, path, body).json()
    key = "message" if path.startswith("chat") else "text"
    assert ours["choices"][0][key] == theirs["choices"][0][key]
    assert ours["usage"] == theirs["usage"]  # the engine's own token counts


@pytest.mark.parametrize(("path", "body"), [("chat/completions", CHAT), ("completions", COMPLETION)])
def test_streamed_reply_arrives_in_pieces_and_equals_the_engines(gateway, upstream, path, body):
    ours, pieces = streamed(gateway[1], path, body)
    theirs, _ = streamed(upstream[1], path, body, {"x-api-key": UPSTREAM_KEY})
    assert ours == theirs and len(pieces) > 1


def test_the_local_model_is_still_served_beside_the_remote_one(gateway):
    reply = via(gateway, "completions", {**COMPLETION, "model": LOCAL})
    assert reply.status_code == 200 and reply.json()["model"] == LOCAL


def test_samplers_reach_the_engine(gateway, upstream, monkeypatch):
    runtime = upstream[0]
    seen = []
    stream_many = runtime.stream_many  # the API queues a request's choices together
    monkeypatch.setattr(runtime, "stream_many", lambda *a, **k: seen.extend(a[2]) or stream_many(*a, **k))
    body = {**COMPLETION, "temperature": 0.8, "seed": 7, "min_p": 0.05, "top_k": 20, "repetition_penalty": 1.2,
            "dry_multiplier": 0.8, "stop": ["\n\n"]}
    ours = via(gateway, "completions", body)
    assert ours.status_code == 200, ours.text
    params = seen[-1]
    assert (params.temperature, params.seed, params.min_p, params.top_k) == (0.8, 7, 0.05, 20)
    assert (params.repetition_penalty, params.dry_multiplier, params.stop) == (1.2, 0.8, ("\n\n",))
    # Seeded sampling is reproducible end to end: the same values asked directly give the same text.
    assert ours.json()["choices"][0]["text"] == direct(upstream, "completions", body).json()["choices"][0]["text"]


def test_a_sampler_the_engine_does_not_take_is_refused_by_name(flaky):
    body = {**COMPLETION, "model": TINY, "min_p": 0.05}
    refused = via(flaky, "completions", body)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "min_p" and error["code"] == "unsupported_parameter" and "generic" in error["message"]
    # OpenAI's own fields go through to the same engine.
    body = {**COMPLETION, "model": TINY, "presence_penalty": 0.5, "seed": 3, "temperature": 0.7}
    assert via(flaky, "completions", body).status_code == 200


def test_a_tab_talking_to_a_remote_model_is_told_what_it_ignores(flaky, gateway):
    runtime = flaky[0]
    assert runtime.ignored_samplers("nobody chose") is None  # no local model, no choice
    runtime.chosen.choose("tab", TINY)
    who, ignored = runtime.ignored_samplers("tab")
    assert "generic" in who and "openai" in who
    assert {"min_p", "top_k", "dry_multiplier", "guidance_scale"} <= set(ignored)
    assert not {"temperature", "top_p", "seed", "stop", "max_new_tokens"} & set(ignored)
    # An engine of our own kind takes every parameter; the local model too.
    gateway[0].chosen.choose("tab", TINY)
    assert gateway[0].ignored_samplers("tab")[1] == ()
    assert gateway[0].ignored_samplers("local tab") == (f"{LOCAL} (transformers)", ())


def test_logprobs_from_a_remote_model_are_the_engines_own(gateway, upstream):
    """Asked for in OpenAI's shape and passed through, tokens named by their text (the
    engine's token ids are not ours), whole and streamed, chat and completions."""
    chat = {**CHAT, "max_tokens": 8, "logprobs": True, "top_logprobs": 3}

    def cold():  # each request computed whole: a prompt half read from the cache rounds otherwise on some CPUs
        upstream[0].models.current.backend.clear_cache()

    cold()
    ours = via(gateway, "chat/completions", chat).json()
    cold()
    theirs = direct(upstream, "chat/completions", chat).json()
    content = ours["choices"][0]["logprobs"]["content"]
    assert content and content == theirs["choices"][0]["logprobs"]["content"]
    assert "".join(item["token"] for item in content) == ours["choices"][0]["message"]["content"]
    assert all(len(item["top_logprobs"]) == 3 for item in content)
    body = {**COMPLETION, "max_tokens": 8, "logprobs": 2}
    cold()
    ours = via(gateway, "completions", body).json()
    cold()
    theirs = direct(upstream, "completions", body).json()
    assert ours["choices"][0]["logprobs"]["tokens"] == theirs["choices"][0]["logprobs"]["tokens"]
    assert ours["choices"][0]["logprobs"]["token_logprobs"] == theirs["choices"][0]["logprobs"]["token_logprobs"]
    import json

    streamed_tokens = []
    with httpx.stream("POST", f"{gateway[1]}/chat/completions", json={**chat, "stream": True}, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                logprobs = (json.loads(line[6:])["choices"] or [{}])[0].get("logprobs")
                streamed_tokens += [item["token"] for item in (logprobs or {}).get("content") or ()]
    assert streamed_tokens == [item["token"] for item in content]


def record_upstream_requests(upstream, monkeypatch) -> list:
    runtime, tokens = upstream[0], []
    start = runtime.requests.start
    monkeypatch.setattr(runtime.requests, "start", lambda owner: tokens.append(start(owner)) or tokens[-1])
    return tokens


def test_a_client_leaving_mid_stream_cancels_the_engines_request(gateway, upstream, monkeypatch):
    tokens = record_upstream_requests(upstream, monkeypatch)
    body = {**COMPLETION, "max_tokens": LONG, "ban_eos_token": True, "stream": True}
    with httpx.stream("POST", f"{gateway[1]}/completions", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                break  # leave after the first piece: our connection closes
    # On the engine: its request's cancel token is set (a finished request's never is).
    assert wait_for(lambda: tokens and tokens[0].cancelled, timeout=60)


def test_stop_in_a_browser_tab_cancels_the_engines_request(gateway, upstream, monkeypatch):
    runtime = gateway[0]
    tokens = record_upstream_requests(upstream, monkeypatch)
    runtime.chosen.choose("tab-1", TINY)
    try:
        stream = runtime.stream("tab-1", "Ships", make_params({"max_new_tokens": LONG, "ban_eos_token": True,
                                                               "do_sample": False}))
        pieces = iter(stream)
        assert next(pieces)
        assert runtime.stop("tab-1") == 1
        rest = "".join(pieces)
        assert stream.stats.finish_reason == "cancelled" and stream.stats.new_tokens < LONG, rest
        assert wait_for(lambda: tokens and tokens[0].cancelled, timeout=60)
    finally:
        runtime.chosen.choose("tab-1", None)


def test_stop_strings_apply_here_and_there(gateway, upstream, monkeypatch):
    runtime = gateway[0]
    full = via(gateway, "completions", {**COMPLETION, "max_tokens": 40}).json()["choices"][0]["text"]
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assert stop.strip(), full  # premise: something visible to stop at
    cut = via(gateway, "completions", {**COMPLETION, "max_tokens": 40, "stop": [stop]}).json()["choices"][0]["text"]
    assert cut == full[: full.index(stop)]
    # Applied here too, whatever the engine does: a stop only our side knows of (the kind of
    # a chat template's turn end) ends the reply at the same place.
    from webui.generation.request import GenerationRequest
    from webui.remote.routing import RemoteEngines  # noqa: F401 - the type behind runtime.remotes

    remote = runtime.remotes.model(TINY)
    request = GenerationRequest("In the beginning", make_params({"max_new_tokens": 40, "do_sample": False,
                                                                  "stop": [stop]}))
    assert remote.generate(request).text() == cut


def test_chat_and_chat_instruct_modes_and_chat_actions_reach_a_remote_model(gateway, upstream):
    """A remote engine applies its own template: chat mode's script goes as text to
    continue (every action), chat-instruct's instruction as one user message; what needs
    our template (continue in instruct mode) is refused with a clear message."""
    from webui.chat.characters import Character
    from webui.chat.prompt import ChatPrompt, ChatSetup
    from webui.generation.request import GenerationError

    runtime, engine = gateway[0], upstream[0]
    runtime.chosen.choose("modes", TINY)
    params = make_params({"max_new_tokens": 12, "do_sample": False, "ban_eos_token": True})
    turns = [{"role": "user", "content": "Who made the light?"}]
    setup = ChatSetup(mode="chat", character=Character(name="Ann"))
    for action, history in (("reply", turns), ("impersonate", turns),
                            ("continue", [*turns, {"role": "assistant", "content": "It was"}])):
        prompt = ChatPrompt(setup, history, action)
        form = prompt.for_engine()
        assert form.text.endswith({"reply": "Ann:", "impersonate": "You:", "continue": "It was"}[action])
        ours = "".join(runtime.stream("modes", prompt, params))
        # The engine itself, given the same script and turn-ending names, writes the same.
        direct = make_params({"stop": list(form.stops)}, base=params)
        assert ours and ours == "".join(engine.stream("direct", form.text, direct)), action
    instruct = ChatPrompt(ChatSetup(mode="chat-instruct", character=Character(name="Ann")), turns)
    messages = instruct.for_engine().messages
    assert len(messages) == 1 and "Who made the light?" in messages[0]["content"]
    assert "".join(runtime.stream("modes", instruct, params))  # the engine's template opens the reply
    continuing = ChatPrompt(ChatSetup(), [*turns, {"role": "assistant", "content": "It"}], "continue")
    with pytest.raises(GenerationError, match="needs the local model's template"):
        "".join(runtime.stream("modes", continuing, params))


def test_engine_down_slow_or_garbage_gives_a_clear_error_and_the_app_keeps_serving(flaky):
    runtime, url, bad = flaky
    listed = {c["id"] for c in httpx.get(f"{url}/models", timeout=60).json()["data"]}
    assert {"slow-model", "garbage-model", TINY} <= listed  # the engine that is down lists nothing
    assert "down" in runtime.remotes.problems and "not reachable" in runtime.remotes.problems["down"]
    missing = via(flaky, "completions", {**COMPLETION, "model": "anything"})
    assert missing.status_code == 404 and "down is not reachable" in missing.json()["error"]["message"]

    slow = via(flaky, "completions", {**COMPLETION, "model": "slow-model"})
    assert slow.status_code == 502 and "slow sent nothing for 1 s" in slow.json()["error"]["message"]
    assert wait_for(bad.closed.is_set, timeout=30)  # and we hung up on it
    garbage = via(flaky, "chat/completions", {**CHAT, "model": "garbage-model"})
    assert garbage.status_code == 502 and "not JSON" in garbage.json()["error"]["message"]
    text, _ = streamed(url, "chat/completions", {**CHAT, "model": "garbage-model"})
    assert text == ""  # a stream says so in an error event (checked below), never hangs
    with httpx.stream("POST", f"{url}/chat/completions", json={**CHAT, "model": "garbage-model", "stream": True},
                      timeout=60) as response:
        assert any("not JSON" in line for line in response.iter_lines())
    # Meanwhile a working engine behind the same gateway still answers.
    assert via(flaky, "completions", {**COMPLETION, "model": TINY}).status_code == 200


def test_an_engine_that_goes_away_after_listing_gives_502(models_root, tmp_path):
    from webui.runtime import build_runtime

    engine_runtime = build_runtime(make_settings(models_root, tmp_path / "e"))
    server, engine_url = serve(engine_runtime)
    gateway = build_runtime(make_settings(tmp_path, tmp_path / "g", model=None,
                                          remote_engines=(RemoteEngineConfig(url=engine_url, name="gone"),)))
    front, url = serve(gateway)
    try:
        assert TINY in gateway.remotes.models()
        server.stop()
        failed = via((gateway, url), "completions", COMPLETION)
        assert failed.status_code == 502 and "gone is not reachable" in failed.json()["error"]["message"]
    finally:
        front.stop()


def test_the_engines_key_never_reaches_a_message_or_a_log(flaky, gateway, caplog):
    caplog.set_level(logging.DEBUG)
    echoed = via(flaky, "completions", {**COMPLETION, "model": "echo-model"})
    assert echoed.status_code == 502
    message = echoed.json()["error"]["message"]
    assert "bad key Bearer [engine key]" in message  # premise: the engine did echo it; we scrubbed it
    texts = [message, echoed.text, caplog.text, httpx.get(f"{gateway[1]}/models", timeout=60).text,
             str(gateway[0].remotes.problems), str(flaky[0].remotes.problems), " ".join(flaky[0].warnings)]
    texts += [repr(e.config) for e in gateway[0].remotes.engines]
    assert not [t for t in texts if UPSTREAM_KEY in t]


def test_usage_is_counted_per_api_key_for_the_admin(gateway):
    before = httpx.get(f"{gateway[1]}/internal/usage", headers={"x-api-key": ADMIN_KEY}, timeout=60).json()["usage"]
    reply = httpx.post(f"{gateway[1]}/completions", json=COMPLETION, headers={"x-api-key": "caller-one-key"},
                       timeout=120).json()
    streamed(gateway[1], "completions", COMPLETION, {"x-api-key": "caller-one-key"})
    after = httpx.get(f"{gateway[1]}/internal/usage", headers={"x-api-key": ADMIN_KEY}, timeout=60).json()["usage"]
    new = {k: v for k, v in after.items() if v != before.get(k)}
    assert len(new) == 1
    label, counted = next(iter(new.items()))
    assert "caller-one-key" not in label
    assert counted == {"requests": 2, "prompt_tokens": 2 * reply["usage"]["prompt_tokens"],
                       "completion_tokens": 2 * reply["usage"]["completion_tokens"]}
    assert httpx.get(f"{gateway[1]}/internal/usage", timeout=60).status_code == 401


def test_only_the_operator_configures_engines(tmp_path):
    from webui.cli import parse_flags
    from webui.settings import SettingsError, build_settings

    flags, _ = parse_flags(["--remote-engine", "http://127.0.0.1:9/v1", "--user-data-dir", str(tmp_path)])
    settings, _ = build_settings(flags)
    assert [e.url for e in settings.all_remote_engines()] == ["http://127.0.0.1:9/v1"]
    assert settings.all_remote_engines()[0].verify_tls
    with pytest.raises(SettingsError) as refused:
        build_settings(parse_flags(["--remote-engine", "http://user:hunter2pass@gpu:8000/v1"])[0])
    assert "hunter2pass" not in str(refused.value)
    (tmp_path / "settings.yaml").write_text(
        "remote_engines:\n  - url: https://gpu-box:8000/v1\n    name: gpu\n    api_key_env: GPU_KEY\n    timeout: 30\n")
    settings, warnings = build_settings({"user_data_dir": tmp_path})
    assert not warnings and settings.all_remote_engines()[0].name == "gpu"


AUDITED = """
import sys
sys.path.insert(0, 'tests')
from audited_server import install_hook
install_hook(sys.argv[1])
from starlette.testclient import TestClient  # in-process: its requests open no socket
from webui.api.openai_api import build_api
from webui.cli import parse_flags
from webui.runtime import build_runtime
from webui.settings import build_settings

flags, _ = parse_flags(sys.argv[2:])
runtime = build_runtime(build_settings({**flags, "model": None})[0])
client = TestClient(build_api(runtime), base_url="http://127.0.0.1")
print(client.get("/v1/models").json())
print(client.post("/v1/completions", json={"model": "elsewhere", "prompt": "Hi"}).status_code)
"""


@pytest.mark.parametrize("configured", [False, True])
def test_no_engine_configured_no_connection_leaves(tmp_path, configured):
    import subprocess
    import sys
    from pathlib import Path

    log = tmp_path / "sockets.log"
    log.touch()
    port = free_port()  # nothing listens there: a connection attempt is logged, then fails
    flags = ["--user-data-dir", str(tmp_path / "ud")] + (["--remote-engine", f"http://127.0.0.1:{port}/v1"]
                                                        if configured else [])
    run = subprocess.run([sys.executable, "-c", AUDITED, str(log), *flags], capture_output=True, text=True,
                         timeout=300, cwd=Path(__file__).parent.parent)
    assert run.returncode == 0, run.stderr[-2000:]
    connects = [line for line in log.read_text().splitlines() if line.startswith(("connect", "sendto"))]
    lookups = [line for line in log.read_text().splitlines() if line.startswith("lookup")]
    if configured:  # the premise: the hook sees our client's connection, to the configured engine only
        assert connects and set(connects) == {"connect 127.0.0.1"}, connects
    else:
        assert connects == [] and lookups == [], (connects, lookups)


def test_a_browser_tab_picks_a_remote_model_for_notebook_and_chat(gateway, upstream):
    from gradio_client import Client

    from webui.ui.app import launch

    runtime = gateway[0]
    app, url = launch(runtime, block=False, port=free_port())
    try:
        tab, other = Client(url, verbose=False), Client(url, verbose=False)
        note = tab.predict(TINY, api_name="/model_talk_to")
        assert "upstream" in note and "min_p" in note
        prompt = "In the beginning"
        text, stats = tab.predict(prompt, api_name="/notebook_generate")
        expected = "".join(upstream[0].stream("direct", prompt, runtime.default_params))
        assert text == prompt + expected and "tokens/s" in stats
        local_text, _ = other.predict(prompt, api_name="/notebook_generate")  # the other tab: the local model
        assert local_text == prompt + "".join(runtime.stream("direct", prompt, runtime.default_params))
        assert local_text != text  # premise: the two models write differently
        history = tab.predict("Hello there", api_name="/chat_send")[0]
        assert history[-1]["role"] == "assistant" and history[-1]["content"]
        with pytest.raises(Exception, match="not served|not in the list of choices"):
            tab.predict("../../etc/passwd", api_name="/model_talk_to")
        for page in (httpx.get(url, timeout=60).text, httpx.get(f"{url}/config", timeout=60).text):
            assert UPSTREAM_KEY not in page
    finally:
        app.close()


def test_each_kind_sends_its_own_names_and_only_what_it_takes():
    from webui.remote.capabilities import ignored, upstream_fields

    params = make_params({"repetition_penalty": 1.1, "ban_eos_token": True, "dry_multiplier": 0.8, "do_sample": False,
                          "max_new_tokens": 30, "top_k": 5})
    llama = upstream_fields("llama.cpp", params, ("</s>",))
    assert llama == {"max_tokens": 30, "repeat_penalty": 1.1, "ignore_eos": True, "dry_multiplier": 0.8,
                     "top_k": 5, "temperature": 0.0, "stop": ["</s>"]}
    vllm = upstream_fields("vllm", params, ())
    assert vllm == {"max_tokens": 30, "repetition_penalty": 1.1, "ignore_eos": True, "top_k": 5, "temperature": 0.0}
    assert ignored("vllm", params) == ["dry_multiplier"]
    assert ignored("openai", params) == ["ban_eos_token", "dry_multiplier", "repetition_penalty", "top_k"]
    assert ignored("webui", params) == []


def test_ollama_routes_reach_a_remote_model_and_its_embeddings_are_refused(gateway, upstream):
    """A remote engine's model answers /api/chat and /api/generate (raw) like /v1; embeddings
    are computed only by the local model, and asking a remote one is a 400 naming `model`."""
    import json

    root = gateway[1].removesuffix("/v1")
    options = {"temperature": 0, "num_predict": 24}
    chat = httpx.post(f"{root}/api/chat", json={**CHAT, "options": options, "stream": False}, timeout=120).json()
    assert chat["message"]["content"] == direct(upstream, "chat/completions", CHAT).json()["choices"][0]["message"][
        "content"]
    raw = {"model": TINY, "prompt": COMPLETION["prompt"], "raw": True, "options": options}
    lines = httpx.post(f"{root}/api/generate", json=raw, timeout=120).text.splitlines()
    text = "".join(json.loads(line)["response"] for line in lines)
    assert text == direct(upstream, "completions", COMPLETION).json()["choices"][0]["text"]
    refused = httpx.post(f"{gateway[1]}/embeddings", json={"model": TINY, "input": "x"}, timeout=60)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "model"
    refused = httpx.post(f"{root}/api/embed", json={"model": TINY, "input": "x"}, timeout=60)
    assert refused.status_code == 400 and "remote engine upstream" in refused.json()["error"]
    local = httpx.post(f"{root}/api/embed", json={"model": LOCAL, "input": "x"}, timeout=60).json()
    assert len(local["embeddings"][0]) == 64
