"""Models on demand (webui/resident.py): a request naming a listed model loads it, several
models stay resident within a budget, idle ones and keep_alive 0 unload; real tiny
models, the real API server, the official openai and ollama clients."""

from __future__ import annotations

import threading
import time

import httpx
import ollama
import openai
import pytest

from tests.conftest import ADMIN_KEY, API_KEY, free_port, make_settings, wait_for
from tests.tiny_models import build_llama
from webui.fit import GIB
from webui.generation.params import make_params

A, B = "tiny-a", "tiny-b"
HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-models")
    build_llama(root / A, seed=0)
    build_llama(root / B, seed=1)
    return root


@pytest.fixture()
def serve(two_models, tmp_path):
    """serve(**settings) -> (runtime, API url): a runtime with A loaded, and its API server."""
    from webui.api.openai_api import APIServer
    from webui.runtime import build_runtime

    started = []

    def start(**overrides):
        values = dict(model=A, api_key=API_KEY, admin_key=ADMIN_KEY)
        values.update(overrides)
        runtime = build_runtime(make_settings(two_models, tmp_path / "user_data", **values))
        server = APIServer(runtime, port=free_port())
        url = server.start()
        started.append((runtime, server))
        return runtime, url

    yield start
    for runtime, server in started:
        server.stop()
        runtime.resident.close()
        runtime.engine.close()


def client(url: str, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)


def slowed(monkeypatch, loaded, seen: list | None = None, before=None):
    """Slow `loaded`'s backend step by 10 ms (recording each step in `seen`; `before` runs first)."""
    backend = loaded.backend
    step = backend.step

    def slow_step(slots, tokens):
        if before is not None:
            before()
        if seen is not None:
            seen.append(loaded.name)
        time.sleep(0.01)
        return step(slots, tokens)

    monkeypatch.setattr(backend, "step", slow_step)


def test_an_api_request_naming_an_unloaded_model_loads_it_and_answers(serve):
    runtime, url = serve()
    assert B in [m.id for m in client(url).models.list()]  # the listing offers it
    assert runtime.resident.find(B) is None
    reply = client(url).chat.completions.create(model=B, messages=HELLO, max_tokens=8, temperature=0)
    assert reply.model == B and reply.choices[0].message.content
    resident = runtime.resident.find(B)
    assert resident is not None and resident.engine is not runtime.engine  # its own engine and batch
    assert runtime.models.current.name == A  # the loaded model stays
    assert [r.name for r in runtime.resident.entries()] == [A, B]
    from webui.ui.model_tab import status_text

    shown = status_text(runtime)  # the Model tab: what is in memory, and since when
    assert f"`{A}`: in memory since" in shown and f"`{B}`: in memory since" in shown


def test_with_room_for_one_the_other_is_unloaded_only_after_its_running_reply_ends(serve, monkeypatch):
    runtime, url = serve()
    need, _ = runtime.fit_need(A)
    runtime.settings = runtime.settings.model_copy(update={"max_resident_gib": need * 1.5 / GIB})
    slowed(monkeypatch, runtime.models.current)
    stream = client(url).chat.completions.create(model=A, messages=HELLO, max_tokens=60, temperature=0,
                                                 stream=True, extra_body={"ban_eos_token": True})
    chunks = iter(stream)
    first = next(chunks)  # A's reply is running
    assert first.model == A
    loaded_b = {}
    thread = threading.Thread(target=lambda: loaded_b.setdefault(
        "reply", client(url).chat.completions.create(model=B, messages=HELLO, max_tokens=4, temperature=0)))
    thread.start()
    assert wait_for(runtime.models.swap_waiting)  # B's load waits to take A away
    rest = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert rest  # A's reply ran to its end, not cut off by the unload
    thread.join(120)
    assert loaded_b["reply"].model == B and loaded_b["reply"].choices[0].message.content
    assert [r.name for r in runtime.resident.entries()] == [B]


