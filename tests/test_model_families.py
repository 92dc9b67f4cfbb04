"""Five model families (Llama, Mistral, Qwen2, Gemma2, Phi3) as tiny random-weight models.

For each: load, render a multi-turn prompt with a system message through its own chat
template, stream a reply through the engine, and load again in 8-bit and 4-bit
(bitsandbytes runs on the CPU here).
"""

from __future__ import annotations

import pytest

from tests.tiny_models import FAMILIES, build_family
from webui.chat.prompt import render_chat_prompt
from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.loaders.base import LoadOptions
from webui.loaders.cpu_fp16 import fbgemm_fp16_ready
from webui.loaders.registry import default_registry
from webui.model_manager import ModelManager
from webui.generation.params import make_params

HISTORY = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Who are you?"},
]
SYSTEM = "Be brief."

# What each family's template makes of HISTORY + SYSTEM (Gemma refuses a system role,
# so render_chat_prompt folds it into the first user turn).
EXPECTED = {
    "llama": "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWho are you?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "mistral": "<s>[INST] Be brief.\n\nHi [/INST] Hello. </s>[INST] Who are you? [/INST]",
    "qwen2": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n"
    "<|im_start|>assistant\n",
    "gemma2": "<s><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
    "<start_of_turn>user\nWho are you?<end_of_turn>\n<start_of_turn>model\n",
    "phi3": "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello.<|end|>\n"
    "<|user|>\nWho are you?<|end|>\n<|assistant|>\n",
}

PRECISIONS = {
    "full": {"dtype": "fp32"},
    "fp16-packed": {"dtype": "fp16"},  # fbgemm's kernel on x86 CPUs (webui/loaders/cpu_fp16.py)
    "8bit": {"load_in_8bit": True},
    "4bit-nf4": {"load_in_4bit": True, "quant_type": "nf4"},
    "4bit-fp4-double": {"load_in_4bit": True, "quant_type": "fp4", "use_double_quant": True},
}


@pytest.fixture(scope="module")
def families_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    for family in FAMILIES:
        build_family(root / family, family, seed=len(family))
    return root


@pytest.fixture(scope="module")
def manager(families_root):
    return ModelManager(families_root, default_registry(), LoadOptions(cpu=True))


@pytest.fixture(scope="module")
def engine(manager):
    return GenerationEngine(manager)


def quantized_layers(model) -> set[str]:
    return {type(m).__name__ for m in model.modules()
            if type(m).__name__ in {"Linear8bitLt", "Linear4bit", "PackedFp16Linear"}}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_family_loads_renders_and_streams(family, precision, manager, engine):
    pytest.importorskip("bitsandbytes") if "bit" in precision else None
    loaded = manager.load(family, overrides=PRECISIONS[precision])
    expected_layers = {"full": set(), "8bit": {"Linear8bitLt"}, "fp16-packed": {"PackedFp16Linear"}}.get(
        precision, {"Linear4bit"})
    if precision == "fp16-packed" and not fbgemm_fp16_ready():
        expected_layers = set()  # plain fp16 where this torch has no fbgemm
    assert quantized_layers(loaded.model) == expected_layers
    assert loaded.model.config.model_type == family
    assert loaded.parameters > 100_000
    if not expected_layers & {"PackedFp16Linear"}:  # packed weights are counted before packing
        assert loaded.parameters == loaded.model.num_parameters()  # 4-bit counted unpacked

    prompt = render_chat_prompt(loaded.tokenizer, HISTORY, SYSTEM)
    assert prompt == EXPECTED[family]

    stream = engine.generate(GenerationRequest(prompt, make_params({"temperature": 0.0, "max_new_tokens": 12,
                                                                      "ban_eos_token": True})))
    pieces = list(stream)
    assert stream.stats.new_tokens == 12 and stream.stats.finish_reason == "length"
    assert "".join(pieces).strip()
