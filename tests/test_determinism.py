"""Same answers under load, on every dtype: top_k=1 is greedy, a reply does not depend on
what it is batched with, and a deterministic request does not depend on the prefix cache.

Each dtype is loaded as the user would ask for it (`--dtype bf16 / fp16 / fp32`); what
the machine then really holds is asserted from the load, not assumed.  The row-wise
decode attention (webui/loaders/row_attention.py) is what makes bf16 batches agree;
before it, a greedy reply in a batch of eight parted from the same request alone on an
AVX512-BF16 CPU.  CI runs this file again with oneDNN held to other instruction sets
(.ci/run), the kernels of other CPU kinds.
"""

from __future__ import annotations

import threading

import pytest
import torch

from tests.conftest import TINY
from tests.test_batching import PROMPTS as BATCH_PROMPTS
from webui.generation.backend import ServingOptions
from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.generation.params import make_params
from webui.generation.samplers.truncation import TopKLogitsProcessor
from webui.loaders.base import LoadOptions
from webui.loaders.registry import default_registry
from webui.model_manager import ModelManager

PROMPTS = BATCH_PROMPTS[:7]
DTYPES = ["bf16", "fp16", "fp32"]


def engine_for(models_root, dtype: str, **serving) -> GenerationEngine:
    manager = ModelManager(models_root, default_registry(ServingOptions(**serving)),
                           LoadOptions(cpu=True, dtype=dtype))
    manager.load(TINY)
    return GenerationEngine(manager)


@pytest.fixture(params=DTYPES)
def engine(request, models_root):
    engine = engine_for(models_root, request.param, max_batch=8)
    yield engine
    engine.close()
    engine.manager.unload()


def params(**values):
    return make_params({"max_new_tokens": 20, "ban_eos_token": True, **values})


def together(engine, requests: list[GenerationRequest]) -> list[str]:
    """Every request started at once, each from its own thread (so they share batches)."""
    texts: list[str | None] = [None] * len(requests)

    def read(i):
        texts[i] = engine.generate(requests[i]).text()

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return texts


def test_top_k_keeps_exactly_k_and_breaks_ties_as_argmax_does():
    # bf16 logits tie often: transformers' TopKLogitsWarper kept both tied tokens at k=1.
    scores = torch.tensor([[1.0, 2.0, 0.5, 2.0, 2.0], [3.0, 1.0, 3.0, 3.0, -1.0]])
    one = TopKLogitsProcessor(1)(None, scores)
    assert torch.isfinite(one).sum(dim=-1).tolist() == [1, 1]
    assert one.argmax(dim=-1).tolist() == scores.argmax(dim=-1).tolist() == [1, 0]
    two = TopKLogitsProcessor(2)(None, scores)
    assert torch.isfinite(two).tolist() == [[False, True, False, True, False], [True, False, True, False, False]]
    assert torch.isfinite(TopKLogitsProcessor(9)(None, scores)).all()  # k beyond the vocabulary keeps all


def test_top_k_one_is_greedy_at_every_temperature(engine):
    greedy = engine.generate(GenerationRequest(PROMPTS[0], params(temperature=0.0))).text()
    for temperature in (1.0, 0.3):
        for seed in (1, 2):
            reply = engine.generate(GenerationRequest(
                PROMPTS[0], params(temperature=temperature, top_k=1, seed=seed))).text()
            assert reply == greedy, (engine.manager.current.dtype, temperature, seed)


def test_greedy_and_seeded_replies_do_not_depend_on_the_batch(engine):
    backend = engine.manager.current.backend
    # Asked of this machine's kernels at load, never assumed (row_attention.py).
    deterministic = not backend.capabilities.batch_invariant
    kinds = [params(temperature=0.0, deterministic=deterministic),
             params(temperature=0.8, seed=7, deterministic=deterministic)]
    for kind in kinds:
        requests = [GenerationRequest(prompt, kind) for prompt in PROMPTS]
        alone = [engine.generate(request).text() for request in requests]
        assert together(engine, requests) == alone, engine.manager.current.dtype


def test_bf16_batches_are_invariant_where_the_kernels_are(models_root):
    """On this machine's bf16 matmul, rows are independent or they are not; either way the
    capability says which, and the row-wise attention is in place."""
    engine = engine_for(models_root, "bf16", max_batch=8)
    try:
        loaded = engine.manager.current
        assert loaded.dtype == "bfloat16"
        backend = loaded.backend
        assert backend.row_attention and loaded.model.config._attn_implementation == "webui_rows_sdpa"
        from webui.loaders.row_attention import linear_rows_invariant

        assert backend.capabilities.batch_invariant == linear_rows_invariant(loaded.model)
        assert not backend.capabilities.reuse_invariant
        assert "deterministic" in backend.capabilities.determinism_note()
    finally:
        engine.close()
        engine.manager.unload()


