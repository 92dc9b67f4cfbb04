"""Loader options -> from_pretrained arguments, flags, and the failure messages.

The multi-GPU paths cannot run here (no GPU); the arguments they hand to transformers
and accelerate are checked for machines described by `Machine`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from webui.cli import parse_flags
from webui.loaders.base import LoadError, LoadOptions
from webui.loaders.hf_kwargs import Machine, from_pretrained_kwargs, max_memory
from webui.runtime import load_options
from webui.settings import SettingsError, build_settings

NO_GPU, ONE_GPU, TWO_GPUS = Machine(0), Machine(1), Machine(2)


def test_offload_on_a_cpu_only_machine_really_runs(tmp_path):
    """--cpu-memory and --disk work without a GPU: accelerate spills to disk, and the
    model still streams a reply through the engine."""
    from tests.tiny_models import build_llama
    from webui.generation.engine import GenerationEngine, GenerationRequest
    from webui.loaders.registry import default_registry
    from webui.model_manager import ModelManager
    from webui.generation.params import make_params

    build_llama(tmp_path / "models" / "m")
    options = LoadOptions(cpu=True, cpu_memory=0.0001, disk=True, disk_cache_dir=tmp_path / "offload")
    kwargs = from_pretrained_kwargs(options, NO_GPU)
    assert kwargs["device_map"] == "auto" and kwargs["max_memory"] == {"cpu": "0.0001GiB"}
    assert kwargs["offload_folder"] == str(tmp_path / "offload")
    manager = ModelManager(tmp_path / "models", default_registry(), options)
    loaded = manager.load("m")
    assert "disk" in set(loaded.model.hf_device_map.values()) and loaded.device == "cpu"
    stream = GenerationEngine(manager).generate(
        GenerationRequest("The keeper", make_params({"temperature": 0.0, "max_new_tokens": 8, "ban_eos_token": True})))
    assert stream.text() and stream.stats.new_tokens == 8


def test_cpu_defaults_are_fp32_on_the_cpu_and_safetensors_only():
    kwargs = from_pretrained_kwargs(LoadOptions(), NO_GPU)
    assert kwargs["device_map"] == "cpu" and kwargs["dtype"] is torch.float32
    assert kwargs["use_safetensors"] is True and kwargs["trust_remote_code"] is False
    assert "quantization_config" not in kwargs and "max_memory" not in kwargs
    assert "attn_implementation" not in kwargs  # auto: transformers picks per architecture


def test_single_gpu_loads_whole_on_it_in_the_checkpoint_dtype():
    kwargs = from_pretrained_kwargs(LoadOptions(attn_implementation="sdpa"), ONE_GPU)
    assert kwargs["device_map"] == "cuda" and kwargs["dtype"] == "auto"
    assert kwargs["attn_implementation"] == "sdpa"
    assert from_pretrained_kwargs(LoadOptions(cpu=True), ONE_GPU)["device_map"] == "cpu"


def test_gpu_split_becomes_max_memory_for_accelerate():
    options = LoadOptions(gpu_split=(20.0, 7.5), cpu_memory=64.0)
    kwargs = from_pretrained_kwargs(options, TWO_GPUS)
    assert kwargs["device_map"] == "auto"
    assert kwargs["max_memory"] == {0: "20GiB", 1: "7.5GiB", "cpu": "64GiB"}
    # Two GPUs and no limits: still sharded by accelerate, with its own limits.
    plain = from_pretrained_kwargs(LoadOptions(), TWO_GPUS)
    assert plain["device_map"] == "auto" and "max_memory" not in plain
    with pytest.raises(LoadError, match="names 3 GPUs but only 2"):
        max_memory(LoadOptions(gpu_split=(1.0, 1.0, 1.0)), TWO_GPUS)
    # On the CPU the GPU split is meaningless and dropped; the RAM limit stays.
    assert from_pretrained_kwargs(options, NO_GPU)["max_memory"] == {"cpu": "64GiB"}
    assert "max_memory" not in from_pretrained_kwargs(LoadOptions(gpu_split=(4.0,)), NO_GPU)


def test_disk_offload_needs_and_uses_a_folder(tmp_path):
    kwargs = from_pretrained_kwargs(LoadOptions(disk=True, disk_cache_dir=tmp_path), ONE_GPU)
    assert kwargs["device_map"] == "auto" and kwargs["offload_folder"] == str(tmp_path)
    with pytest.raises(LoadError, match="disk offload needs a folder"):
        from_pretrained_kwargs(LoadOptions(disk=True), ONE_GPU)


def test_quantization_configs():
    pytest.importorskip("bitsandbytes")
    q8 = from_pretrained_kwargs(LoadOptions(load_in_8bit=True, cpu_memory=8.0), ONE_GPU)["quantization_config"]
    assert q8.load_in_8bit and q8.llm_int8_enable_fp32_cpu_offload
    q4 = from_pretrained_kwargs(
        LoadOptions(load_in_4bit=True, quant_type="fp4", use_double_quant=True, compute_dtype="float16"), NO_GPU
    )["quantization_config"]
    assert q4.load_in_4bit and q4.bnb_4bit_quant_type == "fp4" and q4.bnb_4bit_use_double_quant
    assert q4.bnb_4bit_compute_dtype == torch.float16
    # Default compute dtype: the model's (fp32 on the CPU).
    assert from_pretrained_kwargs(LoadOptions(load_in_4bit=True), NO_GPU)[
        "quantization_config"].bnb_4bit_compute_dtype == torch.float32
    with pytest.raises(LoadError, match="8-bit or 4-bit"):
        from_pretrained_kwargs(LoadOptions(load_in_8bit=True, load_in_4bit=True), NO_GPU)


def test_unavailable_choices_are_refused_with_a_reason():
    if "flash_attn" not in sys.modules:
        with pytest.raises(LoadError, match="flash-attn is not installed"):
            from_pretrained_kwargs(LoadOptions(attn_implementation="flash_attention_2"), ONE_GPU)


def test_code_execution_switches_are_not_user_options():
    settable = LoadOptions.settable()
    assert {"allow_pickle", "trust_remote_code", "disk_cache_dir"}.isdisjoint(settable)
    assert {"load_in_4bit", "gpu_split", "dtype", "quant_type"} <= settable


def test_flags_use_text_generation_webui_names(tmp_path):
    flags, _ = parse_flags([
        "--load-in-4bit", "--quant_type", "fp4", "--use_double_quant", "--compute_dtype", "bfloat16",
        "--gpu-split", "20,7", "--cpu-memory", "32", "--disk", "--attn-implementation", "eager",
        "--user-data-dir", str(tmp_path), "--trust-remote-code",
    ])
    settings, _ = build_settings(flags)
    options = load_options(settings)
    assert options.load_in_4bit and options.quant_type == "fp4" and options.use_double_quant
    assert options.compute_dtype == "bfloat16" and options.attn_implementation == "eager"
    assert options.gpu_split == (20.0, 7.0) and options.cpu_memory == 32.0 and options.disk
    assert options.disk_cache_dir == Path(tmp_path) / "cache"
    assert options.trust_remote_code
    for bad in (["--gpu-split", "20,x"], ["--gpu-split", "-1"], ["--quant_type", "int3"]):
        with pytest.raises(SystemExit):
            parse_flags(bad)


def test_settings_file_gives_loader_options_but_not_code_execution(tmp_path):
    (tmp_path / "settings.yaml").write_text("load_in_8bit: true\ngpu_split: [10, 6.5]\ncpu_memory: 16\n"
                                            "trust_remote_code: true\n")
    settings, warnings = build_settings({"user_data_dir": tmp_path})
    assert settings.load_in_8bit and settings.gpu_split == (10.0, 6.5) and settings.cpu_memory == 16.0
    assert not settings.trust_remote_code and any("trust_remote_code" in w for w in warnings)
    with pytest.raises(SettingsError, match="cpu_memory"):
        build_settings({"user_data_dir": tmp_path, "cpu_memory": -1.0})


def test_missing_bitsandbytes_is_a_clear_message_and_the_model_keeps_serving(runtime, monkeypatch):
    before = runtime.models.current
    # What an install without the [quant] extra looks like to `import bitsandbytes`.
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(LoadError, match="pip install bitsandbytes"):
        runtime.models.load(before.name, overrides={"load_in_4bit": True})
    assert runtime.models.current is before
    with runtime.models.use() as loaded:
        assert loaded.model is not None


def test_requests_cannot_set_code_execution_options(runtime):
    with pytest.raises(LoadError, match="trust_remote_code"):
        runtime.models.load(runtime.models.current.name, overrides={"trust_remote_code": True})
    with pytest.raises(LoadError, match="allow_pickle"):
        runtime.models.options_for({"allow_pickle": True})


def test_unload_releases_the_model(tmp_path):
    import gc
    import weakref

    from tests.tiny_models import build_llama
    from webui.loaders.registry import default_registry
    from webui.model_manager import ModelManager

    build_llama(tmp_path / "m")
    manager = ModelManager(tmp_path, default_registry(), LoadOptions(cpu=True))
    first = weakref.ref(manager.load("m").model)
    second = weakref.ref(manager.load("m").model)  # a swap drops the first model
    gc.collect()
    assert first() is None and second() is not None
    manager.unload()
    gc.collect()
    assert second() is None and manager.current is None