def test_an_idle_model_is_unloaded_after_the_timeout(serve):
    now = [1000.0]
    runtime, url = serve(idle_unload_minutes=5)
    runtime.resident.clock = lambda: now[0]
    client(url).chat.completions.create(model=B, messages=HELLO, max_tokens=4, temperature=0)
    now[0] += 4 * 60
    client(url).chat.completions.create(model=A, messages=HELLO, max_tokens=4, temperature=0)
    now[0] += 2 * 60  # B idle 6 minutes, A 2
    assert runtime.resident.sweep() == [B]
    assert [r.name for r in runtime.resident.entries()] == [A]
    now[0] += 4 * 60
    assert runtime.resident.sweep() == [A] and runtime.models.current is None


def test_ollama_keep_alive_zero_unloads_at_once_after_the_reply(serve):
    runtime, url = serve()
    root = url.removesuffix("/v1")
    olla = ollama.Client(host=root, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120)
    reply = olla.chat(model=B, messages=HELLO, options={"num_predict": 4, "temperature": 0}, keep_alive="10m")
    assert reply.message.content
    ps = {m.model: m for m in olla.ps().models}
    assert set(ps) == {A, B} and ps[B].expires_at is not None
    reply = olla.chat(model=B, messages=HELLO, options={"num_predict": 4, "temperature": 0}, keep_alive=0)
    assert reply.message.content
    assert wait_for(lambda: runtime.resident.find(B) is None)
    assert [m.model for m in olla.ps().models] == [A]


