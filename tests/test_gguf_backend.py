"""The llama.cpp loader and backend on tiny real GGUF models, through the engine and the API."""

from __future__ import annotations

import threading

import openai
import pytest
import torch

from tests.conftest import API_KEY, make_settings, wait_for
from tests.gguf_fixtures import F32, FOLDER, HF_NAME, Q8, require_llama_cpp
from webui.generation.engine import GenerationError
from webui.generation.params import make_params
from webui.loaders.base import LoadError

GREEDY = {"do_sample": False, "max_new_tokens": 24}
PROMPTS = ["The quick brown fox", "In the beginning", "Once upon a time there was", "Hello, world. "]


@pytest.fixture(scope="module")
def gguf_runtime(gguf_root, tmp_path_factory):
    from webui.runtime import build_runtime

    require_llama_cpp()
    settings = make_settings(gguf_root, tmp_path_factory.mktemp("gguf_user_data"), model=F32, api_key=API_KEY)
    runtime = build_runtime(settings)
    assert runtime.models.current is not None, runtime.warnings
    return runtime


def run(runtime, prompt, owner="t", **values):
    stream = runtime.stream(owner, prompt, make_params({**GREEDY, **values}))
    return "".join(stream), stream.stats


def test_loads_with_its_loader_and_declares_what_it_can_do(gguf_runtime):
    loaded = gguf_runtime.models.current
    assert loaded.loader == "llama.cpp" and loaded.dtype == "ALL_F32" and loaded.context_length == 512
    caps = loaded.backend.capabilities
    assert caps.max_batch == 8 and caps.prefix_cache and caps.logprobs and not caps.guidance and caps.embeddings
    assert caps.ignores({"guidance_scale", "min_p", "dry_multiplier", "mirostat_mode"}) == ["guidance_scale"]
    assert "llama.cpp" in loaded.describe() and "batches up to 8" in loaded.describe()
    # The Parameters tab marks what this backend ignores (webui/ui/parameters_tab.py).
    assert gguf_runtime.ignored_samplers("a tab") == (f"{loaded.name} (llama.cpp)",
                                                      ("guidance_scale", "negative_prompt",
                                                       "prompt_lookup_num_tokens"))


def test_greedy_output_matches_the_transformers_loader_on_the_same_weights(gguf_runtime, gguf_root):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = gguf_root / HF_NAME
    hf_tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    backend = gguf_runtime.models.current.backend
    for prompt in PROMPTS[:2]:
        ids = hf_tokenizer(prompt)["input_ids"]
        assert backend.tokenizer(prompt)["input_ids"] == ids  # same SentencePiece pieces, BOS included
        expected = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)[0, len(ids):].tolist()
        with gguf_runtime.models.use() as loaded:
            slot = loaded.backend.start(ids)
            got = [int(slot.logits.argmax())]
            for _ in range(15):
                got.append(int(loaded.backend.step([slot], [got[-1]]).argmax()))
            loaded.backend.finish(slot, keep=False)
        assert got == expected
        text, _ = run(gguf_runtime, prompt, max_new_tokens=16, ban_eos_token=True)
        # Through the engine, the same tokens (their text: llama.cpp writes an invalid byte
        # sequence's valid bytes where transformers writes U+FFFD for all of them).
        assert text.strip() == backend.tokenizer.decode(expected, skip_special_tokens=True).strip()


def test_streams_in_pieces_and_stops_on_stop_strings(gguf_runtime):
    stream = gguf_runtime.stream("s", PROMPTS[0], make_params({**GREEDY, "ban_eos_token": True}))
    pieces = list(stream)
    assert len(pieces) > 1 and stream.stats.new_tokens == 24 and stream.stats.finish_reason == "length"
    full = "".join(pieces)
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    text, stats = run(gguf_runtime, PROMPTS[0], stop=[stop], ban_eos_token=True)
    assert stats.finish_reason == "stop" and stop not in text and full.startswith(text)


