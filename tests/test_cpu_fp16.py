"""fp16 weights on fbgemm's kernel, `--dtype auto` on x86 CPUs (webui/loaders/cpu_fp16.py)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.tiny_models import build_llama
from webui.fit import estimate, read_shape
from webui.loaders.base import LoadOptions
from webui.loaders.cpu_fp16 import FP16_MAX, PackedFp16Linear, fbgemm_fp16_ready, to_cpu_fp16
from webui.loaders.cpu_layers import weight_bytes
from webui.loaders.hf_kwargs import Machine, packs_fp16
from webui.loaders.hf_transformers import TransformersLoader

pytestmark = pytest.mark.skipif(not fbgemm_fp16_ready(), reason="this torch build has no fbgemm fp16 kernel")
PROMPT = "The old lighthouse keeper"
PACKS_HERE = Machine.detect().cuda_devices == 0 and Machine.detect().flags >= {"avx2", "fma", "f16c"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_llama(tmp_path_factory.mktemp("cpu-fp16") / "tiny-llama")


@pytest.fixture(scope="module")
def loaded(folder):
    loader = TransformersLoader()
    fp32 = loader.load("tiny-llama", folder, LoadOptions(cpu=True, dtype="fp32"))
    fp16 = loader.load("tiny-llama", folder, LoadOptions(cpu=True, dtype="fp16"))
    return fp32, fp16


def greedy(loaded, tokens: int) -> list[int]:
    ids = loaded.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = loaded.model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                    pad_token_id=loaded.tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def test_every_linear_is_packed_and_the_rest_computes_in_fp32(loaded):
    fp32, fp16 = loaded
    model = fp16.model
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert layers and all(isinstance(m, PackedFp16Linear) and m.weight.numel() == 0 for m in layers)
    assert model.get_output_embeddings() in layers  # the head too: it is the biggest matmul
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert fp16.dtype == "float16" and fp16.parameters == fp32.parameters


def test_logits_and_greedy_tokens_match_fp32(loaded):
    fp32, fp16 = loaded
    ids = fp32.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():
        a, b = fp32.model(ids).logits, fp16.model(ids).logits
    # fp16 rounds each weight by at most 2^-11 of itself; accumulation stays fp32.
    assert (a - b).abs().max() < 2e-3 * a.abs().max()
    assert greedy(fp32, 12) == greedy(fp16, 12)


def test_weights_take_about_half_of_fp32(loaded, folder):
    fp32, fp16 = loaded
    assert weight_bytes(fp16.model) < 0.75 * weight_bytes(fp32.model)  # embeddings stay fp32
    # "Will it fit?" counts what the packed load holds.
    guess = estimate(read_shape(folder), 64, cpu=True, dtype="fp16", flags=frozenset({"avx2", "fma", "f16c"}))
    assert guess.packed_fp16 and guess.base_bytes == 4
    assert abs(guess.weights - weight_bytes(fp16.model)) < 0.02 * weight_bytes(fp16.model)
    assert guess.peak_weights == read_shape(folder).weight_bytes(16)  # it loads in 16-bit


@pytest.mark.parametrize("rows", [1, 7, 300])
def test_the_layer_and_its_input_gradient_match_fp32(rows):
    torch.manual_seed(rows)
    linear = torch.nn.Linear(96, 40)
    packed = PackedFp16Linear.from_linear(linear)
    x = torch.randn(rows, 96, requires_grad=True)
    y = packed(x)
    (y * torch.arange(40.0)).sum().backward()
    x_ref = x.detach().clone().requires_grad_(True)
    y_ref = linear(x_ref)
    (y_ref * torch.arange(40.0)).sum().backward()
    assert (y - y_ref).abs().max() < 1e-3 * y_ref.abs().max()
    assert (x.grad - x_ref.grad).abs().max() < 1e-3 * x_ref.grad.abs().max()
    with torch.no_grad():  # other dtypes in, the same dtype out
        assert packed(x.detach().bfloat16()).dtype == torch.bfloat16


def test_a_layer_beyond_fp16_range_stays_fp32():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    with torch.no_grad():
        model[1].weight[0, 0] = 2 * FP16_MAX
    model.config = type("Config", (), {})()
    assert to_cpu_fp16(model) == 1
    assert isinstance(model[0], PackedFp16Linear) and type(model[1]) is torch.nn.Linear


def test_each_original_layer_is_freed_as_soon_as_it_is_packed():
    """The load's peak is one model plus one layer, not two models."""
    import gc
    import weakref

    model = torch.nn.Sequential(*(torch.nn.Linear(64, 64) for _ in range(4)))
    model.config = type("Config", (), {})()
    originals = [weakref.ref(layer) for layer in model]
    alive_after: list[int] = []

    def pack_and_count(linear):
        gc.collect()
        alive_after.append(sum(ref() is not None for ref in originals))
        return PackedFp16Linear.from_linear(linear)

    from webui.loaders.cpu_layers import replace_linears

    assert replace_linears(model, pack_and_count) == 4
    assert alive_after == [4, 3, 2, 1]  # when layer i is packed, layers before it are gone


