"""LoRA adapters made with peft on the tiny model: list, apply one or two, remove."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_models import build_llama
from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.loaders.base import LoadError, LoadOptions
from webui.loaders.registry import default_registry
from webui.model_manager import ModelManager, NoModelLoaded
from webui.paths import NameRefused
from webui.generation.params import make_params

PROMPT = "The keeper climbed the stairs"


def make_adapter(base_folder, out, targets, seed):
    """A LoRA with random (non-zero) B matrices, so it visibly changes the output."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_folder)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=32, target_modules=targets,
                                                  init_lora_weights=False))
    peft_model.save_pretrained(out)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    models, loras = root / "models", root / "loras"
    build_llama(models / "tiny")
    make_adapter(models / "tiny", loras / "style-a", ["q_proj", "v_proj"], seed=1)
    make_adapter(models / "tiny", loras / "style-b", ["up_proj", "down_proj"], seed=2)
    (loras / "not-an-adapter").mkdir()
    (loras / ".hidden").mkdir()
    manager = ModelManager(models, default_registry(), LoadOptions(cpu=True), lora_dir=loras)
    return manager, GenerationEngine(manager), root


def greedy(engine) -> str:
    return engine.generate(GenerationRequest(PROMPT, make_params({"temperature": 0.0, "max_new_tokens": 24,
                                                                  "ban_eos_token": True}))).text()


def test_list_apply_combine_and_remove(setup):
    manager, engine, _ = setup
    assert manager.loras() == ["style-a", "style-b"]
    with pytest.raises(NoModelLoaded):
        manager.set_loras(["style-a"])
    manager.load("tiny")
    base = greedy(engine)
    loaded = manager.set_loras(["style-a"])
    assert loaded.loras == ("style-a",) and "LoRA style-a" in loaded.describe()
    with_a = greedy(engine)
    manager.set_loras(["style-a", "style-b"])
    both = greedy(engine)
    assert manager.current.model.base_model.active_adapters == ["style-a", "style-b"]
    manager.set_loras(["style-b"])
    with_b = greedy(engine)
    assert len({base, with_a, both, with_b}) == 4
    manager.set_loras([])
    assert manager.current.loras == () and greedy(engine) == base
    assert not any(hasattr(m, "lora_A") for m in manager.current.model.modules())


def test_names_are_checked_against_the_listing(setup):
    manager, _, _ = setup
    manager.load("tiny")
    for bad in ["../models/tiny", "/etc", "not-an-adapter", ".hidden", "missing", "", "a/../../b"]:
        with pytest.raises(NameRefused):
            manager.set_loras([bad])
    assert manager.current.loras == ()


def test_an_adapter_for_another_model_is_refused_and_the_base_keeps_serving(setup, tmp_path):
    manager, engine, root = setup
    manager.load("tiny")
    base = greedy(engine)
    # An adapter whose shapes do not match: made on a model with another hidden size.
    from transformers import LlamaConfig, LlamaForCausalLM

    other = LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2))
    other_dir = tmp_path / "wide"
    other.save_pretrained(other_dir)
    make_adapter(other_dir, root / "loras" / "mismatched", ["q_proj", "v_proj"], seed=3)
    with pytest.raises(LoadError, match="LoRA mismatched"):
        manager.set_loras(["mismatched"])
    assert manager.current.loras == ()
    assert not any(hasattr(m, "lora_A") for m in manager.current.model.modules())
    assert greedy(engine) == base


def test_a_truncated_adapter_is_refused_before_loading(setup):
    manager, _, root = setup
    manager.load("tiny")
    folder = root / "loras" / "truncated"
    make_adapter(root / "models" / "tiny", folder, ["q_proj"], seed=4)
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(LoadError, match="truncated"):
        manager.set_loras(["truncated"])


def test_loading_another_model_drops_the_adapters(setup):
    manager, _, _ = setup
    manager.load("tiny")
    manager.set_loras(["style-a"])
    assert manager.load("tiny").loras == ()