def test_a_deterministic_follow_up_does_not_depend_on_the_prefix_cache(models_root):
    for dtype in DTYPES:
        cached = engine_for(models_root, dtype, max_batch=8)
        whole = engine_for(models_root, dtype, max_batch=8, prefix_cache_bytes=0)
        try:
            capabilities = cached.manager.current.backend.capabilities
            first = params(temperature=0.0, deterministic=True)
            reply = cached.generate(GenerationRequest(PROMPTS[4], first)).text()
            follow_up = PROMPTS[4] + reply + " and then the lamp"
            for kind in (first, params(temperature=0.9, seed=3, deterministic=True)):
                a = cached.generate(GenerationRequest(follow_up, kind))
                b = whole.generate(GenerationRequest(follow_up, kind))
                assert a.text() == b.text(), dtype
                if not capabilities.reuse_invariant:
                    assert a.stats.cached_tokens == 0  # computed whole, as asked
            # fp32 arithmetic keeps the promise with the cache too (to fp32 rounding).
            if capabilities.reuse_invariant:
                plain = params(temperature=0.0)
                hit = cached.generate(GenerationRequest(follow_up, plain))
                assert hit.text() == whole.generate(GenerationRequest(follow_up, plain)).text()
                assert hit.stats.cached_tokens > 0
        finally:
            for engine in (cached, whole):
                engine.close()
                engine.manager.unload()


def test_a_deterministic_request_decodes_alone_where_batches_differ(models_root, monkeypatch):
    engine = engine_for(models_root, "fp32", max_batch=8)
    try:
        backend = engine.manager.current.backend
        monkeypatch.setattr(backend, "capabilities", backend.capabilities.__class__(
            **{**backend.capabilities.__dict__, "batch_invariant": False}))
        mine, seen = [], []
        start, step = backend.start, backend.step

        def recording_start(ids, embeds=None, reuse=True):
            slot = start(ids, embeds, reuse=reuse)
            if PROMPTS[0] in backend.tokenizer.decode(ids):
                mine.append(slot)
            return slot

        def recording_step(slots, tokens):
            seen.append((len(slots), any(slot in mine for slot in slots)))
            return step(slots, tokens)

        monkeypatch.setattr(backend, "start", recording_start)
        monkeypatch.setattr(backend, "step", recording_step)
        requests = [GenerationRequest(PROMPTS[0], params(temperature=0.0, deterministic=True)),
                    *[GenerationRequest(p, params(temperature=0.0)) for p in PROMPTS[1:4]]]
        texts = together(engine, requests)
        assert all(texts) and mine
        assert all(size == 1 for size, has_mine in seen if has_mine)  # a batch of its own
        assert any(size > 1 for size, _ in seen)  # while the others still batched together
        alone = engine.generate(GenerationRequest(PROMPTS[0], params(temperature=0.0, deterministic=True))).text()
        assert texts[0] == alone
    finally:
        engine.close()
        engine.manager.unload()


def test_the_api_takes_deterministic_and_the_parameters_tab_says_why(api_url, runtime):
    import openai

    from tests.conftest import API_KEY

    client = openai.OpenAI(base_url=api_url, api_key=API_KEY, max_retries=0, timeout=120)
    body = {"model": TINY, "messages": [{"role": "user", "content": "The storm"}], "max_tokens": 12,
            "temperature": 0}
    first, again = (client.chat.completions.create(**body, extra_body={"deterministic": True}) for _ in range(2))
    assert first.choices[0].message.content == again.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(**body, extra_body={"deterministic": "yes"})
    assert refused.value.param == "deterministic"
    capabilities = runtime.models.current.backend.capabilities
    assert runtime.determinism_note("a tab nobody pointed elsewhere") == capabilities.determinism_note()


def test_the_note_says_what_a_reply_may_depend_on_and_offers_only_what_the_backend_takes():
    from webui.generation.backend import Capabilities

    assert Capabilities(max_batch=8, prefix_cache=True, batch_invariant=True, reuse_invariant=True).determinism_note() is None
    assert Capabilities(max_batch=1).determinism_note() is None  # one at a time, no cache: nothing to say
    both = Capabilities(max_batch=8, prefix_cache=True, samplers=None).determinism_note()  # takes every field
    assert "batched with" in both and "prefix-cache hit" in both and "deterministic" in both
    # A remote engine that does not take the field is not told to tick it.
    remote = Capabilities(max_batch=8, samplers=frozenset({"temperature"})).determinism_note()
    assert "batched with" in remote and "deterministic" not in remote