def test_cancel_ends_only_that_request(gguf_runtime):
    long = gguf_runtime.stream("a", PROMPTS[1], make_params({**GREEDY, "max_new_tokens": 400, "ban_eos_token": True}))
    other = gguf_runtime.stream("b", PROMPTS[2], make_params({**GREEDY, "ban_eos_token": True}))
    pieces = long.updates()
    next(piece for piece in pieces if isinstance(piece, str))
    gguf_runtime.stop("a")
    list(pieces)
    assert long.stats.finish_reason == "cancelled" and long.stats.new_tokens < 400
    assert "".join(other) and other.stats.finish_reason == "length"


def test_concurrent_requests_each_get_their_solo_output(gguf_runtime):
    solo = [run(gguf_runtime, p, ban_eos_token=True)[0] for p in PROMPTS]
    sampled = {"do_sample": True, "temperature": 1.3, "seed": 7, "ban_eos_token": True}
    solo_sampled = run(gguf_runtime, PROMPTS[0], **sampled)[0]
    results: dict[int, str] = {}
    gate = threading.Barrier(len(PROMPTS) + 1)

    def worker(index, prompt, values):
        gate.wait()
        results[index] = run(gguf_runtime, prompt, owner=f"user{index}", **values)[0]

    threads = [threading.Thread(target=worker, args=(i, p, {"ban_eos_token": True})) for i, p in enumerate(PROMPTS)]
    threads.append(threading.Thread(target=worker, args=(99, PROMPTS[0], sampled)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [results[i] for i in range(len(PROMPTS))] == solo
    assert results[99] == solo_sampled
    assert wait_for(lambda: gguf_runtime.engine.running == 0)


def test_a_follow_up_prompt_reuses_the_kept_prefix_and_gives_the_same_text(gguf_runtime):
    backend = gguf_runtime.models.current.backend
    first, _ = run(gguf_runtime, PROMPTS[2] * 4, ban_eos_token=True)
    follow = PROMPTS[2] * 4 + first + " And then"
    reused_text, stats = run(gguf_runtime, follow, ban_eos_token=True)
    assert stats.cached_tokens >= 16
    backend.clear_cache()
    fresh_text, fresh = run(gguf_runtime, follow, ban_eos_token=True)
    assert fresh.cached_tokens == 0 and fresh_text == reused_text


def test_samplers_change_output_as_they_should_and_seeds_reproduce(gguf_runtime):
    greedy, _ = run(gguf_runtime, PROMPTS[3], ban_eos_token=True)
    hot = {"do_sample": True, "temperature": 2.0, "seed": 3, "ban_eos_token": True}
    first, second = run(gguf_runtime, PROMPTS[3], **hot)[0], run(gguf_runtime, PROMPTS[3], **hot)[0]
    assert first == second != greedy
    assert run(gguf_runtime, PROMPTS[3], **{**hot, "seed": 4})[0] != first
    # top_k 1 is greedy whatever the temperature; min_p 1 keeps only the top token too.
    assert run(gguf_runtime, PROMPTS[3], **{**hot, "top_k": 1})[0] == greedy
    assert run(gguf_runtime, PROMPTS[3], **{**hot, "min_p": 1.0})[0] == greedy
    # A strong repetition penalty changes a greedy reply that repeats itself.
    penalised, _ = run(gguf_runtime, PROMPTS[3], ban_eos_token=True, repetition_penalty=3.0)
    assert penalised != greedy
    stream = gguf_runtime.stream("lp", PROMPTS[3], make_params({**GREEDY, "max_new_tokens": 4}), logprobs=2)
    "".join(stream)
    assert len(stream.logprobs) == 4 and all(lp.logprob <= 0 and len(lp.top) == 2 for lp in stream.logprobs)


def test_guidance_is_refused_by_name(gguf_runtime):
    stream = gguf_runtime.stream("g", PROMPTS[0], make_params({**GREEDY, "guidance_scale": 1.5}))
    with pytest.raises(GenerationError, match="guidance_scale"):
        "".join(stream)


def test_the_api_serves_it_and_refuses_an_unsupported_sampler_with_its_field(gguf_runtime):
    from webui.api.openai_api import APIServer
    from tests.conftest import free_port

    server = APIServer(gguf_runtime, port=free_port())
    client = openai.OpenAI(base_url=server.start(), api_key=API_KEY)
    try:
        reply = client.completions.create(model=F32, prompt=PROMPTS[0], max_tokens=8, temperature=0)
        assert reply.choices[0].text and reply.usage.completion_tokens <= 8
        with pytest.raises(openai.BadRequestError) as refused:
            client.completions.create(model=F32, prompt=PROMPTS[0], max_tokens=8,
                                      extra_body={"guidance_scale": 1.5, "negative_prompt": "no"})
        assert refused.value.body["param"] in ("guidance_scale", "negative_prompt")
        assert "not supported" in refused.value.body["message"]
    finally:
        server.stop()


def test_embeddings_match_the_transformers_pooling_on_the_same_weights(gguf_runtime, gguf_root):
    """/v1/embeddings on a GGUF model: the same pooling as the Transformers backend (mean
    of the last hidden state, normalised), several inputs packed into one decode, each
    as it is alone, and a reply decoding meanwhile is unchanged."""
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.conftest import free_port
    from webui.api.openai_api import APIServer

    folder = gguf_root / HF_NAME
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    server = APIServer(gguf_runtime, port=free_port())
    client = openai.OpenAI(base_url=server.start(), api_key=API_KEY, max_retries=0)
    try:
        alone = run(gguf_runtime, PROMPTS[2], max_new_tokens=40, ban_eos_token=True)[0]
        results = {}
        worker = threading.Thread(target=lambda: results.setdefault(
            "text", run(gguf_runtime, PROMPTS[2], owner="other", max_new_tokens=40, ban_eos_token=True)[0]))
        worker.start()
        batched = np.array([d.embedding for d in client.embeddings.create(model=F32, input=PROMPTS).data])
        worker.join(timeout=120)
        single = np.array([client.embeddings.create(model=F32, input=p).data[0].embedding for p in PROMPTS])
        with torch.inference_mode():
            hidden = [model(input_ids=torch.tensor([tokenizer(p)["input_ids"]]), output_hidden_states=True)
                      .hidden_states[-1][0].mean(dim=0) for p in PROMPTS]
        expected = np.array([(h / h.norm()).numpy() for h in hidden])
        assert np.allclose(batched, single, atol=1e-5)
        assert np.allclose(batched, expected, atol=1e-3)
        assert not np.allclose(batched[0], batched[1], atol=1e-2)
        assert results["text"] == alone  # the running sequence's KV was not touched
    finally:
        server.stop()


def test_chat_template_comes_from_the_metadata_and_renders_in_the_sandbox(gguf_runtime, gguf_root):
    from jinja2.exceptions import SecurityError
    from transformers import AutoTokenizer

    from webui.chat.prompt import apply_template
    from webui.generation.request import PromptError

    tokenizer = gguf_runtime.models.current.tokenizer
    hf = AutoTokenizer.from_pretrained(gguf_root / HF_NAME)
    assert tokenizer.chat_template == hf.chat_template
    messages = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "How are you?"}]
    ours = apply_template(tokenizer, messages, system="Be brief.")
    assert ours == apply_template(hf, messages, system="Be brief.")
    assert ours.startswith("<s><|system|>\nBe brief.</s>") and ours.endswith("<|assistant|>\n")
    # The BOS the template writes is not doubled when the prompt is tokenized.
    from webui.generation.request import prompt_ids

    assert prompt_ids(tokenizer, ours).count(tokenizer.bos_token_id) == 1
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises((PromptError, SecurityError)):
        apply_template(tokenizer, messages, template=evil)


