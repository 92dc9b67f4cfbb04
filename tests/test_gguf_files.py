"""GGUF entries in models/: listing, metadata, file choice, bad files, options, Will it fit."""

from __future__ import annotations

import argparse
import shutil

import pytest

from tests.gguf_fixtures import F32, FOLDER, HF_NAME, Q8
from webui.fit import Memory, gguf_estimate, gguf_report
from webui.loaders.base import LoadError
from webui.loaders.gguf_files import choose_file, gguf_files, is_gguf_entry, parts_of, read_info
from webui.loaders.gguf_options import LlamaCppOptions
from webui.loaders.options import add_flags
from webui.loaders.registry import default_registry
from webui.model_manager import ModelManager
from webui.runtime import load_options
from webui.settings import Settings


def manager(root) -> ModelManager:
    return ModelManager(root, default_registry(), load_options(Settings(model_dir=root)))


def test_files_and_folders_are_listed_by_name_and_routed_to_their_loader(gguf_root, tmp_path):
    models = manager(gguf_root)
    listing = models.available()
    assert {HF_NAME, F32, Q8, FOLDER} <= set(listing)
    registry = models.registry
    assert registry.for_folder(listing[Q8]).name == "llama.cpp"
    assert registry.for_folder(listing[FOLDER]).name == "llama.cpp"
    assert registry.for_folder(listing[HF_NAME]).name == "transformers"
    # A folder with config.json stays a Transformers model even beside a .gguf file.
    shutil.copy(gguf_root / Q8, listing[HF_NAME] / Q8)
    try:
        assert registry.for_folder(listing[HF_NAME]).name == "transformers"
    finally:
        (listing[HF_NAME] / Q8).unlink()
    # Not GGUF-looking, hidden or odd names: never listed.
    (gguf_root / "notes.txt").write_text("x")
    (gguf_root / ".hidden.gguf").write_bytes(b"GGUF")
    assert "notes.txt" not in models.available() and ".hidden.gguf" not in models.available()


def test_split_parts_are_one_entry_named_by_the_first_part(tmp_path):
    folder = tmp_path / "big-GGUF"
    folder.mkdir()
    for i in (1, 2, 3):
        (folder / f"big-q4_k_m-{i:05d}-of-00003.gguf").write_bytes(b"GGUF" + bytes(i))
    (folder / "big-q8_0.gguf").write_bytes(b"GGUF")
    assert list(gguf_files(folder)) == ["big-q4_k_m-00001-of-00003.gguf", "big-q8_0.gguf"]
    first = folder / "big-q4_k_m-00001-of-00003.gguf"
    assert [p.name for p in parts_of(first)] == [f"big-q4_k_m-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    # A part alone at the top of models/ is not an entry; the first part is.
    shutil.copy(folder / "big-q4_k_m-00002-of-00003.gguf", tmp_path / "big-q4_k_m-00002-of-00003.gguf")
    assert not is_gguf_entry(tmp_path / "big-q4_k_m-00002-of-00003.gguf")
    (folder / "big-q4_k_m-00003-of-00003.gguf").unlink()
    with pytest.raises(LoadError, match="part big-q4_k_m-00003-of-00003.gguf is missing"):
        read_info(first)


def test_metadata_is_read_from_the_header(gguf_root):
    from transformers import AutoConfig, AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(gguf_root / HF_NAME))
    f32, q8 = read_info(gguf_root / F32), read_info(gguf_root / Q8)
    for info in (f32, q8):
        assert info.architecture == "llama"
        assert info.parameters == hf.num_parameters()
        assert info.context_length == 512
        assert (info.layers, info.heads, info.kv_heads, info.key_length) == (2, 4, 2, 16)
        assert "<|assistant|>" in info.chat_template
    assert (f32.file_type, q8.file_type) == ("ALL_F32", "Q8_0")
    assert q8.file_bytes == (gguf_root / Q8).stat().st_size < f32.file_bytes
    assert "Q8_0" in q8.describe() and "llama" in q8.describe()


