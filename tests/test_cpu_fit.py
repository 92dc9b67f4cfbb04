""""Will it fit?" for CPU loads: cpu-int8's bytes and the loading peaks (webui/fit.py)."""

from __future__ import annotations

import pytest

from tests.tiny_models import build_llama
from webui.fit import Memory, estimate, read_shape, report
from webui.loaders.base import LoadOptions
from webui.loaders.cpu_layers import weight_bytes
from webui.loaders.hf_transformers import TransformersLoader

AVX2 = frozenset({"avx2"})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_llama(tmp_path_factory.mktemp("cpu-fit") / "tiny-llama")


def test_cpu_int8_estimate_matches_the_loaded_model(folder):
    shape = read_shape(folder)
    loaded = TransformersLoader().load("tiny-llama", folder, LoadOptions(cpu=True, cpu_int8=True))
    guess = estimate(shape, 64, cpu=True, cpu_int8=True).weights  # decided as on this machine
    assert abs(guess - weight_bytes(loaded.model)) < 0.02 * weight_bytes(loaded.model)


def test_the_loading_peak_is_counted(folder):
    shape = read_shape(folder)
    int8 = estimate(shape, 64, cpu=True, cpu_int8=True, flags=AVX2)
    assert int8.peak == shape.weight_bytes(16) > int8.weights  # loaded in bf16, then quantized
    bnb = estimate(shape, 64, cpu=True, load_in_8bit=True, flags=AVX2)
    assert bnb.peak == shape.weight_bytes(32) + shape.weight_bytes(8, 4)
    fp32 = estimate(shape, 64, cpu=True, flags=AVX2, fbgemm=False)
    assert fp32.peak == fp32.weights == shape.weight_bytes(32) + shape.buffer_bytes  # fp32: no extra peak
    # RAM enough for the settled model but not for the peak: refused.
    between = (int8.total + int8.peak) // 2 if int8.peak > int8.total else int8.peak - 1
    text = report(shape, int8, Memory((), between), cpu=True, flags=AVX2)
    assert "Loading peaks at" in text and "does not fit" in text
    assert "fits in RAM" in report(shape, int8, Memory((), 10 * int8.need), cpu=True, flags=AVX2)


def test_report_shows_this_cpus_measured_speed_table(folder):
    shape = read_shape(folder)
    chosen = estimate(shape, 64, cpu=True, flags=AVX2)
    text = report(shape, chosen, Memory((), 1 << 40), cpu=True, flags=AVX2)
    assert "| cpu-int8 |" in text and "Speed on this CPU kind (avx2)" in text
    other = report(shape, chosen, Memory((), 1 << 40), cpu=True, flags=frozenset())
    assert "not measured here" in other


def test_dtype_auto_on_a_bf16_cpu_is_counted_in_bf16(folder):
    shape = read_shape(folder)
    buffers = shape.buffer_bytes
    assert estimate(shape, 64, cpu=True, flags=frozenset({"amx_bf16"})).weights == shape.weight_bytes(16) + buffers
    assert estimate(shape, 64, cpu=True, flags=AVX2, fbgemm=False).weights == shape.weight_bytes(32) + buffers
