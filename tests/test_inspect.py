"""The logit lens, attention rows and hidden-state norms (webui/inspect/) on real tiny
models of every family the tests build, and the inspection as a job on the session's
model: bounded, refused for GGUF, stoppable, and harmless to a running chat reply."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import make_settings, wait_for
from tests.tiny_models import FAMILIES, build_family, build_new_family
from webui.inspect.lens import MAX_TOKENS, TOP, InspectCancelled, InspectError, InspectUnsupported, inspect_text
from webui.generation.engine import QueueFull
from webui.model_manager import ModelLent

TEXT = "The keeper climbed the stairs of the lighthouse and lit the lamp before the storm came in."
# gpt-oss's attention keeps some weight for its learnt "sink": its rows over the text's
# tokens sum to less than one.
SINKS = {"gpt_oss"}


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def build(folder, family):
    if family in FAMILIES:
        return build_family(folder, family)
    return build_new_family(folder, family)


@pytest.fixture(scope="module", params=[*FAMILIES, "qwen3", "qwen3_moe", "gemma3_text", "llama4_text", "ministral3",
                                        "gpt_oss"])
def family_model(request, tmp_path_factory):
    folder = build(tmp_path_factory.mktemp(request.param) / request.param, request.param)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    return request.param, model, AutoTokenizer.from_pretrained(folder)


def test_the_last_layer_reads_as_the_models_own_next_token_distribution(family_model):
    family, model, tokenizer = family_model
    implementation, hooks = model.config._attn_implementation, hook_count(model)
    lens = inspect_text(model, tokenizer, TEXT, 512)
    # The model is given back as it was: its attention, and no hook of ours left behind.
    assert model.config._attn_implementation == implementation and hook_count(model) == hooks
    layers = model.config.num_hidden_layers
    assert lens.top_ids.shape == (layers + 1, len(lens.ids), TOP) == lens.top_probs.shape
    with torch.inference_mode():  # a plain forward, with the attention the model was loaded with
        out = model(torch.tensor([lens.ids]), output_hidden_states=True)
    probs, ids = torch.softmax(out.logits[0].float(), dim=-1).topk(TOP, dim=-1)
    assert torch.equal(torch.from_numpy(lens.top_ids[-1]), ids), family
    torch.testing.assert_close(torch.from_numpy(lens.top_probs[-1]), probs, atol=2e-5, rtol=1e-4)
    # One norm per hidden state: the embeddings and each layer's output, the same states
    # transformers reports (its last one is after the final norm: not compared).
    assert lens.norms.shape == (layers + 1, len(lens.ids)) and len(lens.mean_norms()) == layers + 1
    for index in range(layers):
        torch.testing.assert_close(torch.from_numpy(lens.norms[index]), out.hidden_states[index][0].norm(dim=-1),
                                   atol=1e-4, rtol=1e-4)


def test_attention_rows_are_the_eager_weights_and_sum_to_one(family_model):
    family, model, tokenizer = family_model
    lens = inspect_text(model, tokenizer, TEXT, 512, position=7)
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    assert lens.attention.shape == (layers, heads, 8) and lens.position == 7
    sums = lens.attention.sum(axis=-1)
    if family in SINKS:
        assert (sums <= 1 + 1e-5).all() and (sums > 0).all()
    else:
        assert abs(sums - 1).max() < 1e-5
    assert abs(lens.attention_rows(None).sum(axis=-1) - sums.mean(axis=1)).max() < 1e-5
    if family == "llama":  # the very rows transformers returns when asked for attentions
        model.set_attn_implementation("eager")
        try:
            with torch.inference_mode():
                weights = model(torch.tensor([lens.ids]), output_attentions=True).attentions
        finally:
            model.set_attn_implementation("sdpa")
        expected = torch.stack([w[0, :, 7, :8] for w in weights])
        torch.testing.assert_close(torch.from_numpy(lens.attention), expected, atol=1e-6, rtol=1e-5)


def test_the_texts_name_the_tokens(family_model):
    _, model, tokenizer = family_model
    lens = inspect_text(model, tokenizer, TEXT, 512)
    special = set(tokenizer.all_special_ids)
    assert "".join(text for i, text in zip(lens.ids, lens.tokens, strict=True) if i not in special) == \
        tokenizer.decode(lens.ids, skip_special_tokens=True)
    top = lens.top(len(lens.layer_names) - 1, 3)
    assert len(top) == TOP and all(isinstance(text, str) for text, _ in top)
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)


def test_a_position_out_of_range_is_refused_naming_it(family_model):
    _, model, tokenizer = family_model
    with pytest.raises(InspectError) as caught:
        inspect_text(model, tokenizer, "a short text", 512, position=400)
    assert caught.value.param == "position" and caught.value.status == 400


# -- as a job on the session's model --------------------------------------------------

def test_too_many_tokens_are_refused_naming_the_text(runtime):
    long_text = " ".join(["lighthouse keeper"] * MAX_TOKENS)
    with pytest.raises(InspectError) as caught:
        runtime.inspect.run(long_text)
    assert caught.value.param == "text" and caught.value.status == 400
    assert str(caught.value).startswith("text:") and f"more than {MAX_TOKENS}" in str(caught.value)
    assert runtime.models.lent_for is None
    with pytest.raises(InspectError, match="text"):
        runtime.inspect.run("x" * 100_000)  # refused before the tokenizer reads it
    with pytest.raises(InspectError, match="text"):
        runtime.inspect.run("   ")


def test_a_gguf_model_is_refused_with_the_reason(tmp_path):
    from tests.gguf_fixtures import require_llama_cpp
    from webui.runtime import build_runtime
    from webui.settings import PROJECT_ROOT
    from webui.ui.inspect_tab import note_text

    require_llama_cpp()
    gguf = build_runtime(make_settings(PROJECT_ROOT / "models", tmp_path, model="demo-kjv-4m-gguf"))
    try:
        assert gguf.models.current is not None and gguf.models.current.loader == "llama.cpp", gguf.warnings
        with pytest.raises(InspectUnsupported) as caught:
            gguf.inspect.run(TEXT)
        assert "GGUF" in str(caught.value) and "per-layer hidden states" in str(caught.value)
        assert caught.value.code == "inspect_unsupported" and gguf.models.lent_for is None
        assert "cannot run here" in note_text(gguf, "someone") and "llama.cpp" in note_text(gguf, "someone")
    finally:
        gguf.models.unload()
        gguf.engine.close()


def test_stop_ends_the_job_between_layers_and_the_model_serves_again(runtime):
    service = runtime.inspect
    model = runtime.models.current.model
    implementation, hooks = model.config._attn_implementation, hook_count(model)
    seen = []

    def on_layer(index, count):
        seen.append(index)
        if index == 0:
            assert service.stop()  # as the Stop button does, from the page's thread
    with pytest.raises(InspectCancelled, match="stopped before layer 2"):
        service.run(TEXT, on_layer=on_layer)
    assert seen == [0]
    assert runtime.models.lent_for is None and not service.stop()
    assert model.config._attn_implementation == implementation and hook_count(model) == hooks
    assert len(service.run(TEXT).ids) > 5  # the next one runs in full


def test_a_running_reply_is_untouched_by_an_inspection(runtime, monkeypatch):
    from webui.generation.params import make_params

    params = make_params({"seed": 3, "ban_eos_token": True, "max_new_tokens": 40, "temperature": 0})
    prompt = "The keeper climbed"
    alone = "".join(runtime.stream("alone", prompt, params))
    # The same reply again, slowed so that the inspection is asked for while it runs.
    backend = runtime.models.current.backend
    step = backend.step
    monkeypatch.setattr(backend, "step", lambda slots, tokens: (time.sleep(0.01), step(slots, tokens))[1])
    stream = runtime.stream("reader", prompt, params)
    pieces = iter(stream)
    first = next(pieces)
    results, errors = [], []
    job = threading.Thread(target=lambda: _collect(runtime, results, errors))
    job.start()
    assert wait_for(lambda: runtime.models.lent_for is not None or results or errors, timeout=30)
    rest = "".join(pieces)
    job.join(60)
    assert not errors and results, errors
    assert first + rest == alone
    assert runtime.models.lent_for is None


def _collect(runtime, results, errors):
    try:
        results.append(runtime.inspect.run(TEXT))
    except Exception as exc:  # reported by the test
        errors.append(exc)


def test_a_second_inspection_is_refused_while_one_runs(runtime):
    started, release = threading.Event(), threading.Event()

    def hold(index, count):
        if index == 0:
            started.set()
            release.wait(30)
    results, errors = [], []
    job = threading.Thread(target=lambda: results.append(runtime.inspect.run(TEXT, on_layer=hold)))
    job.start()
    try:
        assert started.wait(30)
        with pytest.raises(ModelLent, match="inspection"):
            runtime.inspect.run(TEXT)
        with pytest.raises(QueueFull, match="inspection .* in progress"):  # a new reply: refused by name
            "".join(runtime.stream("other", "Hello", runtime.default_params))
    finally:
        release.set()
        job.join(60)
    assert results and not errors


@pytest.mark.parametrize("family", ["llava", "gemma3"])
def test_a_vision_model_is_read_through_its_text_decoder(family, tmp_path):
    from transformers import AutoModelForImageTextToText

    from tests.tiny_vision import build_gemma3, build_vision

    folder = build_gemma3(tmp_path / family) if family == "gemma3" else build_vision(tmp_path / family, family)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    lens = inspect_text(model, AutoTokenizer.from_pretrained(folder), TEXT, 512)
    with torch.inference_mode():
        probs, ids = torch.softmax(model(input_ids=torch.tensor([lens.ids])).logits[0].float(), dim=-1).topk(TOP)
    assert torch.equal(torch.from_numpy(lens.top_ids[-1]), ids)
    torch.testing.assert_close(torch.from_numpy(lens.top_probs[-1]), probs, atol=2e-5, rtol=1e-4)
    assert abs(lens.attention.sum(axis=-1) - 1).max() < 1e-5


def test_other_architectures_are_read_where_they_fit_and_refused_with_the_reason_where_not():
    from transformers import CohereConfig, CohereForCausalLM, GPT2Config, GPT2LMHeadModel, MambaConfig, MambaForCausalLM

    from webui.inspect.lens import analyse

    torch.manual_seed(0)
    ids = list(range(5, 25))
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=64)).eval()
    lens = analyse(gpt2, ids, len(ids) - 1)  # ln_f, layers in `h`, attention in `attn`
    with torch.inference_mode():
        expected = torch.softmax(gpt2(torch.tensor([ids])).logits[0], dim=-1).topk(TOP)
    assert torch.equal(torch.from_numpy(lens.top_ids[-1]), expected.indices)
    cohere = CohereForCausalLM(CohereConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                                            num_attention_heads=4, num_key_value_heads=2, vocab_size=300))
    with pytest.raises(InspectUnsupported, match="rescales its logits \\(logit_scale\\)"):
        analyse(cohere, ids, 0)
    mamba = MambaForCausalLM(MambaConfig(num_hidden_layers=2, hidden_size=64, vocab_size=300))
    with pytest.raises(InspectUnsupported, match="MambaForCausalLM: the logit lens reads transformer decoders"):
        analyse(mamba, ids, 0)
