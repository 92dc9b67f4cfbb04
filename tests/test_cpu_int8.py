"""cpu-int8: torch's own int8 CPU kernel behind the Transformers loader (webui/loaders/cpu_int8.py)."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_models import build_llama
from webui.loaders.base import LoadError, LoadOptions
from webui.loaders.cpu_int8 import SMALL_ROWS, Int8Linear
from webui.loaders.cpu_layers import weight_bytes
from webui.loaders.hf_kwargs import Machine, from_pretrained_kwargs, load_dtype
from webui.loaders.hf_transformers import TransformersLoader

PROMPT = "The old lighthouse keeper"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_llama(tmp_path_factory.mktemp("cpu-int8") / "tiny-llama")


@pytest.fixture(scope="module")
def loaded(folder):
    loader = TransformersLoader()
    fp32 = loader.load("tiny-llama", folder, LoadOptions(cpu=True, dtype="fp32"))
    int8 = loader.load("tiny-llama", folder, LoadOptions(cpu=True, cpu_int8=True))
    return fp32, int8


def greedy(loaded, tokens: int) -> torch.Tensor:
    ids = loaded.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():
        return loaded.model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                     pad_token_id=loaded.tokenizer.pad_token_id)


def test_every_linear_is_int8_and_the_rest_in_this_cpus_auto_dtype(loaded):
    _, int8 = loaded
    model = int8.model
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    layers = [m for m in model.modules() if isinstance(m, Int8Linear)]
    assert layers and all(m.weight_int8.dtype == torch.int8 for m in layers)
    # What stays unquantized computes in what `--dtype auto` means on this machine:
    # bf16 with bf16 arithmetic (AVX512-BF16, AMX), fp32 elsewhere (fp16 is not packed here).
    rest = load_dtype(LoadOptions(cpu=True, cpu_int8=True), Machine.detect())
    others = [p for m in model.modules() if not isinstance(m, Int8Linear) for p in m.parameters(recurse=False)]
    assert others and all(p.dtype == rest for p in others)
    assert int8.dtype == str(rest).removeprefix("torch.") and int8.options.summary() == "cpu-int8"


def test_generates_the_same_shape_and_mostly_the_same_tokens(loaded):
    fp32, int8 = loaded
    a, b = greedy(fp32, 12), greedy(int8, 12)
    assert a.shape == b.shape
    prompt = len(fp32.tokenizer(PROMPT).input_ids)
    # A random tiny model has near-ties between logits; int8's ~0.4% weight error may
    # flip a late one, not the first tokens.
    assert a[0, prompt:prompt + 4].tolist() == b[0, prompt:prompt + 4].tolist()


@pytest.mark.parametrize("rows", [1, SMALL_ROWS, SMALL_ROWS + 1, 40])
def test_both_paths_are_close_to_the_float_layer(rows):
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96, bias=True)
    x = torch.randn(1, rows, 64)
    want = linear(x)
    got = Int8Linear.from_linear(linear)(x)
    assert got.shape == want.shape and got.dtype == want.dtype
    # bf16 activations on the int8 path: ~1% of the output's scale.
    assert (got - want).abs().max() < 0.03 * want.abs().max()


def test_weights_take_well_under_half_of_fp32(loaded):
    fp32, int8 = loaded
    # The tiny model is embedding-heavy (kept in fp32); on the ~0.5B shape it is ~0.31.
    assert weight_bytes(int8.model) < 0.6 * weight_bytes(fp32.model)


def test_refused_with_bitsandbytes_or_disk_or_a_gpu(tmp_path):
    with pytest.raises(LoadError, match="one quantization"):
        from_pretrained_kwargs(LoadOptions(cpu_int8=True, load_in_4bit=True), Machine(0))
    with pytest.raises(LoadError, match="disk"):
        from_pretrained_kwargs(LoadOptions(cpu_int8=True, disk=True, disk_cache_dir=tmp_path), Machine(0))
    with pytest.raises(LoadError, match="for the CPU"):
        from_pretrained_kwargs(LoadOptions(cpu_int8=True), Machine(1))
    # With --cpu on a GPU machine it loads in bf16 to quantize after.
    assert from_pretrained_kwargs(LoadOptions(cpu_int8=True, cpu=True), Machine(1))["dtype"] == torch.bfloat16


def test_the_engine_streams_from_a_cpu_int8_model(folder):
    from webui.generation.engine import GenerationEngine, GenerationRequest
    from webui.generation.params import make_params
    from webui.loaders.registry import default_registry
    from webui.model_manager import ModelManager

    params = make_params({"temperature": 0.0, "max_new_tokens": 6, "ban_eos_token": True})
    texts = {}
    for kind, options in {"fp32": LoadOptions(dtype="fp32"), "int8": LoadOptions(cpu_int8=True)}.items():
        manager = ModelManager(folder.parent, default_registry(), options)
        manager.load(folder.name)
        assert manager.current.options.cpu_int8 is (kind == "int8")
        texts[kind] = GenerationEngine(manager).generate(GenerationRequest(PROMPT, params)).text()
        manager.unload()
    assert texts["int8"] and texts["int8"][:8] == texts["fp32"][:8]
