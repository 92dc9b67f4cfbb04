"""Speculative decoding by prompt lookup (webui/generation/speculative.py) on a real tiny model.

Drafts change how many forward passes a reply takes, never the reply: greedy and seeded
replies are compared token for token with the same engine's replies without drafts,
alone and in a batch, and the passes are counted on the model itself.
"""

from __future__ import annotations

import pytest

from tests.conftest import TINY
from tests.test_determinism import together
from webui.generation.backend import Capabilities, ServingOptions
from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.generation.params import ParamsError, make_params
from webui.generation.speculative import PromptLookup, draft_budget
from webui.loaders.base import LoadOptions
from webui.loaders.registry import default_registry
from webui.model_manager import ModelManager

# A text that says the same thing three times and starts a fourth: a reply that goes on
# copying it is what prompt lookup drafts.
VERSE = "The keeper climbed the stairs and lit the lamp, and the ships passed in the night. "
REPETITIVE = VERSE * 3 + "The keeper climbed"
PROMPTS = [REPETITIVE, "Ships passed", "In winter the wind came down from the hills and", "Gulls"]


def engine_for(models_root, dtype: str = "fp32", **serving) -> GenerationEngine:
    manager = ModelManager(models_root, default_registry(ServingOptions(**serving)),
                           LoadOptions(cpu=True, dtype=dtype))
    manager.load(TINY)
    return GenerationEngine(manager)


@pytest.fixture(scope="module")
def engine(models_root):
    engine = engine_for(models_root, max_batch=8)
    yield engine
    engine.close()
    engine.manager.unload()


def params(**values):
    return make_params({"max_new_tokens": 40, "ban_eos_token": True, **values})


def forwards(model) -> list[tuple[int, ...]]:
    """The input shape of every forward pass the model runs from now on."""
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(tuple(kwargs["input_ids"].shape))
                                    if kwargs.get("input_ids") is not None else None, with_kwargs=True)
    return seen


def test_lookup_drafts_what_followed_the_latest_repeat_of_the_tail():
    context = PromptLookup([5, 6, 7, 8, 9, 1, 5, 6, 7, 2, 3, 5, 6, 7])
    assert context.draft(3) == [2, 3, 5]  # the latest earlier "5 6 7" was followed by 2 3 5
    assert context.draft(1) == [2] and context.draft(0) == []
    assert PromptLookup([1, 2, 3, 4]).draft(4) == []  # nothing repeats
    assert PromptLookup([1, 2, 9, 1, 2]).draft(4) == [9, 1, 2]  # two tokens are enough
    assert PromptLookup([4, 4]).draft(3) == []  # too short to say anything
    # Kept up to date as the reply grows: the tail moves, and the index follows it.
    for token in (2, 3):
        context.push(token)
    assert context.draft(4) == [5, 6, 7, 2]  # "7 2 3" occurred once before, followed by "5 6 7 2"
    context.push(8)
    assert context.draft(2) == []  # "2 3 8" and "3 8" never occurred
    context.push(9)
    assert context.draft(2) == [1, 5]  # "8 9" did, once, long ago


def test_the_budget_follows_the_request_then_the_server_where_replies_stay_equal():
    exact = Capabilities(max_batch=8, reuse_invariant=True, prompt_lookup=4)
    rounding = Capabilities(max_batch=8, reuse_invariant=False, prompt_lookup=4)
    assert draft_budget(-1, False, exact) == 4  # the server's default
    assert draft_budget(7, False, exact) == 7 and draft_budget(0, False, exact) == 0
    assert draft_budget(-1, False, rounding) == 0  # 16-bit rounding: only a request that asks
    assert draft_budget(6, False, rounding) == 6
    assert draft_budget(6, True, rounding) == 0  # deterministic: never multi-token steps there
    assert draft_budget(6, True, exact) == 6
    assert draft_budget(6, False, Capabilities(max_batch=8)) == 0  # a backend that cannot verify
    with pytest.raises(ParamsError) as refused:
        make_params({"prompt_lookup_num_tokens": 17})
    assert refused.value.param == "prompt_lookup_num_tokens"


