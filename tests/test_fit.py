""""Will it fit?": the estimate against the bytes a really loaded tiny model holds."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_models import FAMILIES, build_family
from webui.fit import GIB, Memory, ModelShape, estimate, read_shape, report, verdict
from webui.loaders.base import LoadOptions
from webui.loaders.hf_transformers import TransformersLoader

PRECISIONS = {
    "fp32": {"dtype": "fp32"},
    "fp16-packed": {"dtype": "fp16"},  # on fbgemm's kernel where this torch has it (cpu_fp16.py)
    "bf16": {"dtype": "bf16"},
    "8bit": {"load_in_8bit": True},
    "4bit": {"load_in_4bit": True},
    "4bit-double": {"load_in_4bit": True, "use_double_quant": True},
}
CONTEXT = 120  # within every family's sliding window, so all layers cache every position


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    for family in FAMILIES:
        build_family(root / family, family)
    return root


def measured_bytes(model, context: int) -> int:
    """Parameters, buffers and quantization scales, plus the KV cache after a real
    forward pass over `context` tokens."""
    total = model.get_memory_footprint()
    for module in model.modules():
        total += getattr(module, "packed_bytes", 0)  # fbgemm-packed fp16 weights
        weight = getattr(module, "weight", None)
        scb = getattr(weight, "SCB", None)  # 8-bit row scales
        state = getattr(weight, "quant_state", None)  # 4-bit block scales
        tensors = [scb] if scb is not None else []
        if state is not None:
            tensors += [state.absmax, state.code, state.offset]
            if getattr(state, "state2", None) is not None:
                tensors += [state.state2.absmax, state.state2.code]
        total += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    with torch.no_grad():
        out = model(torch.ones(1, context, dtype=torch.long), use_cache=True)
    cache = out.past_key_values
    total += sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    return total


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_estimate_within_half_a_permille_of_measured(root, family, precision):
    """README: "on tiny models within 0.05% of the bytes really held"."""
    if precision not in ("fp32", "bf16"):
        pytest.importorskip("bitsandbytes")
    options = LoadOptions(cpu=True, **PRECISIONS[precision])
    shape = read_shape(root / family)
    loaded = TransformersLoader().load(family, root / family, options)
    assert shape.parameters == loaded.parameters
    assert shape.context_length == loaded.context_length == 512
    guess = estimate(shape, CONTEXT, cpu=True, **PRECISIONS[precision]).total
    real = measured_bytes(loaded.model, CONTEXT)
    assert abs(guess - real) / real <= 0.0005, (guess, real, abs(guess - real) / real)


def test_quantized_estimates_shrink_in_order(root):
    shape = read_shape(root / "llama")
    sizes = [shape.weight_bytes(b, 2) for b in (32, 16, 8, 4)]
    assert sizes == sorted(sizes, reverse=True)
    # Double quantization saves ~0.37 bits per weight, once a layer's tables are paid for.
    big = ModelShape(parameters=10**9, quantizable=9 * 10**8, quantizable_rows=10**6, quantizable_layers=200,
                     layers=16, kv_heads=8, head_dim=64, context_length=4096)
    saved = big.weight_bytes(4, 2) - big.weight_bytes(4, 2, double_quant=True)
    assert 0.3 < saved * 8 / big.quantizable < 0.4
    # 10% kept at 16 bits + 90% at 4.5 bits: about 0.35 of the 16-bit size.
    assert 0.34 < big.weight_bytes(4, 2) / big.weight_bytes(16) < 0.36
    assert shape.kv_cache_bytes(1024) == 2 * shape.kv_cache_bytes(512)


def test_verdicts_and_report(root):
    shape = read_shape(root / "llama")
    chosen = estimate(shape, 512, load_in_4bit=True)
    text = report(shape, chosen, Memory((("GPU A", 8 * GIB),), 16 * GIB), cpu=False)
    assert "parameters" in text and "4-bit" in text and "KV cache" in text and "fits on the GPU" in text
    two = Memory((("A", GIB), ("B", GIB)), 4 * GIB)
    assert "2 GPUs" in verdict(GIB + 1, two, cpu=False)
    assert "RAM" in verdict(3 * GIB, two, cpu=False)
    assert "does not fit" in verdict(7 * GIB, two, cpu=False)
    assert "fits in RAM" in verdict(GIB, Memory((), 2 * GIB), cpu=True)
    assert "does not fit" in verdict(3 * GIB, Memory((), 2 * GIB), cpu=True)
    assert Memory.detect().ram > 0


def test_a_table_keeps_one_unit(root):
    """The tiny model's weights and cache are MiB-sized beside GiB-sized totals on a real
    model; each table, and the line of the choice, keeps one unit throughout."""
    import re

    import dataclasses

    # 50M parameters (GiB-sized weights) with the tiny model's small cache (MiB).
    shape = dataclasses.replace(read_shape(root / "llama"), parameters=50_000_000, quantizable=48_000_000)
    text = report(shape, estimate(shape, 64), Memory((), 16 * GIB), cpu=True)
    table = [line for line in text.splitlines() if line.startswith("| ") and "weights in" not in line]
    units = {unit for line in table for unit in re.findall(r"\d (GiB|MiB)", line)}
    assert len(units) == 1, table
    choice = next(line for line in text.splitlines() if line.startswith("Your choice"))
    assert len(set(re.findall(r"\d (GiB|MiB)", choice))) == 1, choice
