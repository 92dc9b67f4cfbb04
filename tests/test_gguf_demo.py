"""The built-in demo model as GGUF (models/demo-kjv-4m-gguf/), and quantized KV caches on it.

The demo's heads are 64 values wide, so q8_0/q4_0 caches (32-value blocks) work on it,
where the tests' tiny model's 16-value heads cannot: these tests use the committed file.
"""

from __future__ import annotations

import openai
import pytest

from tests.conftest import API_KEY, free_port, make_settings
from tests.gguf_fixtures import require_llama_cpp
from webui.fit import gguf_estimate
from webui.loaders.base import LoadError
from webui.loaders.gguf_files import read_info
from webui.loaders.gguf_loader import LlamaCppLoader
from webui.loaders.gguf_options import LlamaCppOptions
from webui.settings import PROJECT_ROOT

MODELS = PROJECT_ROOT / "models"
DEMO = "demo-kjv-4m"
DEMO_GGUF = "demo-kjv-4m-gguf"
FILE = MODELS / DEMO_GGUF / "demo-kjv-4m-q8_0.gguf"


def test_the_committed_gguf_holds_the_demo_models_weights():
    """Caught if the demo model is retrained and its GGUF not converted again
    (scripts/convert_to_gguf.py models/demo-kjv-4m --outtype q8_0 --outdir models/demo-kjv-4m-gguf)."""
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors import safe_open

    with safe_open(str(MODELS / DEMO / "model.safetensors"), "pt") as weights:
        hf = {name: weights.get_tensor(name).float().numpy() for name in weights.keys()}
    tensors = {t.name: t for t in GGUFReader(FILE).tensors}
    pairs = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
    for layer in range(4):
        for ours, theirs in (("attn_v", "self_attn.v_proj"), ("attn_output", "self_attn.o_proj"),
                             ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"), ("ffn_down", "mlp.down_proj")):
            pairs[f"blk.{layer}.{ours}.weight"] = f"model.layers.{layer}.{theirs}.weight"
    for name, hf_name in pairs.items():
        tensor = tensors[name]
        values = dequantize(tensor.data, tensor.tensor_type).reshape(hf[hf_name].shape)
        scale = np.abs(hf[hf_name]).max()
        # Q8_0: 8-bit values with one scale per 32, so within 1/127 of a block's largest value.
        assert np.abs(values - hf[hf_name]).max() <= scale / 100, name
    info = read_info(FILE)
    assert (info.architecture, info.file_type, info.layers, info.key_length) == ("llama", "Q8_0", 4, 64)
    assert info.chat_template == (MODELS / DEMO / "chat_template.jinja").read_text().strip()


def test_the_demo_gguf_is_listed_loads_and_chats(tmp_path):
    from webui.api.openai_api import APIServer
    from webui.runtime import build_runtime

    require_llama_cpp()
    runtime = build_runtime(make_settings(MODELS, tmp_path, model=DEMO_GGUF, api_key=API_KEY))
    loaded = runtime.models.current
    assert loaded is not None, runtime.warnings
    assert {DEMO, DEMO_GGUF} <= set(runtime.models.names())
    assert loaded.loader == "llama.cpp" and loaded.dtype == "Q8_0"
    # The chat markers are one special token each, as in the Transformers tokenizer
    # (gguf_convert.staged tells llama.cpp's converter which tokens are special).
    markers = ["<s>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    assert [loaded.tokenizer.encode(m, add_special_tokens=False) for m in markers] == [[1], [4], [5], [6], [7]]
    assert loaded.tokenizer.decode([4, 7], skip_special_tokens=True) == ""
    server = APIServer(runtime, port=free_port())
    client = openai.OpenAI(base_url=server.start(), api_key=API_KEY)
    try:
        reply = client.chat.completions.create(
            model=DEMO_GGUF, messages=[{"role": "user", "content": "Who made the heaven and the earth?"}],
            max_tokens=24, temperature=0)
    finally:
        server.stop()
    text = reply.choices[0].message.content
    # The demo writes King James English: mostly letters and spaces, several words.
    assert len(text.split()) >= 4 and sum(c.isalpha() or c.isspace() for c in text) >= 0.8 * len(text), text
    assert "<|" not in text  # the template's markers are special tokens, never shown


@pytest.mark.parametrize("cache_type", ["q8_0", "q4_0"])
def test_a_quantized_kv_cache_loads_generates_and_takes_what_will_it_fit_says(cache_type):
    """llama.cpp's own count of a sequence's KV bytes (llama_state_seq_get_size) grows per
    token by exactly what Will it fit? estimates for each cache type."""
    lib = require_llama_cpp()
    info = read_info(FILE)
    loader = LlamaCppLoader(isolate=False)  # in this process: llama.cpp's count is read from its context

    def kv_bytes(options, tokens):
        loaded = loader.load(DEMO_GGUF, FILE.parent, options)
        try:
            backend = loaded.backend
            sizes = []
            for n in tokens:
                slot = backend.start(list(range(10, 10 + n)))
                sizes.append(int(lib.llama_state_seq_get_size(backend._ctx, slot.seq)))
                backend.finish(slot, keep=False)
            ids = loaded.tokenizer("In the beginning")["input_ids"]
            slot = backend.start(ids)
            out = [int(slot.logits.argmax())]
            for _ in range(7):
                out.append(int(backend.step([slot], [out[-1]]).argmax()))
            backend.finish(slot, keep=False)
            return sizes[1] - sizes[0], loaded.tokenizer.decode(out)
        finally:
            loader.unload(loaded)

    fp16_growth, _ = kv_bytes(LlamaCppOptions(n_ctx=256, flash_attn=True), (64, 128))
    growth, text = kv_bytes(LlamaCppOptions(n_ctx=256, flash_attn=True, cache_type=cache_type), (64, 128))
    assert text.strip()
    # Each growth is 64 tokens' keys and values plus the cells' bookkeeping (the same for
    # every type): their difference is the estimate's difference.
    estimate, estimate_fp16 = gguf_estimate(info, 64, 0, cache_type), gguf_estimate(info, 64, 0, "fp16")
    assert fp16_growth - growth == estimate_fp16.kv_ram - estimate.kv_ram > 0
    assert estimate.kv_ram < estimate_fp16.kv_ram and estimate.weights_ram == estimate_fp16.weights_ram


def test_will_it_fit_shows_the_smaller_cache_and_an_impossible_combination_before_loading(tmp_path):
    from webui.model_settings import ModelSettings
    from webui.runtime import build_runtime

    runtime = build_runtime(make_settings(MODELS, tmp_path, model=None))
    reports = {kind: runtime.fit_report(DEMO_GGUF, ModelSettings(cache_type=kind, flash_attn=True, n_ctx=512))
               for kind in ("fp16", "q8_0", "q4_0")}
    info = read_info(FILE)
    shown = {}
    for kind, text in reports.items():
        assert f"KV cache ({kind})" in text and "will not load" not in text
        shown[kind] = gguf_estimate(info, 512, 0, kind).kv_ram
        assert f"| {shown[kind] / (1 << 20):.2f} MiB |" in text  # the RAM row's KV cache
    assert shown["fp16"] > shown["q8_0"] > shown["q4_0"]
    refused = runtime.fit_report(DEMO_GGUF, ModelSettings(cache_type="q4_0", flash_attn=False))
    assert "will not load: --cache-type q4_0 needs --flash-attn" in refused
    # Loading it says the same, before llama.cpp is asked; nothing is loaded.
    require_llama_cpp()
    with pytest.raises(LoadError, match="needs --flash-attn"):
        runtime.load_model(DEMO_GGUF, ModelSettings(cache_type="q4_0", flash_attn=False), save=False)
    assert runtime.models.current is None


def test_the_demo_gguf_ends_its_turn_by_itself_as_the_transformers_demo_does():
    """Its end-of-turn marker is one end-of-generation token (tests/test_demo_model.py
    asks the same of the Transformers demo)."""
    from webui.chat.prompt import render_chat_prompt
    from webui.generation.engine import GenerationEngine, GenerationRequest
    from webui.generation.params import make_params
    from webui.loaders.registry import default_registry
    from webui.model_manager import ModelManager
    from webui.runtime import load_options
    from webui.settings import Settings

    require_llama_cpp()
    manager = ModelManager(MODELS, default_registry(), load_options(Settings(model_dir=MODELS)))
    manager.load(DEMO_GGUF)
    try:
        assert 7 in manager.current.backend.eos_ids()
        prompt = render_chat_prompt(manager.current.tokenizer,
                                    [{"role": "user", "content": "Who made the heaven and the earth?"}])
        replies = []
        for seed in (1, 2, 3):
            params = make_params({"temperature": 0.7, "min_p": 0.05, "max_new_tokens": 120, "seed": seed})
            stream = GenerationEngine(manager).generate(GenerationRequest(prompt, params))
            replies.append((stream.text(), stream.stats))
    finally:
        manager.unload()
    assert sum(stats.finish_reason == "stop" for _, stats in replies) >= 2, replies
    words = " ".join(text for text, _ in replies).split()
    assert sum(w.strip(".,;:").isalpha() for w in words) / len(words) > 0.8, replies
