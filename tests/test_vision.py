"""Vision models on the Transformers backend, inside the engine: the reply for an image
equals the family's own `generate` with its processor, images batch with text requests,
and the prefix cache tells images apart (webui/generation/vision.py)."""

from __future__ import annotations

import threading

import pytest
import torch

from tests.tiny_models import build_llama
from tests.tiny_vision import FAMILIES, build_vision, picture, png
from webui.chat.prompt import ChatPrompt, ChatSetup, apply_template
from webui.generation.backend import ServingOptions
from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.generation.params import make_params
from webui.generation.request import CannotSee, PromptError
from webui.images import check_image
from webui.loaders.base import LoadOptions
from webui.loaders.registry import default_registry
from webui.model_manager import ModelManager

QUESTION = "What is in the picture?"


def greedy(n: int, **extra):
    return make_params({"temperature": 0.0, "max_new_tokens": n, **extra})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("vision-models")
    for family in FAMILIES:
        build_vision(root / f"tiny-{family}", family)
    build_llama(root / "tiny-text")
    return root


@pytest.fixture(scope="module", params=FAMILIES)
def served(request, models):
    manager = ModelManager(models, default_registry(ServingOptions(max_batch=8)), LoadOptions(cpu=True, dtype="fp32"))
    manager.load(f"tiny-{request.param}")
    engine = GenerationEngine(manager)
    yield manager.current, engine
    engine.close()
    manager.unload()


def image(seed: int, size=(48, 40)):
    return check_image(png(picture(seed, size)))


def turns(*images, question=QUESTION):
    return [{"role": "user", "content": question, "images": tuple(images)}]


def chat_request(messages, n=24, system="", **extra):
    return GenerationRequest(ChatPrompt(ChatSetup(mode="instruct", system=system), messages), greedy(n, **extra),
                             logprobs=0)


def reply_ids(engine, request) -> tuple[list[int], object]:
    stream = engine.generate(request)
    stream.text()
    return [entry.token_id for entry in stream.logprobs], stream.stats


