"""Continuous batching, fair scheduling and prefix-cache reuse on a real (tiny) model.

Each test builds its own model manager and engine with the serving options it needs,
so it passes alone and in any order.
"""

from __future__ import annotations

import threading

import pytest
import torch

from tests.conftest import TINY, wait_for
from webui.generation.backend import OutOfMemory, ServingOptions
from webui.generation.engine import GenerationEngine, GenerationError, GenerationRequest, Waiting
from webui.generation.params import make_params
from webui.generation.scheduler import FairQueue
from webui.loaders.base import LoadOptions
from webui.loaders.registry import default_registry
from webui.model_manager import ModelManager

PROMPTS = [
    "The keeper climbed the stairs",
    "Ships passed",
    "In winter the wind came down from the hills and",
    "A",
    "The lamp was lit every evening, and the keeper wrote in his book what he had seen",
    "Gulls",
    "Far out at sea",
    "The storm",
]


def greedy(n, **extra):
    return make_params({"temperature": 0.0, "max_new_tokens": n, **extra})


def serve(models_root, family_root=None, name=TINY, **serving):
    manager = ModelManager(family_root or models_root, default_registry(ServingOptions(**serving)),
                           LoadOptions(cpu=True))
    manager.load(name)
    return manager


@pytest.fixture
def batched(models_root):
    manager = serve(models_root, max_batch=8)
    return GenerationEngine(manager)


def run_together(engine, requests):
    """Start every request at once from its own thread; return the streams."""
    streams = [None] * len(requests)
    texts = [None] * len(requests)

    def read(i):
        streams[i] = engine.generate(requests[i])
        texts[i] = streams[i].text()

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return streams, texts


def test_eight_concurrent_greedy_replies_equal_their_solo_runs(batched):
    lengths = [40, 25, 60, 33, 47, 20, 55, 30]
    params = [greedy(n, ban_eos_token=True) for n in lengths]
    alone = [batched.generate(GenerationRequest(p, ps)).text() for p, ps in zip(PROMPTS, params, strict=True)]
    seen = []
    original = batched.manager.current.backend.step

    def counting_step(slots, tokens):
        seen.append(len(slots))
        return original(slots, tokens)

    batched.manager.current.backend.step = counting_step
    # Eight clients (one owner holds at most max_batch - 1 places).
    streams, texts = run_together(
        batched, [GenerationRequest(p, ps, owner=f"client{i}") for i, (p, ps) in enumerate(zip(PROMPTS, params, strict=True))])
    assert texts == alone
    assert [s.stats.new_tokens for s in streams] == lengths
    assert max(seen) >= 4  # they really decoded together, not one after another


def test_every_sampler_keeps_its_own_state_and_seed_in_a_batch(batched):
    """Seeded sampling with stateful and random steps: the same reply alone or in company."""
    heavy = make_params({
        "temperature": 1.3, "seed": 11, "max_new_tokens": 40, "repetition_penalty": 1.2,
        "presence_penalty": 0.3, "frequency_penalty": 0.2, "dry_multiplier": 0.8, "xtc_probability": 0.5,
        "xtc_threshold": 0.05, "top_k": 40, "min_p": 0.02, "no_repeat_ngram_size": 3,
    })
    mirostat = make_params({"seed": 5, "max_new_tokens": 40, "mirostat_mode": 2, "mirostat_tau": 3.0})
    dynamic = make_params({"seed": 9, "max_new_tokens": 40, "dynamic_temperature": True, "dynatemp_low": 0.5,
                           "dynatemp_high": 1.5, "top_n_sigma": 1.5, "tfs": 0.9, "typical_p": 0.9})
    cases = [(PROMPTS[0], heavy), (PROMPTS[1], mirostat), (PROMPTS[2], dynamic), (PROMPTS[3], greedy(30))]
    alone = [batched.generate(GenerationRequest(p, params, logprobs=2)) for p, params in cases]
    alone_texts = [s.text() for s in alone]
    streams, texts = run_together(batched, [GenerationRequest(p, params, logprobs=2) for p, params in cases])
    assert texts == alone_texts
    for solo, together in zip(alone, streams, strict=True):
        assert [e.token_id for e in together.logprobs] == [e.token_id for e in solo.logprobs]
        assert len(together.logprobs) == together.stats.new_tokens


