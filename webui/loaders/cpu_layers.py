"""Swapping a CPU model's Linear layers for faster kinds, one layer at a time.

Shared by cpu-int8 (webui/loaders/cpu_int8.py) and the fp16 weights on fbgemm's kernel
(webui/loaders/cpu_fp16.py): each replaces every nn.Linear, the head included, and runs
what stays (embeddings, norms, attention) in the activations' dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def replace_linears(model: nn.Module, make: Callable[[nn.Linear], nn.Module | None]) -> int:
    """Replace each nn.Linear of `model` by `make(linear)` in place (None keeps it), one at
    a time, so a layer's original weights are freed as soon as its replacement exists;
    returns how many were replaced."""
    # Names, not modules: a list of the modules themselves would keep every original
    # layer alive until the end, doubling the peak.
    targets = [name for name, module in model.named_modules() if type(module) is nn.Linear]
    replaced = 0
    for name in targets:
        linear = model.get_submodule(name)
        new = make(linear)
        if new is None:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
        del linear, new
        replaced += 1
    return replaced


def cast_the_rest(model: nn.Module, dtype: torch.dtype, keep: tuple[type, ...]) -> None:
    """Put every floating parameter and buffer outside modules of the `keep` types in `dtype`."""
    for module in model.modules():
        if isinstance(module, keep):
            continue
        for name, param in list(module.named_parameters(recurse=False)):
            if param.is_floating_point() and param.dtype != dtype:
                setattr(module, name, nn.Parameter(param.detach().to(dtype), requires_grad=False))
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf.is_floating_point() and buf.dtype != dtype:
                module.register_buffer(name, buf.to(dtype), persistent=name not in module._non_persistent_buffers_set)
    model.config.dtype = dtype


def weight_bytes(model: nn.Module) -> int:
    """Bytes held by the model's weights (what a load costs in RAM): parameters and
    buffers, plus what packed layers hold outside them (their `packed_bytes`)."""
    tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    packed = sum(getattr(module, "packed_bytes", 0) for module in model.modules())
    return sum(t.numel() * t.element_size() for t in tensors.values()) + packed