def reference_ids(loaded, messages, n=24, system="") -> list[int]:
    """The family's own generate, with its own processor, for the same chat."""
    text = apply_template(loaded.tokenizer, messages, system)
    pictures = [i.image for m in messages for i in m.get("images", ())]
    inputs = loaded.processor(text=[text], images=[pictures], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = loaded.model.generate(**inputs, max_new_tokens=n, do_sample=False)
    ids = out[0, inputs["input_ids"].shape[1]:].tolist()
    eos = loaded.backend.eos_ids()
    return ids[: next((i + 1 for i, t in enumerate(ids) if t in eos), len(ids))]


def test_the_loaded_model_says_it_sees(served):
    loaded, _ = served
    assert loaded.processor is not None and loaded.backend.capabilities.vision
    assert "reads images" in loaded.describe()


def test_reply_equals_the_familys_own_generate(served):
    loaded, engine = served
    messages = turns(image(1))
    ids, stats = reply_ids(engine, chat_request(messages, deterministic=True))
    assert len(ids) > 3
    assert ids == reference_ids(loaded, messages)
    assert stats.prompt_tokens > len(loaded.tokenizer(apply_template(loaded.tokenizer, messages))["input_ids"])


def test_two_images_are_read_in_one_message(served):
    loaded, engine = served
    messages = turns(image(1), image(2, (30, 60)))
    ids, _ = reply_ids(engine, chat_request(messages))
    assert ids == reference_ids(loaded, messages)


def test_different_images_give_different_replies(served):
    _, engine = served
    replies = {tuple(reply_ids(engine, chat_request(turns(image(seed)), deterministic=True))[0])
               for seed in (1, 2, 3)}
    assert len(replies) == 3


def test_an_image_request_batched_with_text_requests_gives_its_solo_tokens(served):
    loaded, engine = served
    alone, _ = reply_ids(engine, chat_request(turns(image(4)), n=30))
    texts = [[{"role": "user", "content": f"Tell me about the sea, part {i}"}] for i in range(5)]
    solo_texts = [reply_ids(engine, chat_request(t, n=30))[0] for t in texts]
    results: dict[int, list[int]] = {}
    requests = [chat_request(t, n=30) for t in texts[:3]] + [chat_request(turns(image(4)), n=30)] + [
        chat_request(t, n=30) for t in texts[3:]]

    def run(index):
        results[index] = reply_ids(engine, requests[index])[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results[3] == alone
    assert [results[i] for i in (0, 1, 2, 4, 5)] == solo_texts


def test_a_follow_up_turn_about_the_same_image_reuses_its_kv(served):
    loaded, engine = served
    first = turns(image(5))
    answer, _ = reply_ids(engine, chat_request(first))
    follow = [*first, {"role": "assistant", "content": loaded.tokenizer.decode(answer, skip_special_tokens=True)},
              {"role": "user", "content": "And what colour is it?"}]
    ids, stats = reply_ids(engine, chat_request(follow))
    if caches(loaded):
        assert stats.cached_tokens > len(loaded.tokenizer(QUESTION)["input_ids"])  # the image's tokens came from the cache
    assert ids == reference_ids(loaded, follow)
    # Computed whole (no cache): the same reply.
    loaded.backend.clear_cache()
    again, cold = reply_ids(engine, chat_request(follow))
    assert cold.cached_tokens == 0 and again == ids


def caches(loaded) -> bool:
    """Whether the model's KV is reused at all: not Gemma 3's, whose sliding-window layers
    keep only the window (webui/loaders/hf_backend.py decodes it alone, uncached)."""
    if loaded.backend.capabilities.prefix_cache:
        return True
    assert loaded.backend.capabilities.max_batch == 1 and getattr(loaded.model.config.get_text_config(), "sliding_window", None)
    return False


def test_another_image_never_reuses_the_first_images_kv(served):
    loaded, engine = served
    if not caches(loaded):
        pytest.skip("no prefix cache for sliding-window layers: nothing to reuse, rightly or wrongly")
    system = "Look carefully at the picture the user sends and answer in one short sentence please. " * 2
    reply_ids(engine, chat_request(turns(image(6)), system=system))
    ids, stats = reply_ids(engine, chat_request(turns(image(7)), system=system))
    # The shared text before the image is reused, never the image or what follows it.
    text = apply_template(loaded.tokenizer, turns(image(7)), system)
    ids_with_image = loaded.processor(text=[text], images=[[image(7).image]], add_special_tokens=False)["input_ids"][0]
    before = list(ids_with_image).index(loaded.processor.image_token_id)  # the image's first token
    assert 16 <= stats.cached_tokens <= before
    assert ids == reference_ids(loaded, turns(image(7)), system=system)
    # The same image again: now the image is reused too.
    _, hit = reply_ids(engine, chat_request(turns(image(7)), system=system))
    assert hit.cached_tokens > before


def test_a_text_model_says_it_cannot_see(models):
    manager = ModelManager(models, default_registry(ServingOptions(max_batch=4)), LoadOptions(cpu=True))
    manager.load("tiny-text")
    engine = GenerationEngine(manager)
    try:
        assert not manager.current.backend.capabilities.vision
        with pytest.raises(CannotSee) as caught:
            engine.generate(chat_request(turns(image(1)))).text()
        assert caught.value.status == 400 and "cannot see" in str(caught.value)
        assert "image" in str(caught.value) and caught.value.param == "messages"
        # Text still works on it.
        assert engine.generate(chat_request(turns(), n=5)).text()
    finally:
        engine.close()
        manager.unload()


def test_images_in_chat_mode_are_refused_with_the_reason(served):
    _, engine = served
    request = GenerationRequest(ChatPrompt(ChatSetup(mode="chat"), turns(image(1))), greedy(5))
    with pytest.raises(PromptError, match="instruct") as refused:
        engine.generate(request).text()
    assert refused.value.param == "mode"


def test_gemma3s_image_tokens_attend_to_each_other_both_ways(models):
    """Gemma 3 reads an image's tokens bidirectionally in the prefill (the processor's
    token_type_ids): the engine's first logits equal the model's own forward with them,
    and differ from a forward without them by more than the tolerance."""
    manager = ModelManager(models, default_registry(ServingOptions(max_batch=4)), LoadOptions(cpu=True, dtype="fp32"))
    manager.load("tiny-gemma3")
    try:
        loaded = manager.current
        messages = turns(image(1))
        text = apply_template(loaded.tokenizer, messages)
        prompt = loaded.backend.encode_images(text, (image(1),))
        slot = loaded.backend.start(prompt.ids, vision=prompt)
        ours = slot.logits.reshape(-1).float()
        loaded.backend.finish(slot, keep=False)
        inputs = loaded.processor(text=[text], images=[[image(1).image]], return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            both_ways = loaded.model(**inputs).logits[0, -1].float()
            causal = loaded.model(**{k: v for k, v in inputs.items() if k != "token_type_ids"}).logits[0, -1].float()
        assert torch.allclose(ours, both_ways, atol=1e-4)
        assert (both_ways - causal).abs().max() > 1e-3
    finally:
        manager.unload()