def test_a_repetitive_reply_takes_fewer_forward_passes_and_stays_the_same(engine):
    model = engine.manager.current.model
    seen = forwards(model)
    plain = engine.generate(GenerationRequest(REPETITIVE, params(temperature=0.0, prompt_lookup_num_tokens=0)))
    plain_text = plain.text()
    plain_passes, seen[:] = len(seen), []
    fast = engine.generate(GenerationRequest(REPETITIVE, params(temperature=0.0, prompt_lookup_num_tokens=8)))
    assert fast.text() == plain_text
    assert plain.stats.new_tokens == fast.stats.new_tokens == 40
    assert plain_passes == 40  # the prompt, then one pass per further token
    assert fast.stats.accepted_tokens > 0 and fast.stats.drafted_tokens >= fast.stats.accepted_tokens
    # Every accepted draft is a pass saved.
    assert len(seen) == 40 - fast.stats.accepted_tokens < plain_passes
    assert any(shape[1] > 1 for shape in seen[1:])  # drafts checked several at a time
    assert "drafted tokens accepted" in fast.stats.summary()


def test_greedy_and_seeded_replies_are_the_same_with_drafts_alone_and_batched(engine):
    accepted = []
    for kind in ({"temperature": 0.0}, {"temperature": 0.05, "seed": 3}, {"temperature": 0.7, "seed": 5,
                                                                           "repetition_penalty": 1.2}):
        without = [engine.generate(GenerationRequest(p, params(**kind, prompt_lookup_num_tokens=0))).text()
                   for p in PROMPTS]
        alone = []
        for prompt in PROMPTS:  # one after the other: each decodes alone, and so speculates
            stream = engine.generate(GenerationRequest(prompt, params(**kind, prompt_lookup_num_tokens=6)))
            alone.append(stream.text())
            accepted.append(stream.stats.accepted_tokens)
        assert alone == without, kind
        drafted = [GenerationRequest(p, params(**kind, prompt_lookup_num_tokens=6)) for p in PROMPTS]
        assert together(engine, drafted) == without, kind
    # Drafts were really taken, for greedy and for seeded replies alike.
    assert accepted[0] > 0 and sum(accepted[len(PROMPTS):]) > 0, accepted


def test_the_server_default_drafts_for_requests_that_do_not_say(models_root):
    engine = engine_for(models_root, max_batch=8, prompt_lookup=6)
    try:
        capabilities = engine.manager.current.backend.capabilities
        assert capabilities.prompt_lookup == 6 and capabilities.reuse_invariant  # fp32
        default = engine.generate(GenerationRequest(REPETITIVE, params(temperature=0.0)))
        text = default.text()
        off = engine.generate(GenerationRequest(REPETITIVE, params(temperature=0.0, prompt_lookup_num_tokens=0)))
        assert off.text() == text
        assert default.stats.drafted_tokens > 0 and off.stats.drafted_tokens == 0
    finally:
        engine.close()
        engine.manager.unload()


def test_the_api_takes_prompt_lookup_num_tokens_and_names_it_when_refused(api_url, runtime):
    import openai

    from tests.conftest import API_KEY

    client = openai.OpenAI(base_url=api_url, api_key=API_KEY, max_retries=0, timeout=120)
    body = {"model": TINY, "prompt": REPETITIVE, "max_tokens": 24, "temperature": 0}
    plain = client.completions.create(**body, extra_body={"prompt_lookup_num_tokens": 0})
    drafted = client.completions.create(**body, extra_body={"prompt_lookup_num_tokens": 8})
    if runtime.models.current.backend.capabilities.reuse_invariant:  # fp32 arithmetic: equal logits
        assert drafted.choices[0].text == plain.choices[0].text
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(**body, extra_body={"prompt_lookup_num_tokens": 99})
    assert refused.value.param == "prompt_lookup_num_tokens"