def test_a_bf16_checkpoint_loads_without_overflowing(tmp_path, folder):
    """bf16 holds values fp16 cannot: such a checkpoint loads in bf16 and packs what fits."""
    model = TransformersLoader().load("tiny-llama", folder, LoadOptions(cpu=True, dtype="fp32")).model
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = 2.0**20  # exact in bf16, beyond fp16
    model.to(torch.bfloat16).save_pretrained(tmp_path / "big")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).exists():
            (tmp_path / "big" / name).write_bytes((folder / name).read_bytes())
    assert json.loads((tmp_path / "big" / "config.json").read_text())["dtype"] == "bfloat16"
    loaded = TransformersLoader().load("big", tmp_path / "big", LoadOptions(cpu=True, dtype="fp16"))
    down = loaded.model.model.layers[0].mlp.down_proj
    assert type(down) is torch.nn.Linear and down.weight[0, 0].item() == 2.0**20
    assert sum(isinstance(m, PackedFp16Linear) for m in loaded.model.modules()) > 5
    assert len(greedy(loaded, 3)) == 3


@pytest.mark.skipif(not PACKS_HERE, reason="--dtype auto packs fp16 only on a CPU-only machine with AVX2 and F16C")
def test_fp16_packs_on_this_cpu_and_the_engine_streams(folder):
    from webui.generation.engine import GenerationEngine, GenerationRequest
    from webui.generation.params import make_params
    from webui.loaders.registry import default_registry
    from webui.model_manager import ModelManager

    params = make_params({"temperature": 0.0, "max_new_tokens": 6, "ban_eos_token": True})
    texts = {}
    # `auto` packs fp16 where it is this CPU's choice (cpu_features.auto_cpu_dtype); on a
    # CPU with bf16 arithmetic it is bf16, so ask for fp16 by name there.
    auto_packs = packs_fp16(LoadOptions(cpu=True), Machine.detect())
    for kind in ("fp32", "auto" if auto_packs else "fp16"):
        manager = ModelManager(folder.parent, default_registry(), LoadOptions(dtype=kind))
        manager.load(folder.name)
        assert (manager.current.dtype == "float16") is (kind != "fp32")
        texts[kind] = GenerationEngine(manager).generate(GenerationRequest(PROMPT, params)).text()
        manager.unload()
    packed = texts["auto" if auto_packs else "fp16"]
    assert packed and packed == texts["fp32"]


def test_a_lora_applies_trains_and_comes_off_a_packed_model(loaded, tmp_path):
    from peft import LoraConfig, get_peft_model

    from webui import loras

    _, fp16 = loaded
    before = greedy(fp16, 6)
    # Train a few steps through the packed layers: the input gradient flows back through them.
    model = get_peft_model(fp16.model, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    ids = fp16.tokenizer(PROMPT, return_tensors="pt").input_ids
    loss = model(ids, labels=ids).loss
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    model.save_pretrained(tmp_path / "adapter")
    fp16.model = model.unload()
    assert greedy(fp16, 6) == before
    loras.apply(fp16, {"adapter": tmp_path / "adapter"})
    assert fp16.loras == ("adapter",) and greedy(fp16, 6) != before
    loras.remove(fp16)
    assert greedy(fp16, 6) == before
