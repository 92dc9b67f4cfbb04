"""Chunked prefill: a long new prompt is read in pieces between decoding steps, so the
replies already running keep getting tokens while it is read (webui/generation/engine.py
`_prefill`).  Counted in forward passes and tokens, never in time.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import wait_for
from tests.test_speculative import engine_for, forwards
from webui.generation.engine import GenerationRequest
from webui.generation.params import make_params

CHUNK = 16
LONG = " ".join(f"On day {n} the keeper wrote that the sea was calm and the ships passed." for n in range(12))


def greedy(n: int, **extra):
    return make_params({"temperature": 0.0, "max_new_tokens": n, "ban_eos_token": True, **extra})


@pytest.fixture
def engine(models_root, monkeypatch):
    engine = engine_for(models_root, max_batch=8, prefill_chunk=CHUNK, prompt_lookup=0)
    backend = engine.manager.current.backend
    step = backend.step

    def slow_step(slots, tokens):  # the running reply is still running when the long prompt arrives
        time.sleep(0.01)
        return step(slots, tokens)

    monkeypatch.setattr(backend, "step", slow_step)
    yield engine
    engine.close()
    engine.manager.unload()


def test_a_running_reply_gets_tokens_between_the_pieces_of_a_long_prompt(engine, models_root):
    loaded = engine.manager.current
    prompt_tokens = len(loaded.tokenizer(LONG)["input_ids"])
    assert prompt_tokens > 8 * CHUNK
    running = engine.generate(GenerationRequest("The storm", greedy(300)))
    reader = threading.Thread(target=running.text)
    reader.start()
    try:
        assert wait_for(lambda: running.new_tokens > 0)
        seen = forwards(loaded.model)
        progress: list[int] = []  # the running reply's tokens at each piece of the long prompt
        loaded.model.register_forward_pre_hook(
            lambda module, args, kwargs: progress.append(running.new_tokens)
            if kwargs["input_ids"].shape[1] > 1 else None, with_kwargs=True)
        long = engine.generate(GenerationRequest(LONG, greedy(8)))
        reply = long.text()
        assert long.stats.new_tokens == 8
        pieces = [shape for shape in seen if shape[1] > 1]
        # Read in pieces of at most CHUNK tokens, one sequence each: never the whole prompt at once.
        assert len(pieces) >= prompt_tokens // CHUNK and all(shape == (1, CHUNK) for shape in pieces[:-1])
        # Between every two pieces the running reply got a token (a decoding step ran).
        assert len(progress) == len(pieces)
        assert all(later > earlier for earlier, later in zip(progress, progress[1:], strict=False))
        assert not running.stats  # still running all along
    finally:
        running.request.cancel.cancel()
        reader.join(timeout=60)
    # The same reply as the prompt read whole, alone (greedy, fp32), on a server without chunks or cache.
    whole = engine_for(models_root, max_batch=8, prefill_chunk=0, prefix_cache_bytes=0)
    try:
        alone = whole.generate(GenerationRequest(LONG, greedy(8)))
        assert alone.text() == reply
        assert alone.stats.prompt_tokens == prompt_tokens
    finally:
        whole.close()
        whole.manager.unload()


def test_a_prompt_read_alone_is_read_whole(engine):
    seen = forwards(engine.manager.current.model)
    engine.generate(GenerationRequest(LONG, greedy(2))).text()
    assert seen[0][1] > CHUNK  # nothing else ran: no reason to cut it up


def test_a_request_cancelled_while_its_prompt_is_read_ends_and_frees_its_place(engine, monkeypatch):
    backend = engine.manager.current.backend
    prefill, pieces = backend.prefill, []
    running = engine.generate(GenerationRequest("The storm", greedy(300)))
    request = GenerationRequest(LONG, greedy(8))

    def cancelling_prefill(slot, tokens):  # the Stop button pressed after the second piece
        pieces.append(tokens)
        if len(pieces) == 2:
            request.cancel.cancel()
        return prefill(slot, tokens)

    monkeypatch.setattr(backend, "prefill", cancelling_prefill)
    reader = threading.Thread(target=running.text)
    reader.start()
    try:
        assert wait_for(lambda: running.new_tokens > 0)
        long = engine.generate(request)
        assert long.text() == ""
        assert len(pieces) == 2  # no piece read after the cancel
        assert long.stats.finish_reason == "cancelled"
        assert wait_for(lambda: engine.pending == 1)  # only the running reply is left
    finally:
        running.request.cancel.cancel()
        reader.join(timeout=60)