def test_requests_join_and_leave_a_running_batch(batched):
    """A request that arrives while others decode joins at a step boundary."""
    long_one = GenerationRequest(PROMPTS[4], greedy(150))
    alone_long = batched.generate(GenerationRequest(PROMPTS[4], greedy(150))).text()
    alone_short = [batched.generate(GenerationRequest(p, greedy(20))).text() for p in PROMPTS[:3]]
    stream = batched.generate(long_one)
    pieces = iter(stream)
    first = next(pieces)  # the long one is decoding
    late = [batched.generate(GenerationRequest(p, greedy(20))) for p in PROMPTS[:3]]
    assert [s.text() for s in late] == alone_short
    assert first + "".join(pieces) == alone_long


def test_stop_and_disconnect_end_only_their_own_request(batched):
    keep = GenerationRequest(PROMPTS[0], greedy(80))
    stop = GenerationRequest(PROMPTS[1], greedy(400))
    drop = GenerationRequest(PROMPTS[2], greedy(400))
    alone = batched.generate(GenerationRequest(PROMPTS[0], greedy(80))).text()
    kept, stopped, dropped = (batched.generate(r) for r in (keep, stop, drop))
    it_stop, it_drop = iter(stopped), iter(dropped)
    next(it_stop), next(it_drop)
    stop.cancel.cancel()
    it_drop.close()  # a client that went away
    assert drop.cancel.cancelled
    list(it_stop)
    assert kept.text() == alone
    assert stopped.stats.finish_reason == "cancelled" and stopped.stats.new_tokens < 400
    assert kept.stats.finish_reason == "length"


def test_a_follow_up_turn_reuses_the_cached_prefix_and_says_so(models_root):
    engine = GenerationEngine(serve(models_root, max_batch=4))
    history = " ".join(PROMPTS) * 3
    first = engine.generate(GenerationRequest(history, greedy(30)))
    reply = first.text()
    follow_up = history + reply + " And then"
    second = engine.generate(GenerationRequest(follow_up, greedy(30)))
    second.text()
    # Everything but the new words came from the cache (the tokenizer may merge a few
    # tokens at the seam, so allow for that).
    assert second.stats.cached_tokens >= first.stats.prompt_tokens
    assert second.stats.cached_tokens < second.stats.prompt_tokens
    assert "reused from cache" in second.stats.summary()


def test_the_prefix_cache_never_changes_outputs(models_root):
    cached = GenerationEngine(serve(models_root, max_batch=4))
    plain = GenerationEngine(serve(models_root, max_batch=4, prefix_cache_bytes=0))
    assert not plain.manager.current.backend.capabilities.prefix_cache
    history = " ".join(PROMPTS) * 2
    turns = [history, history + " The keeper said", history + " The keeper said nothing, and"]
    for turn in turns:
        a = cached.generate(GenerationRequest(turn, greedy(40)))
        b = plain.generate(GenerationRequest(turn, greedy(40)))
        assert a.text() == b.text()
        assert b.stats.cached_tokens == 0
    assert a.stats.cached_tokens > 0  # the last turn did reuse


def test_the_prefix_cache_is_bounded_and_evicts_the_least_recent(models_root):
    manager = serve(models_root, max_batch=2, prefix_cache_bytes=200_000)
    engine = GenerationEngine(manager)
    cache = manager.current.backend.prefix_cache
    for i in range(12):
        engine.generate(GenerationRequest(f"{i} " + " ".join(PROMPTS), greedy(10))).text()
        assert cache.nbytes <= 200_000
    assert 0 < len(cache) < 12


