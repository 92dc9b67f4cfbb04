"""A hostile remote engine (round 2, N40/N41): an endless event line and a huge model list
are refused while reading, and the app still builds and serves.  Real servers on loopback
(tests/remote_servers.py)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import free_port, make_settings, wait_for
from tests.remote_servers import ENDLESS_LIMIT, HUGE_MODELS, Misbehaving
from webui.remote.client import MAX_LINE_BYTES, MAX_LIST_BYTES
from webui.remote.config import RemoteEngineConfig


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A runtime with no local model and two hostile engines, its API, and the engines."""
    from webui.api.openai_api import APIServer
    from webui.runtime import build_runtime

    bad = Misbehaving(free_port())
    base = bad.start()
    engines = (RemoteEngineConfig(url=f"{base}/endless/v1", name="endless"),
               RemoteEngineConfig(url=f"{base}/huge/v1", name="huge"))
    runtime = build_runtime(make_settings(tmp_path_factory.mktemp("none"), tmp_path_factory.mktemp("hr"),
                                          model=None, remote_engines=engines))
    server = APIServer(runtime, port=free_port())
    url = server.start()
    yield runtime, url, bad
    server.stop()
    bad.stop()


def test_an_endless_event_line_is_refused_while_it_is_read(hostile):
    runtime, url, bad = hostile
    assert HUGE_MODELS * 30 > MAX_LIST_BYTES and ENDLESS_LIMIT > 16 * MAX_LINE_BYTES  # the servers pass the caps
    answer = httpx.post(f"{url}/chat/completions", timeout=120, json={
        "model": "endless-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
    assert answer.status_code == 502, answer.text
    assert "endless sent an event over" in answer.json()["error"]["message"]
    assert wait_for(bad.endless_done.is_set, timeout=60)
    # We hung up at the cap: the engine got to send the cap plus what the socket buffers hold,
    # not the whole 256 MiB that main buffered (330 MB/s of memory) before checking.
    assert bad.endless_sent < 16 * MAX_LINE_BYTES, bad.endless_sent
    assert httpx.get(f"{url}/models", timeout=60).status_code == 200  # still serving


def test_a_huge_model_list_is_refused_while_read_and_reported(hostile):
    runtime, url, _ = hostile
    listed = runtime.remotes.models(fresh=True)
    assert not any(engine.name == "huge" for engine in listed.values())
    assert "endless-model" in listed  # the other engine is listed as usual
    assert "huge sent a model list over" in runtime.remotes.problems["huge"]
    models = httpx.get(f"{url}/models", timeout=60)
    assert models.status_code == 200 and len(models.json()["data"]) < 100


def test_the_app_builds_beside_a_hostile_engine_and_shows_its_problem(hostile):
    """On main a 3M-model list took 1.9 GB while the UI was built and the launch failed."""
    from webui.ui.app import launch

    runtime, _, _ = hostile
    app, url = launch(runtime, block=False, port=free_port())
    try:
        assert httpx.get(url, timeout=60).status_code == 200
        config = json.dumps(app.config, default=repr)  # what the page is sent: the Model tab's choices and note
        assert "m299999" not in config and "huge sent a model list over" in config
    finally:
        app.close()
