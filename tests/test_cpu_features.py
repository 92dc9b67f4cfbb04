"""CPU-feature decisions: the bitsandbytes warning and what --dtype auto loads (webui/loaders/cpu_features.py)."""

from __future__ import annotations

import pytest
import torch

from webui.loaders.base import LoadOptions
from webui.loaders.cpu_features import auto_cpu_dtype, bitsandbytes_cpu_warning, cpu_flags, feature_set
from webui.loaders.hf_kwargs import Machine, from_pretrained_kwargs, load_dtype, load_warnings, packs_fp16

AVX2 = frozenset("fpu sse sse2 avx fma avx2 f16c".split())  # this EPYC
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512dq"}  # Skylake-SP
AVX512_BF16 = AVX512 | {"avx512_bf16"}  # Cooper Lake, Zen 4
AMX = AVX512 | {"amx_bf16", "amx_tile", "amx_int8"}  # Sapphire Rapids without avx512_bf16 listed


@pytest.mark.parametrize(("flags", "eight", "four"), [
    (frozenset(), True, True),
    (AVX2, True, True),
    (AVX2 | {"avx512f"}, True, True),  # AVX-512 without BW: no int8 path
    (AVX512, False, True),
    (AVX512_BF16, False, False),
])
def test_bitsandbytes_warning_exactly_when_the_flags_are_missing(flags, eight, four):
    assert (bitsandbytes_cpu_warning(flags, 8) is not None) is eight
    assert (bitsandbytes_cpu_warning(flags, 4) is not None) is four


def test_the_warning_names_what_is_missing_and_the_fast_option():
    text = bitsandbytes_cpu_warning(AVX2, 4)
    assert "avx512_bf16" in text and "--cpu-int8" in text


@pytest.mark.parametrize(("flags", "dtype", "kind"), [
    (frozenset(), "fp32", "other"),
    (AVX2 - {"f16c"}, "fp32", "avx2"),  # no fp16 <-> fp32 conversion: no fbgemm fp16 kernel
    (AVX2, "fp16", "avx2"),
    (AVX512, "fp16", "avx512"),
    (AVX512_BF16, "bf16", "avx512-bf16"),
    (AMX, "bf16", "avx512-bf16"),
])
def test_dtype_auto_decision_table(flags, dtype, kind):
    assert auto_cpu_dtype(flags) == dtype
    assert feature_set(flags) == kind
    want = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    assert from_pretrained_kwargs(LoadOptions(), Machine(0, flags))["dtype"] == want
    assert packs_fp16(LoadOptions(), Machine(0, flags)) is (dtype == "fp16")
    # An explicit dtype is never second-guessed; a GPU keeps the checkpoint's.
    assert from_pretrained_kwargs(LoadOptions(dtype="fp32"), Machine(0, AMX))["dtype"] == torch.float32
    assert from_pretrained_kwargs(LoadOptions(), Machine(1, flags))["dtype"] == "auto"


def test_auto_is_fp32_where_fp16_cannot_be_packed():
    """fp16 without fbgemm's kernel is torch's emulated fp16 matmul (prefill 5x slower than
    fp32): `auto` never lands there."""
    assert from_pretrained_kwargs(LoadOptions(), Machine(0, AVX2, fbgemm_fp16=False))["dtype"] == torch.float32
    for offloads in (LoadOptions(disk=True, disk_cache_dir="/tmp/x"), LoadOptions(cpu_memory=4)):
        assert not packs_fp16(offloads, Machine(0, AVX2))
        assert from_pretrained_kwargs(offloads, Machine(0, AVX2))["dtype"] == torch.float32
    # cpu-int8's unquantized rest computes in fp32 here; bf16 is how it loads.
    assert not packs_fp16(LoadOptions(cpu_int8=True), Machine(0, AVX2))
    assert load_dtype(LoadOptions(cpu_int8=True), Machine(0, AVX2)) == torch.float32
    # Asked for by name, fp16 is packed where it can be and plain fp16 elsewhere.
    assert packs_fp16(LoadOptions(dtype="fp16"), Machine(0, AVX2))
    assert load_dtype(LoadOptions(dtype="fp16"), Machine(0, AVX2, fbgemm_fp16=False)) == torch.float16


def test_load_warnings_only_for_bitsandbytes_on_the_cpu():
    assert load_warnings(LoadOptions(load_in_8bit=True), Machine(0, AVX2))
    assert not load_warnings(LoadOptions(load_in_8bit=True), Machine(0, AVX512))
    assert not load_warnings(LoadOptions(load_in_8bit=True), Machine(1, AVX2))  # on the GPU
    assert not load_warnings(LoadOptions(cpu_int8=True), Machine(0, AVX2))
    assert not load_warnings(LoadOptions(), Machine(0, AVX2))


def test_cpu_flags_reads_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512f"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_the_model_tab_notes_follow_this_machine():
    from webui.loaders.hf_options import TransformersOptions
    from webui.ui.loader_controls import OptionControls

    machine = Machine.detect()
    want = {bits: bitsandbytes_cpu_warning(machine.flags, bits) if machine.cuda_devices == 0 else None
            for bits in (8, 4)}
    shown = TransformersOptions.availability()
    assert shown["load_in_8bit"].note == want[8] and shown["load_in_4bit"].note == want[4]
    # A note informs, it does not disable: the control stays usable when bitsandbytes imports.
    notes = OptionControls([TransformersOptions], LoadOptions()).problems("quantization")
    assert all(text in notes for text in want.values() if text)


def test_auto_follows_the_measured_row_of_this_cpu_kind(monkeypatch):
    from webui.loaders import cpu_features

    def row(fp32, fp16, bf16):
        return {"fp32": {"decode": 1.0, "prefill": 1.0}, "fp16 on fbgemm": {"decode": fp16[0], "prefill": fp16[1]},
                "bf16": {"decode": bf16[0], "prefill": bf16[1]}, "cpu-int8": {"decode": 9.0, "prefill": 9.0}}

    monkeypatch.setattr(cpu_features, "MEASURED", {
        # bf16 decodes fastest, but its emulated prefill is 5x slower: fbgemm's fp16 instead.
        "avx512": row(1.0, (1.6, 1.0), (2.0, 0.2)),
        # bf16 hardware measured slower than fbgemm's fp16 at decode: fp16, against the flags' rule.
        "avx512-bf16": row(1.0, (2.1, 1.1), (1.8, 1.4)),
        # Nothing beats fp32 here.
        "avx2": row(1.0, (0.9, 1.0), (0.8, 0.3)),
    })
    assert auto_cpu_dtype(AVX512) == "fp16"
    assert auto_cpu_dtype(AVX512_BF16) == "fp16" and auto_cpu_dtype(AMX) == "fp16"
    assert auto_cpu_dtype(AVX512_BF16, fbgemm=False) == "bf16"  # the fp16 row needs fbgemm's kernel
    assert auto_cpu_dtype(AVX512, fbgemm=False) == "fp32"
    assert auto_cpu_dtype(AVX2) == "fp32"  # cpu-int8 is never what `auto` means
    assert auto_cpu_dtype(frozenset()) == "fp32"  # not measured: the flags decide


def test_the_measured_table_has_this_kind_of_row_for_every_cpu_kind_measured():
    from webui.loaders.cpu_features import AUTO_CHOICES, MEASURED

    assert {"avx2", "avx512"} <= set(MEASURED)
    for kind, table in MEASURED.items():
        assert "fp32" in table and table["fp32"] == {"decode": 1.0, "prefill": 1.0}, kind
        assert set(AUTO_CHOICES) <= set(table), kind