def test_a_lora_change_invalidates_the_prefix_cache(tmp_path):
    from tests.test_loras import make_adapter
    from tests.tiny_models import build_llama

    build_llama(tmp_path / "models" / "tiny")
    make_adapter(tmp_path / "models" / "tiny", tmp_path / "loras" / "style", ["q_proj", "v_proj"], seed=1)
    manager = ModelManager(tmp_path / "models", default_registry(ServingOptions(max_batch=2)),
                           LoadOptions(cpu=True), lora_dir=tmp_path / "loras")
    manager.load("tiny")
    engine = GenerationEngine(manager)
    prompt = " ".join(PROMPTS)
    params = greedy(30, ban_eos_token=True)
    base = engine.generate(GenerationRequest(prompt, params)).text()
    manager.set_loras(["style"])
    with_lora = engine.generate(GenerationRequest(prompt, params))
    assert with_lora.text() != base and with_lora.stats.cached_tokens == 0  # no stale KV
    manager.set_loras([])
    again = engine.generate(GenerationRequest(prompt, params))
    assert again.text() == base and again.stats.cached_tokens == 0


def test_a_waiting_request_sees_its_place_and_can_be_stopped(models_root):
    engine = GenerationEngine(serve(models_root, max_batch=1))
    running = GenerationRequest(PROMPTS[0], greedy(300), owner="ann")
    first = engine.generate(running)
    pieces = iter(first)
    next(pieces)
    second = engine.generate(GenerationRequest(PROMPTS[1], greedy(10), owner="bob"))
    waiting_request = GenerationRequest(PROMPTS[2], greedy(10), owner="cat")
    third = engine.generate(waiting_request)
    assert second.ahead() == 0 and third.ahead() == 1
    updates = third.updates()
    assert next(updates) == Waiting(1)
    waiting_request.cancel.cancel()  # Stop while waiting
    assert wait_for(lambda: third.stats is not None or third.ahead() is None, timeout=30)
    rest = list(updates)
    assert all(not isinstance(u, str) for u in rest)
    assert third.stats.finish_reason == "cancelled" and third.stats.new_tokens == 0
    running.cancel.cancel()
    list(pieces)
    assert second.text() and second.stats.new_tokens == 10


def test_one_flooding_owner_does_not_starve_another(models_root):
    engine = GenerationEngine(serve(models_root, max_batch=3))
    flood = [engine.generate(GenerationRequest(PROMPTS[i % 8], greedy(400, ban_eos_token=True), owner="api"))
             for i in range(10)]
    # The flood holds at most max_batch - 1 places: one stays free for somebody else.
    assert wait_for(lambda: engine.running == 2, timeout=30)
    chat = engine.generate(GenerationRequest(PROMPTS[3], greedy(10), owner="ann"))
    assert chat.ahead() == 0  # before all eight waiting requests of the flood
    assert chat.text()
    assert not any(s.stats for s in flood)  # admitted at once: done before any of the flood
    for stream in flood:
        stream.request.cancel.cancel()
        stream.text()


def test_fair_queue_serves_the_owner_with_the_fewest_running_first():
    queue = FairQueue(max_waiting=100, per_owner=3)
    for i in range(5):
        queue.put("api", f"api-{i}")
    queue.put("ann", "ann-0")
    queue.put("bob", "bob-0")
    queue.put("ann", "ann-1")
    running = {"api": 2, "ann": 1}
    # bob (0 running) first; then whoever runs fewer (ties: who was served longest ago).
    assert list(queue.order(running)) == ["bob-0", "ann-0", "api-0", "ann-1", "api-1", "api-2", "api-3", "api-4"]
    assert queue.take(running, lambda item: True) == "bob-0"
    running["bob"] = 1
    assert queue.take(running, lambda item: True) == "ann-0"
    running["ann"] = 2
    assert queue.take(running, lambda item: True) == "api-0"  # 2 running, tie with ann: api waited longer
    running["api"] = 3
    assert queue.take(running, lambda item: True) == "ann-1"
    running["ann"] = 3
    assert queue.take(running, lambda item: True) is None  # everyone waiting is at the cap
    running["api"] = 2  # one of api's finished
    assert queue.take(running, lambda item: False) is None  # no room in the batch: nobody jumps ahead
    assert queue.take(running, lambda item: True) == "api-1"
    assert len(queue) == 3
    small = FairQueue(max_waiting=1, per_owner=1)
    assert small.put("x", 1) and not small.put("y", 2) and len(small) == 1


