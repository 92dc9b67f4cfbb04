"""The generation engine on a real (tiny) transformers model."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from tests.conftest import needs_proc, thread_activity, wait_for
from webui.generation.engine import POOL_IDLE_SECONDS, CancelToken, GenerationError, GenerationRequest
from webui.generation.params import make_params

PROMPT = "The keeper climbed the stairs"


def greedy(n, **extra):
    return make_params({"temperature": 0.0, "max_new_tokens": n, **extra})


def test_stream_yields_pieces_and_stats(engine):
    stream = engine.generate(GenerationRequest(PROMPT, greedy(40)))
    pieces = list(stream)
    assert pieces and all(isinstance(p, str) and p for p in pieces)
    stats = stream.stats
    assert stats.new_tokens == 40 and stats.finish_reason == "length"
    assert stats.prompt_tokens > 3 and stats.tokens_per_second > 0
    assert "tokens/s" in stats.summary()


def test_greedy_is_reproducible_and_seed_controls_sampling(engine):
    a = engine.generate(GenerationRequest(PROMPT, greedy(30))).text()
    b = engine.generate(GenerationRequest(PROMPT, greedy(30))).text()
    assert a == b
    sample = lambda seed: engine.generate(  # noqa: E731
        GenerationRequest(PROMPT, make_params({"temperature": 1.5, "max_new_tokens": 30, "seed": seed}))
    ).text()
    assert sample(7) == sample(7)
    assert len({sample(s) for s in (1, 2, 3)}) > 1


def test_stop_string_across_tokens_ends_reply_and_is_hidden(engine):
    first = engine.generate(GenerationRequest(PROMPT, greedy(60), logprobs=0))
    full = first.text()
    # Each token's own text (a streamed piece can hold several tokens when the reader
    # lags): take 2 characters either side of the token boundary nearest the middle
    # whose window occurs nowhere earlier.
    ends = list(itertools.accumulate(len(entry.text) for entry in first.logprobs))
    boundaries = sorted((b for b in ends if 2 <= b <= len(full) - 2), key=lambda b: abs(b - len(full) // 2))
    boundary = next(b for b in boundaries if full.find(full[b - 2 : b + 2]) == b - 2)
    stop = full[boundary - 2 : boundary + 2]
    assert len(stop) == 4
    stream = engine.generate(GenerationRequest(PROMPT, greedy(60, stop=[stop])))
    shown = stream.text()
    assert shown == full[: full.find(stop)]
    assert stop not in shown
    assert stream.stats.finish_reason == "stop"
    assert stream.stats.new_tokens < 60


def test_cancel_ends_request_within_a_step(engine):
    request = GenerationRequest(PROMPT, greedy(400))
    stream = engine.generate(request)
    at_cancel = None
    for _ in stream:
        if at_cancel is None:
            request.cancel.cancel()
            at_cancel = stream.tokens_so_far
    assert stream.stats.finish_reason == "cancelled"
    # The decoding loop checks the request's token after every step: at most one
    # more token (the one being computed when Stop came) follows.
    assert stream.stats.new_tokens <= at_cancel + 1 < 400


def test_closing_the_stream_cancels_generation(engine):
    request = GenerationRequest(PROMPT, greedy(400))
    stream = iter(engine.generate(request))
    next(stream)
    stream.close()  # what a dropped client does
    assert request.cancel.cancelled
    # The model is free again promptly: the next request runs to its full length.
    after = engine.generate(GenerationRequest(PROMPT, greedy(5, ban_eos_token=True)))
    assert after.text() and after.stats.new_tokens == 5


def test_cancel_of_one_request_leaves_a_concurrent_one_running(engine):
    first = GenerationRequest(PROMPT, greedy(300))
    second = GenerationRequest("Ships passed", greedy(60))
    s1 = engine.generate(first)
    s2 = engine.generate(second)
    it1 = iter(s1)
    next(it1)
    first.cancel.cancel()
    list(it1)
    assert s2.text() and s2.stats.finish_reason == "length"
    assert s2.stats.new_tokens == 60
    assert s1.stats.finish_reason == "cancelled"


def test_concurrent_requests_never_interleave(engine):
    """Each caller gets exactly the text it would get alone."""
    prompts = ["The keeper", "Ships passed", "In winter the wind"]
    alone = {p: engine.generate(GenerationRequest(p, greedy(40))).text() for p in prompts}
    results: dict[str, str] = {}

    def run(p):
        results[p] = engine.generate(GenerationRequest(p, greedy(40))).text()

    threads = [threading.Thread(target=run, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == alone


def test_prompt_longer_than_context_is_truncated_by_policy(engine):
    long_prompt = "The keeper counted the steps. " * 400
    stream = engine.generate(GenerationRequest(long_prompt, greedy(20)))
    stream.text()
    assert stream.stats.truncated_tokens > 0
    assert stream.stats.prompt_tokens + 20 <= 512
    assert "dropped" in stream.stats.summary()


def test_generation_errors_reach_the_caller_promptly(runtime):
    """A failure inside the worker thread surfaces as the error it is, not a hang: no
    model loaded keeps its type and its 503 (it was a bare 500 message before)."""
    from webui.generation.engine import GenerationEngine
    from webui.model_manager import ModelManager, NoModelLoaded

    empty = ModelManager(runtime.models.model_dir, runtime.models.registry, runtime.models.options)
    engine = GenerationEngine(empty)
    try:
        with pytest.raises(NoModelLoaded, match="no model is loaded") as caught:
            engine.generate(GenerationRequest(PROMPT, greedy(5))).text()
        assert caught.value.status == 503
    finally:
        engine.close()


def test_worker_exception_is_reported(engine, monkeypatch):
    loaded = engine.manager.current

    def explode(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(loaded.backend, "step", explode)
    with pytest.raises(GenerationError, match="kaboom"):
        engine.generate(GenerationRequest(PROMPT, greedy(5))).text()
    monkeypatch.undo()
    # The model thread survived: the next request is served.
    stream = engine.generate(GenerationRequest(PROMPT, greedy(5)))
    assert stream.text() and stream.stats.new_tokens == 5


def test_cancel_token_is_per_request():
    a, b = CancelToken(), CancelToken()
    a.cancel()
    assert a.cancelled and not b.cancelled


def test_a_full_queue_answers_at_once(runtime):
    from webui.generation.engine import GenerationEngine, QueueFull

    small = GenerationEngine(runtime.models, max_pending=2)
    batch = runtime.models.current.backend.capabilities.max_batch
    requests = [GenerationRequest(PROMPT, greedy(400), owner=f"client{i}") for i in range(batch + 2)]
    streams = []
    for request in requests[:batch]:  # the batch fills, one admission at a time
        streams.append(small.generate(request))
        deadline = time.monotonic() + 30
        while small.running < len(streams) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert small.running == batch
    streams += [small.generate(request) for request in requests[batch:]]  # two may wait
    with pytest.raises(QueueFull):
        small.generate(GenerationRequest(PROMPT, greedy(5)))
    for request in requests:
        request.cancel.cancel()
    for stream in streams:
        stream.text()
    # The worker counts a request as done just after its last message: wait (bounded).
    deadline = time.monotonic() + 10
    while small.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert small.pending == 0
    after = small.generate(GenerationRequest(PROMPT, greedy(3, ban_eos_token=True)))
    assert after.text() and after.stats.new_tokens == 3


def test_close_ends_running_and_waiting_requests_and_refuses_new_ones(runtime):
    from webui.generation.engine import GenerationEngine

    engine = GenerationEngine(runtime.models, max_pending=8, per_owner=1)  # "a" runs one at a time
    running = engine.generate(GenerationRequest(PROMPT, greedy(400), owner="a"))
    first = next(iter(running))  # it runs
    waiting = engine.generate(GenerationRequest(PROMPT, greedy(400), owner="a"))
    assert not waiting.started and engine.pending == 2  # queued behind the first
    engine.close()
    assert first and running.text() is not None  # reading to the end returns
    assert running.stats.finish_reason == "cancelled" and running.stats.new_tokens < 400
    with pytest.raises(GenerationError, match="shutting down"):  # told, not left waiting
        waiting.text()
    assert not waiting.started and waiting.new_tokens == 0
    with pytest.raises(GenerationError, match="shutting down"):
        engine.generate(GenerationRequest(PROMPT, greedy(5)))
    assert engine._worker is not None and not engine._worker.is_alive()


@needs_proc
def test_an_idle_model_thread_sleeps_until_a_request_comes(engine):
    """Nothing queued: the model thread blocks, it does not look now and then (it used
    to look every second); a request still wakes it at once."""
    assert engine.generate(GenerationRequest(PROMPT, greedy(3))).text()  # the thread exists
    assert wait_for(lambda: engine.pending == 0)
    # Back in its wait, and past the one wake that gives its OpenMP pool back (joining
    # the pool's workers is itself a wait or two, more on some machines than others).
    time.sleep(POOL_IDLE_SECONDS + 0.5)
    slept, cpu = thread_activity(engine._worker)
    start = time.monotonic()
    time.sleep(2.5)
    wall = time.monotonic() - start
    slept_after, cpu_after = thread_activity(engine._worker)
    assert slept_after - slept <= 1, "the idle model thread woke up"
    assert cpu_after - cpu < 0.05 * wall
    assert engine.generate(GenerationRequest(PROMPT, greedy(3))).text()


def test_a_script_that_exits_mid_reply_exits_cleanly(tmp_path):
    """Interpreter exit while the model thread is inside torch used to abort the process
    ("terminate called without an active exception", exit status 134)."""
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "from webui.settings import Settings\n"
        "from webui.runtime import build_runtime\n"
        "from webui.generation.params import make_params\n"
        "from webui.generation.request import GenerationRequest\n"
        "from pathlib import Path\n"
        f"runtime = build_runtime(Settings(user_data_dir=Path({str(tmp_path)!r})), use_remembered=False)\n"
        "stream = runtime.engine.generate(GenerationRequest('In the beginning', "
        "make_params({'max_new_tokens': 400, 'ban_eos_token': True})))\n"
        "print(next(iter(stream)), flush=True)\n"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() and "terminate called" not in done.stderr