def test_a_corrupt_file_fails_clearly_and_the_previous_model_keeps_serving(gguf_runtime, gguf_root):
    data = (gguf_root / Q8).read_bytes()
    (gguf_root / "broken.gguf").write_bytes(data[: len(data) // 2])
    (gguf_root / "notgguf.gguf").write_bytes(b"\x00" * 4096)
    before = run(gguf_runtime, PROMPTS[0])[0]
    for name, reason in (("broken.gguf", "truncated|corrupt"), ("notgguf.gguf", "not a GGUF file")):
        with pytest.raises(LoadError, match=reason):
            gguf_runtime.load_model(name, save=False)
        assert gguf_runtime.models.current.name == F32
        assert run(gguf_runtime, PROMPTS[0])[0] == before


def test_q8_0_and_folder_entries_load_and_swap_back(gguf_runtime):
    from webui.model_settings import ModelSettings

    try:
        loaded, _ = gguf_runtime.load_model(Q8, ModelSettings(n_ctx=256, flash_attn=True, n_batch=64), save=False)
        assert loaded.dtype == "Q8_0" and loaded.context_length == 256 and loaded.options.flash_attn
        text, stats = run(gguf_runtime, PROMPTS[0], ban_eos_token=True)
        assert text and stats.new_tokens == 24
        loaded, _ = gguf_runtime.load_model(FOLDER, ModelSettings(gguf_file=Q8), save=False)
        assert loaded.dtype == "Q8_0"
        with pytest.raises(LoadError, match="flash-attn"):
            gguf_runtime.load_model(Q8, ModelSettings(cache_type="q4_0", flash_attn=False), save=False)
        # The tiny model's 16-value heads cannot be stored in 32-value q8_0 blocks: said so, before loading.
        with pytest.raises(LoadError, match="multiple of 32"):
            gguf_runtime.load_model(Q8, ModelSettings(cache_type="q8_0", flash_attn=True), save=False)
    finally:
        gguf_runtime.load_model(F32, save=False)
    assert gguf_runtime.models.current.name == F32


def test_one_batched_decode_gives_each_sequence_its_solo_logits(gguf_runtime):
    """Three sequences stepped together in one llama_decode: each row is what that
    sequence gets alone (deterministic, whatever the engine's timing)."""
    with gguf_runtime.models.use() as loaded:
        backend, tokenizer = loaded.backend, loaded.tokenizer

        def greedy(slots, steps):
            out = [[int(slot.logits.argmax())] for slot in slots]
            for _ in range(steps):
                rows = backend.step(slots, [tokens[-1] for tokens in out])
                assert rows.shape == (len(slots), backend.vocab_size())
                for tokens, row in zip(out, rows, strict=True):
                    tokens.append(int(row.argmax()))
            return out

        prompts = [tokenizer(p)["input_ids"] for p in PROMPTS[:3]]
        solo = []
        for ids in prompts:
            slot = backend.start(ids)
            solo += greedy([slot], 12)
            backend.finish(slot, keep=False)
        slots = [backend.start(ids) for ids in prompts]
        together = greedy(slots, 12)
        for slot in slots:
            backend.finish(slot, keep=False)
    assert together == solo


def test_a_json_schema_is_enforced_on_a_gguf_model_through_llama_cpps_vocabulary(gguf_runtime):
    import json

    from tests.schema_check import violations

    schema = {"type": "object", "properties": {
        "word": {"type": "string", "maxLength": 10}, "n": {"type": "integer", "minimum": 0, "maximum": 99},
        "kind": {"enum": ["a", "b"]}}, "required": ["word", "n", "kind"], "additionalProperties": False}
    for seed in range(3):
        text, stats = run(gguf_runtime, PROMPTS[seed], do_sample=True, seed=seed, max_new_tokens=120,
                          json_schema=json.dumps(schema))
        assert stats.finish_reason == "stop", text
        assert violations(json.loads(text), schema) == []
    text, _ = run(gguf_runtime, PROMPTS[0], grammar_string='root ::= "yes" | "no"')
    assert text in ("yes", "no")