def test_out_of_memory_in_a_step_fails_only_the_newest_request(batched):
    backend = batched.manager.current.backend
    original = backend.step
    alone = [batched.generate(GenerationRequest(p, greedy(30))).text() for p in PROMPTS[:3]]

    def tight_memory(slots, tokens):
        if len(slots) > 2:
            raise OutOfMemory("out of memory decoding a batch")
        return original(slots, tokens)

    backend.step = tight_memory
    streams = []
    for i, prompt in enumerate(PROMPTS[:3]):  # admitted in this order
        streams.append(batched.generate(GenerationRequest(prompt, greedy(30), owner=f"client{i}")))
        assert wait_for(lambda: batched.running + batched.pending >= len(streams), timeout=30)
    results = []
    for stream in streams:
        try:
            results.append(stream.text())
        except GenerationError as exc:
            results.append(exc)
    failed = [r for r in results if isinstance(r, GenerationError)]
    assert len(failed) <= 1
    assert all(r == a for r, a in zip(results, alone, strict=True) if isinstance(r, str))
    if failed:
        assert "out of memory" in str(failed[0])
    assert batched.generate(GenerationRequest(PROMPTS[0], greedy(30))).text() == alone[0]


def test_a_load_waits_for_the_batch_and_then_serves_the_new_model(models_root):
    manager = serve(models_root, max_batch=4)
    engine = GenerationEngine(manager)
    alone = engine.generate(GenerationRequest(PROMPTS[0], greedy(120))).text()
    running = engine.generate(GenerationRequest(PROMPTS[0], greedy(120)))
    pieces = iter(running)
    first = next(pieces)
    before = manager.current
    loader = threading.Thread(target=manager.load, args=(TINY,))
    loader.start()
    assert first + "".join(pieces) == alone  # the swap never happens under a stream
    loader.join(timeout=120)
    assert manager.current is not before
    after = engine.generate(GenerationRequest(PROMPTS[0], greedy(120)))
    assert after.text() == alone and after.stats.cached_tokens == 0


def test_a_sliding_window_model_decodes_one_at_a_time_and_still_correctly(tmp_path):
    from tests.tiny_models import build_family

    build_family(tmp_path / "gemma2", "gemma2")
    manager = serve(tmp_path, family_root=tmp_path, name="gemma2", max_batch=8)
    capabilities = manager.current.backend.capabilities
    assert capabilities.max_batch == 1 and not capabilities.prefix_cache
    engine = GenerationEngine(manager)
    alone = [engine.generate(GenerationRequest(p, greedy(15))).text() for p in PROMPTS[:3]]
    _, texts = run_together(engine, [GenerationRequest(p, greedy(15)) for p in PROMPTS[:3]])
    assert texts == alone


def test_batched_requests_report_their_own_timing(batched):
    streams, _ = run_together(batched, [GenerationRequest(p, greedy(20, ban_eos_token=True)) for p in PROMPTS[:4]])
    for stream in streams:
        assert stream.stats.new_tokens == 20 and stream.stats.seconds > 0
        assert stream.stats.prompt_tokens == len(batched.manager.current.tokenizer(stream.request.prompt)["input_ids"])


def test_guidance_with_a_negative_prompt_steers_and_batches_like_any_request(batched):
    plain = greedy(30, ban_eos_token=True)
    guided = greedy(30, ban_eos_token=True, guidance_scale=1.8, negative_prompt="the sea")
    without = batched.generate(GenerationRequest(PROMPTS[0], plain)).text()
    alone = batched.generate(GenerationRequest(PROMPTS[0], guided)).text()
    assert alone != without  # the negative prompt changed the reply
    _, texts = run_together(batched, [GenerationRequest(PROMPTS[0], guided, owner="a"),
                                      GenerationRequest(PROMPTS[1], plain, owner="b")])
    assert texts[0] == alone


def test_a_prompt_fed_as_embeddings_is_never_reused_from_the_cache(batched):
    backend = batched.manager.current.backend
    ids = backend.tokenizer(" ".join(PROMPTS))["input_ids"]
    embeds = backend.model.get_input_embeddings()(torch.tensor([ids])) * 1.5  # not what the ids would give
    slot = backend.start(ids, embeds)
    backend.finish(slot, keep=True)
    again = backend.start(ids)
    assert again.cached_tokens == 0
    backend.finish(again, keep=False)
