"""Two browser tabs (two Gradio sessions of the real app) talk to two models at once:
the chat's model picker loads the second beside the first for its tab alone
(webui/ui/chat_model.py, webui/resident.py)."""

from __future__ import annotations

import threading
import time

import pytest
from gradio_client import Client

from tests.conftest import free_port, make_settings, wait_for
from tests.tiny_models import build_llama

A, B = "tiny-a", "tiny-b"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from webui.runtime import build_runtime
    from webui.ui.app import launch

    root = tmp_path_factory.mktemp("two-models")
    build_llama(root / A, seed=0)
    build_llama(root / B, seed=1)
    runtime = build_runtime(make_settings(root, tmp_path_factory.mktemp("user_data"), model=A))
    server, url = launch(runtime, block=False, port=free_port())
    yield runtime, url
    server.close()
    runtime.resident.close()


def test_two_tabs_talk_to_two_models_at_the_same_time(app, monkeypatch):
    runtime, url = app
    first, second = Client(url, verbose=False), Client(url, verbose=False)
    note = first.predict(B, api_name="/chat_model_load")
    assert f"This tab talks to **{B}**" in str(note)
    assert runtime.resident.find(B) is not None and runtime.models.current.name == A
    assert runtime.chosen.get(first.session_hash) == B and runtime.chosen.get(second.session_hash) is None

    seen: list[str] = []
    b_stepped = threading.Event()
    waited: list[bool] = []

    def slowed(loaded, before):
        step = loaded.backend.step

        def slow_step(slots, tokens):
            before()
            seen.append(loaded.name)
            time.sleep(0.01)
            return step(slots, tokens)

        monkeypatch.setattr(loaded.backend, "step", slow_step)

    # A's steps wait for one of B's: both replies can only end if the two engines run at once.
    slowed(runtime.models.current, lambda: waited.append(b_stepped.wait(60)))
    slowed(runtime.resident.find(B).loaded, b_stepped.set)
    jobs = [first.submit("Hello there", api_name="/chat_send"), second.submit("Hello there", api_name="/chat_send")]
    assert wait_for(lambda: all(job.done() for job in jobs), timeout=180)
    for job in jobs:
        chat = job.outputs()[-1][0]
        assert chat[-1]["role"] == "assistant" and chat[-1]["content"]
    assert A in seen and B in seen and waited and all(waited)
