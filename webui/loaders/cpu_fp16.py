"""fp16 weights with fp32 arithmetic on the CPU, on fbgemm's fp16 matmul.

Why: torch's fp32 matmul goes to MKL, which on this AMD CPU runs a generic
matrix-vector routine (54% of a decode step in a native profile), and decode reads 4
bytes per weight.  torch also ships fbgemm, whose fp16 kernel (AVX2 + F16C, or AVX-512)
keeps the weights packed in fp16 and widens them to fp32 inside the kernel: half the
bytes, fp32 accumulation, no extra quantization step.  On the ~0.47B Llama it decoded
2.3-2.7x faster than fp32 with two threads and prefilled 1.1-1.3x faster
(docs/PERFORMANCE.md, "Current figures"), so `--dtype auto` loads this on CPUs that
have the kernel (webui/loaders/cpu_features.py).

Each Linear becomes a `PackedFp16Linear`.  It is an nn.Linear to the code around it
(peft puts LoRA layers on it, training sends gradients through it), but its weight lives
only in fbgemm's packed buffer: `weight` is an empty stand-in, so nothing reads a float
copy that is not there.  Gradients with respect to the input (LoRA training) unpack the layer for the
backward matmul; the weight itself never trains.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from webui.loaders.cpu_layers import cast_the_rest, replace_linears
from webui.openmp import pool_released_after

FP16_MAX = 65504.0  # the largest finite fp16: a weight beyond it keeps its fp32 layer


@functools.cache
def fbgemm_fp16_ready() -> bool:
    """Whether this torch build runs fbgemm's fp16 matmul here (x86 builds with fbgemm)."""
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        return False
    # fbgemm's matmul is parallel at any size: a UI thread asking must not keep a pool.
    with pool_released_after():
        try:
            packed = torch.ops.quantized.linear_prepack_fp16(torch.ones(2, 2), None)
            return bool(torch.ops.quantized.linear_dynamic_fp16(torch.ones(1, 2), packed).sum() == 4)
        except (RuntimeError, AttributeError):
            return False


class _PackedMatmul(torch.autograd.Function):
    """y = x W^T + b on the packed weight; the backward gives the input's gradient only."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: PackedFp16Linear) -> torch.Tensor:
        ctx.layer = layer
        return torch.ops.quantized.linear_dynamic_fp16(x, layer.packed)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, _ = torch.ops.quantized.linear_unpack_fp16(ctx.layer.packed)
        return grad @ weight, None


class PackedFp16Linear(nn.Linear):
    """A Linear whose weight (and bias) are fbgemm-packed fp16; inputs and outputs are fp32."""

    def __init__(self, linear: nn.Linear):
        nn.Module.__init__(self)  # not nn.Linear's: it would allocate a float weight
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.packed = torch.ops.quantized.linear_prepack_fp16(weight, bias)
        # A stand-in that says where and in what dtype this layer computes (peft asks);
        # empty, so any code that would multiply by a float weight fails loudly.
        self.weight = torch.empty(0)
        self.bias = None  # inside the packed buffer
        self.has_bias = bias is not None
        # fbgemm keeps the bias in fp32 beside the packed fp16 weight.
        self.packed_bytes = 2 * weight.numel() + (0 if bias is None else 4 * bias.numel())

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> PackedFp16Linear | None:
        """The packed layer, or None where a weight is beyond fp16's range (or not finite)."""
        weight = linear.weight.detach()
        if not torch.isfinite(weight).all() or weight.abs().max().item() > FP16_MAX:
            return None
        return cls(linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            return self.forward(x.float()).to(x.dtype)
        if x.requires_grad and torch.is_grad_enabled():
            return _PackedMatmul.apply(x, self)
        return torch.ops.quantized.linear_dynamic_fp16(x, self.packed)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.has_bias}, "
                "fp16 weights (fbgemm), fp32 math")


def to_cpu_fp16(model: nn.Module) -> int:
    """Pack every Linear of a CPU model (the head too) and put the rest in fp32, the dtype
    activations flow in; returns how many layers stayed fp32 (weights beyond fp16)."""
    linears = sum(1 for module in model.modules() if type(module) is nn.Linear)
    packed = replace_linears(model, PackedFp16Linear.from_linear)
    cast_the_rest(model, torch.float32, keep=(PackedFp16Linear,))
    return linears - packed
