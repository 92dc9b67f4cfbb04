"""Per-token probabilities as the engine records them, on a real (tiny) model."""

from __future__ import annotations

import math

import pytest
import torch

from tests.test_gguf_backend import gguf_runtime  # noqa: F401  (fixture: a real GGUF model)
from webui.generation.engine import GenerationRequest
from webui.generation.params import make_params
from webui.generation.request import prompt_ids

PROMPT = "The keeper climbed the stairs"


def run(engine, top: int = 5, detail: bool = True, **values):
    params = make_params({"max_new_tokens": 12, "seed": 3, "ban_eos_token": True, **values})
    stream = engine.generate(GenerationRequest(PROMPT, params, logprobs=top, token_detail=detail))
    text = stream.text()
    return text, stream.logprobs


def test_after_top_k_2_the_kept_tokens_sum_to_one_and_differ_from_the_raw_distribution(engine):
    _, records = run(engine, temperature=1.0, top_k=2)
    assert len(records) == 12
    for entry in records:
        after = {a.token_id: math.exp(a.logprob) for a in entry.alternatives}
        kept = {token_id: p for token_id, p in after.items() if p > 0}
        assert len(kept) == 2  # top_k=2 keeps two; the raw top-5 adds others, at 0 after the samplers
        assert sum(kept.values()) == pytest.approx(1.0, abs=1e-5)
        assert entry.token_id in kept  # drawn from the kept ones
        raw = {a.token_id: math.exp(a.raw_logprob) for a in entry.alternatives}
        # The model's own distribution spreads over the whole vocabulary: the two kept
        # tokens hold less than all of it, and each is less likely than after renormalising.
        assert sum(raw[t] for t in kept) < 0.999
        assert all(raw[t] < kept[t] for t in kept)
        assert len([a for a in entry.alternatives if a.raw_logprob > -math.inf]) >= 5
        assert entry.raw_logprob == pytest.approx(math.log(raw[entry.token_id]), abs=1e-5)


def test_a_greedy_token_has_the_top_probability(engine):
    _, records = run(engine, temperature=0.0, repetition_penalty=1.3)
    for entry in records:
        best = max(entry.alternatives, key=lambda a: a.logprob)
        assert best.token_id == entry.token_id
        assert entry.logprob == pytest.approx(entry.top[0][1])


def test_the_raw_distribution_is_the_models_own(runtime, engine):
    _, records = run(engine, temperature=0.7, top_k=3)
    with runtime.models.use(timeout=60) as loaded:
        ids = prompt_ids(loaded.tokenizer, PROMPT)
        with torch.no_grad():
            logits = loaded.model(torch.tensor([ids], device=loaded.model.device)).logits[0, -1]
    expected = torch.log_softmax(logits.float(), dim=-1)
    first = records[0]
    for alternative in first.alternatives:
        assert alternative.raw_logprob == pytest.approx(float(expected[alternative.token_id]), abs=1e-3)
    # top_k=3 drops the rest of the vocabulary: the distributions differ.
    assert any(a.logprob == -math.inf for a in first.alternatives)


def test_token_texts_add_up_to_the_reply(engine, tokenizer):
    text, records = run(engine, temperature=0.0)
    assert "".join(entry.text for entry in records) == text
    for entry in records:
        chosen = next(a for a in entry.alternatives if a.token_id == entry.token_id)
        assert chosen.text  # every token has something to show, a lone byte its vocabulary name
        if entry.text and "\ufffd" not in entry.text:
            assert chosen.text == entry.text


def test_without_detail_the_record_is_the_apis_and_without_logprobs_nothing_is_recorded(engine):
    text_plain, none = run(engine, top=None, temperature=0.0)
    assert none == []
    text, records = run(engine, top=3, detail=False, temperature=0.0)
    assert text == text_plain  # asking for probabilities does not change the reply
    assert all(len(e.top) == 3 and e.alternatives == () and e.raw_logprob is None for e in records)


def test_next_tokens_go_through_the_engine_with_both_distributions(runtime):
    params = make_params({"temperature": 1.0, "top_k": 3, "seed": 1, "ban_eos_token": True})
    entry = runtime.next_tokens("next-token-test", PROMPT, params, top=10)
    kept = [a for a in entry.alternatives if a.logprob > -math.inf]
    assert len(kept) == 3 and sum(math.exp(a.logprob) for a in kept) == pytest.approx(1.0, abs=1e-5)
    assert len([a for a in entry.alternatives if a.raw_logprob > -math.inf]) >= 10
    # The same as the first step of a generation from that text.
    _, records = run(runtime.engine, top=10, temperature=1.0, top_k=3, seed=1)
    assert entry.alternatives == records[0].alternatives
    assert runtime.engine.pending == 0


def test_a_gguf_model_reports_both_distributions_too(gguf_runtime):  # noqa: F811
    params = make_params({"temperature": 1.0, "top_k": 2, "seed": 2})
    entry = gguf_runtime.next_tokens("gguf-next", PROMPT, params, top=5)
    kept = [a for a in entry.alternatives if a.logprob > -math.inf]
    assert len(kept) == 2 and sum(math.exp(a.logprob) for a in kept) == pytest.approx(1.0, abs=1e-4)
    assert len([a for a in entry.alternatives if a.raw_logprob > -math.inf]) >= 5
    assert all(a.text for a in entry.alternatives)  # llama.cpp's tokenizer names them too