def test_a_folder_loads_the_named_file_or_the_largest_that_fits(gguf_root):
    folder = gguf_root / FOLDER
    f32_size, q8_size = (folder / F32).stat().st_size, (folder / Q8).stat().st_size
    assert choose_file(folder, room=10 * f32_size).name == F32
    assert choose_file(folder, room=(f32_size + q8_size) // 2).name == Q8
    assert choose_file(folder, room=1).name == Q8  # nothing fits: the smallest
    assert choose_file(folder, Q8, room=10 * f32_size).name == Q8
    with pytest.raises(Exception, match="unknown GGUF file"):
        choose_file(folder, "other.gguf")


def test_corrupt_and_truncated_files_are_refused_with_the_reason(gguf_root, tmp_path):
    data = (gguf_root / Q8).read_bytes()
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(LoadError, match="truncated|corrupt"):
        read_info(truncated)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(LoadError, match="not a GGUF file"):
        read_info(garbage)
    scrambled = tmp_path / "scrambled.gguf"
    scrambled.write_bytes(data[:24] + bytes([0xFF]) * 64 + data[88:])
    with pytest.raises(LoadError, match="corrupt|truncated"):
        read_info(scrambled)


def test_options_take_text_generation_webui_flags_and_refuse_bad_values():
    parser = argparse.ArgumentParser()
    add_flags(parser.add_argument_group("model"), [LlamaCppOptions])
    args = parser.parse_args(["--n-ctx", "2048", "--n-gpu-layers", "-1", "--threads", "4", "--threads-batch", "8",
                              "--n_batch", "256", "--tensor-split", "3,1", "--flash-attn", "--cache-type", "q8_0",
                              "--no-mmap", "--mlock", "--rope-freq-base", "10000"])
    options = LlamaCppOptions(**{k: v for k, v in vars(args).items() if v is not None})
    assert (options.n_ctx, options.n_gpu_layers, options.threads, options.threads_batch, options.n_batch) == (
        2048, -1, 4, 8, 256)
    assert options.tensor_split == (3.0, 1.0) and options.cache_type == "q8_0" and options.flash_attn
    assert options.no_mmap and options.mlock and options.rope_freq_base == 10000.0
    for bad in (["--n-ctx", "-5"], ["--cache-type", "q2"], ["--tensor-split", "3,x"], ["--n_batch", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    with pytest.raises(ValueError, match="gguf"):
        LlamaCppOptions(gguf_file="../secret")


def test_options_are_remembered_per_model(gguf_root, tmp_path):
    from webui.model_settings import ModelSettings, ModelSettingsStore

    store = ModelSettingsStore(tmp_path)
    assert store.save(Q8, ModelSettings(n_ctx=256, cache_type="q8_0", flash_attn=True, tensor_split="2,1")) is None
    saved = store.get(Q8)
    assert (saved.n_ctx, saved.cache_type, saved.flash_attn, saved.tensor_split) == (256, "q8_0", True, (2.0, 1.0))
    options = manager(gguf_root).options_for(saved.load_overrides(), default_registry().get("llama.cpp"))
    assert isinstance(options, LlamaCppOptions) and options.n_ctx == 256 and options.cache_type == "q8_0"


def test_will_it_fit_counts_file_bytes_and_kv_cache_split_by_gpu_layers(gguf_root):
    info = read_info(gguf_root / Q8)
    # 2 layers x 2 KV heads x (16 + 16) values per position, 2 bytes each at fp16.
    per_layer = 512 * 2 * (16 + 16) * 2
    cpu = gguf_estimate(info, 512, 0, "fp16")
    assert (cpu.weights_gpu, cpu.kv_gpu) == (0, 0)
    assert cpu.weights_ram == info.file_bytes and cpu.kv_ram == 2 * per_layer
    one = gguf_estimate(info, 512, 1, "fp16")
    assert one.weights_gpu == info.block_bytes[-1] and one.kv_gpu == per_layer == one.kv_ram
    everything = gguf_estimate(info, 512, -1, "q8_0")
    assert everything.weights_gpu == sum(info.block_bytes) + info.output_bytes
    assert everything.kv_gpu == 2 * per_layer * 34 // 64 and everything.kv_ram == 0
    text = gguf_report(info, 512, 0, "fp16", Memory(gpus=(), ram=1 << 34), gpu_build=False)
    assert "Q8_0" in text and "fits in RAM" in text
    tight = gguf_report(info, 512, 0, "fp16", Memory(gpus=(), ram=1000), gpu_build=False)
    assert "does not fit in RAM" in tight


def test_will_it_fit_lists_a_folders_files_and_marks_the_one_it_would_load(gguf_root, tmp_path):
    from webui.model_settings import ModelSettings
    from webui.runtime import build_runtime
    from webui.settings import Settings as AppSettings

    runtime = build_runtime(AppSettings(model=None, model_dir=gguf_root, user_data_dir=tmp_path))
    text = runtime.fit_report(FOLDER, ModelSettings(gguf_file=Q8))
    q8_mib = (gguf_root / FOLDER / Q8).stat().st_size / (1 << 20)
    assert f"| `{Q8}` | {q8_mib:.2f} MiB | ← this one |" in text
    assert f"| `{F32}` |" in text and text.count("← this one") == 1
    assert "files in this folder" not in runtime.fit_report(Q8)  # a single file: no list


def test_the_model_tab_offers_a_folders_files_for_gguf_file(gguf_root, tmp_path):
    from webui.runtime import build_runtime
    from webui.settings import Settings as AppSettings

    runtime = build_runtime(AppSettings(model=None, model_dir=gguf_root, user_data_dir=tmp_path))
    choices = runtime.gguf_file_choices(FOLDER)
    mib = {name: (gguf_root / FOLDER / name).stat().st_size / (1 << 20) for name in (F32, Q8)}
    assert choices == [("the largest that fits", ""), (f"{F32} ({mib[F32]:.2f} MiB)", F32),
                       (f"{Q8} ({mib[Q8]:.2f} MiB)", Q8)]
    # A single file, a Transformers folder, a name not listed: only the default.
    for name in (Q8, HF_NAME, "../etc", "missing"):
        assert runtime.gguf_file_choices(name) == [("the largest that fits", "")]
    # The Model tab's handler for picking a model gives the dropdown those choices.
    from webui.ui.app import build_app

    app = build_app(runtime)
    handler = next(f.fn for f in app.fns.values() if f.api_name == "model_settings")
    dropdowns = [out for out in handler(FOLDER) if any(value == Q8 for _, value in getattr(out, "choices", None) or ())]
    assert len(dropdowns) == 1 and [value for _, value in dropdowns[0].choices] == ["", F32, Q8]
