"""8-bit weights for CPUs, on torch's own int8 kernel (`torch._weight_int8pack_mm`).

Why not bitsandbytes or torchao here: bitsandbytes 0.50 has a fast CPU int8 path only
with AVX-512 (without it every matmul casts the whole weight to fp32: 0.4x fp32 decode),
and torchao 0.18's `Int8WeightOnlyConfig` decoded at 0.3x fp32 on this AVX2 CPU
(docs/PERFORMANCE.md, "8-bit on a CPU").  torch ships a weight-only int8 matmul for the
CPU that reads 1 byte per weight and runs on AVX2; it wants bf16 activations.

Each Linear becomes an `Int8Linear`: int8 weights with one scale per output row
(symmetric, absmax / 127).  A few rows at a time (decode, small batches) go through the
int8 kernel in bf16 and come back in the model's dtype; a long prompt is cheaper as one
fp32 matmul on the dequantized weight (the int8 kernel is 2x slower than fp32 at 64
rows and more, bench/bench_cpu_dtypes.py), so prefill keeps fp32 speed.
"""

from __future__ import annotations

import torch
from torch import nn

from webui.loaders.cpu_layers import cast_the_rest, replace_linears

# At or below this many rows the int8 kernel wins; above it, dequantize + fp32 matmul.
# Measured with one thread on the ~0.5B shape (1024 -> 4608): int8 1.4-2.8x faster at
# 1-4 rows, 1.7x slower at 64 (docs/PERFORMANCE.md).
SMALL_ROWS = 16


class Int8Linear(nn.Module):
    """A Linear whose weight is int8 with a per-row scale."""

    def __init__(self, weight_int8: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight_int8.shape
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scale", scale.float())  # fp32: the dequantize path's
        self.register_buffer("scale_bf16", scale.to(torch.bfloat16))  # the int8 kernel's
        self.bias = None if bias is None else nn.Parameter(bias.detach().float(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-8) / 127
        weight_int8 = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        return cls(weight_int8, scale, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if rows <= SMALL_ROWS:
            flat = x.reshape(rows, self.in_features).to(torch.bfloat16)
            out = torch._weight_int8pack_mm(flat, self.weight_int8, self.scale_bf16)
            out = out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
            return out if self.bias is None else out + self.bias.to(x.dtype)
        weight = self.weight_int8.to(x.dtype) * self.scale.to(x.dtype)[:, None]
        return nn.functional.linear(x, weight, None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weight-only"


def to_cpu_int8(model: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Quantize a model loaded on the CPU (in bf16, half the fp32 peak) and put what stays
    unquantized (embeddings, norms) in `dtype`, the dtype activations flow in."""
    # A head tied to the embedding gets its own int8 copy; the embedding stays a lookup.
    replace_linears(model, Int8Linear.from_linear)
    cast_the_rest(model, dtype, keep=(Int8Linear,))
    return model