def test_two_tabs_talk_to_two_resident_models_at_the_same_time(serve, monkeypatch):
    runtime, url = serve()
    client(url).chat.completions.create(model=B, messages=HELLO, max_tokens=1)  # B resident
    seen: list[str] = []
    b_stepped = threading.Event()
    waited: list[bool] = []
    # A's steps wait for B to step: the replies can only both end if the two engines run at once.
    slowed(monkeypatch, runtime.models.current, seen, before=lambda: waited.append(b_stepped.wait(60)))
    slowed(monkeypatch, runtime.resident.find(B).loaded, seen, before=b_stepped.set)
    replies = {}

    def ask(name):
        replies[name] = client(url).chat.completions.create(model=name, messages=HELLO, max_tokens=12,
                                                            temperature=0, extra_body={"ban_eos_token": True})

    threads = [threading.Thread(target=ask, args=(name,)) for name in (A, B)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert replies[A].model == A and replies[B].model == B
    assert replies[A].choices[0].message.content and replies[B].choices[0].message.content
    assert A in seen and B in seen  # each model's own engine stepped its own request
    assert waited and all(waited)


def test_a_chat_tab_talks_to_its_chosen_resident_model(serve):
    runtime, _url = serve()
    runtime.resident_model(B, owner=False)
    runtime.chosen.choose("tab-2", B)
    seen: list[str] = []
    b = runtime.resident.find(B).loaded
    step = b.backend.step
    b.backend.step = lambda slots, tokens: seen.append(B) or step(slots, tokens)
    text = "".join(runtime.stream("tab-2", "Hello", make_params({"max_new_tokens": 4}, base=runtime.default_params)))
    assert text and seen


def test_a_non_owner_cannot_load_on_demand_when_it_is_off(serve):
    runtime, url = serve(load_on_demand=False)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client(url).chat.completions.create(model=B, messages=HELLO, max_tokens=4)
    assert refused.value.status_code == 403 and refused.value.body["param"] == "model"
    assert "on demand is off" in refused.value.message
    assert runtime.resident.find(B) is None
    assert B not in [m.id for m in client(url).models.list()]
    # The owner (the admin key) still may.
    reply = client(url, ADMIN_KEY).chat.completions.create(model=B, messages=HELLO, max_tokens=4)
    assert reply.model == B


def test_listen_turns_load_on_demand_off_unless_set(two_models, tmp_path):
    local = make_settings(two_models, tmp_path)
    assert local.loads_on_demand
    shared = make_settings(two_models, tmp_path, listen=True, gradio_auth="ann:password1")
    assert not shared.loads_on_demand
    assert make_settings(two_models, tmp_path, listen=True, gradio_auth="ann:password1",
                         load_on_demand=True).loads_on_demand


def test_a_model_that_does_not_fit_is_refused_with_will_it_fits_reason(serve):
    runtime, url = serve()
    need, _ = runtime.fit_need(B)
    runtime.settings = runtime.settings.model_copy(update={"max_resident_gib": need / 2 / GIB})
    with pytest.raises(openai.InternalServerError) as refused:
        client(url).chat.completions.create(model=B, messages=HELLO, max_tokens=4)
    assert refused.value.status_code == 503 and refused.value.body["code"] == "model_does_not_fit"
    assert "Will it fit? counts" in refused.value.message and "--max-resident-gib" in refused.value.message
    assert runtime.resident.find(B) is None and runtime.models.current.name == A


def test_will_it_fit_says_no_and_the_load_is_refused_with_its_verdict(serve, monkeypatch):
    runtime, url = serve(model=None)  # nothing resident whose unload could make room
    from webui import fit

    need, problem = runtime.fit_need(B)
    assert problem is None
    # A machine with one byte less free than Will it fit? counts for B (weights, KV cache, peak).
    monkeypatch.setattr(fit.Memory, "detect", classmethod(lambda cls: fit.Memory((), need - 1)))
    with pytest.raises(openai.InternalServerError) as refused:
        client(url).chat.completions.create(model=B, messages=HELLO, max_tokens=4)
    assert "does not fit in RAM" in refused.value.message
    status = httpx.post(f"{url}/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                        json={"model": B, "messages": HELLO, "max_tokens": 4})
    assert status.status_code == 503 and status.json()["error"]["param"] == "model"


@pytest.mark.parametrize(("sent", "seconds"), [
    (0, 0.0), ("0", 0.0), (30, 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("-1", -1.0), ("-1m", -60.0),
    ("250ms", 0.25), (None, None)])
def test_keep_alive_reads_seconds_and_go_durations(sent, seconds):
    from webui.api.ollama_schemas import keep_alive_seconds

    assert keep_alive_seconds(sent) == seconds


@pytest.mark.parametrize("sent", ["soon", "5 minutes", "5m5", "1" * 40, float("nan")])
def test_a_keep_alive_that_is_no_duration_is_a_400_naming_it(sent):
    from webui.api.errors import APIError
    from webui.api.ollama_schemas import keep_alive_seconds

    with pytest.raises(APIError) as refused:
        keep_alive_seconds(sent)
    assert refused.value.status == 400 and refused.value.param == "keep_alive"


def test_a_gguf_model_asked_for_while_its_engine_builds_says_so(two_models, tmp_path, monkeypatch):
    from webui.api.openai_api import APIServer
    from webui.loaders import gguf_build
    from webui.runtime import build_runtime
    from webui.settings import PROJECT_ROOT

    models = tmp_path / "models"
    models.mkdir()
    (models / A).symlink_to(two_models / A)
    (models / "demo-gguf").symlink_to(PROJECT_ROOT / "models" / "demo-kjv-4m-gguf")
    data = tmp_path / "user_data"
    (data / "logs").mkdir(parents=True)
    # What scripts/build_gguf.sh writes while it runs; llama.cpp not importable yet.
    (data / "logs" / "gguf-build.state").write_text(f"building {time.time():.0f} 1\n")
    monkeypatch.setattr(gguf_build, "llama_cpp_installed", lambda: False)
    runtime = build_runtime(make_settings(models, data, model=A, api_key=API_KEY))
    server = APIServer(runtime, port=free_port())
    url = server.start()
    try:
        with pytest.raises(openai.InternalServerError) as refused:
            client(url).chat.completions.create(model="demo-gguf", messages=HELLO, max_tokens=4)
        assert refused.value.status_code == 503 and refused.value.body["code"] == "engine_building"
        assert "still being built" in refused.value.message
        from webui.ui.model_tab import status_text

        assert "being built in the background" in status_text(runtime)
    finally:
        server.stop()
        runtime.resident.close()
        runtime.engine.close()
