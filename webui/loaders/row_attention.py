"""Batched decode steps compute each row's attention exactly as that row would alone.

Why: the Transformers backend decodes many sequences in one left-padded KV cache
(webui/loaders/hf_backend.py).  Given the padding mask, SDPA runs another kernel with
another reduction order than for the same sequence alone, unpadded.  In fp32 the two
differ in the 7th digit; in bf16 the output is rounded to 8 bits of mantissa, a one-ulp
difference moves the next layer's input, and a greedy reply in a batch of eight parted
from the same request alone (tests/test_determinism.py).  The Linear layers are not the
cause: their rows do not depend on the batch on the CPU kernels measured (oneDNN bf16,
fbgemm fp16).

So for a decode step (one query per row) of a padded batch, attention runs once per row
on that row's own keys and values, padding cut off, through the very function the model
uses alone; so does a right-padded batch of whole prompts (the embeddings' forward,
webui/loaders/hf_backend.py `embed`).  Every other call (a single row, left-padded
prompts) goes straight to it.
The price is one small attention call per row and layer instead of one per layer
(docs/PERFORMANCE.md, "Determinism").

The Linear layers' rows must not depend on the batch either.  That is a property of the
kernel, not of the dtype: oneDNN's bf16 matmul keeps rows independent with AVX512-BF16
and on AVX2, but not on AVX-512 without BF16 (measured with ONEDNN_MAX_CPU_ISA).  So
`linear_rows_invariant` asks the loaded model's own layers, at load, on this machine.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

# The implementation we wrap: the CPU default.  Eager attention is defined per model
# file, and flash attention unpads by itself, so those are left as they are.
WRAPPED = "sdpa"
NAME = "webui_rows_sdpa"


def _attended(mask: torch.Tensor) -> torch.Tensor:
    """[B, L]: the keys each row's last query attends to, from a [B, 1, q, L] mask (bool
    with True = attend, or additive float with 0 = attend)."""
    last = mask[:, 0, -1, :]
    return last if last.dtype == torch.bool else last == 0


def leading_padding(mask: torch.Tensor) -> list[int]:
    """Per row of a left-padded batch, the masked key positions before the first real one."""
    return (~_attended(mask)).long().cumprod(dim=-1).sum(dim=-1).tolist()


def real_lengths(mask: torch.Tensor) -> list[int]:
    """Per row of a right-padded batch, its real tokens: the keys its last query may see."""
    return _attended(mask).long().sum(dim=-1).tolist()


def row_attention(module, query, key, value, attention_mask, **kwargs):
    if attention_mask is None or query.shape[0] == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if query.shape[2] == 1:  # a decode step of a left-padded batch
        outputs = []
        for row, pad in enumerate(leading_padding(attention_mask)):
            out, _ = sdpa_attention_forward(module, query[row : row + 1], key[row : row + 1, :, pad:],
                                            value[row : row + 1, :, pad:], None, **kwargs)
            outputs.append(out)
        return torch.cat(outputs), None
    if any(leading_padding(attention_mask)) or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    # A right-padded batch of whole prompts (embeddings): each row read as it would be
    # alone, causal and unmasked; the padding's outputs are zeros nobody reads.
    out = query.new_zeros(query.shape[0], query.shape[2], query.shape[1], value.shape[-1])
    for row, length in enumerate(real_lengths(attention_mask)):
        if length:
            mine, _ = sdpa_attention_forward(module, query[row : row + 1, :, :length], key[row : row + 1, :, :length],
                                             value[row : row + 1, :, :length], None, **kwargs)
            out[row : row + 1, :length] = mine
    return out, None


AttentionInterface.register(NAME, row_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def linear_rows_invariant(model, rows: int = 8, layers: int = 3) -> bool:
    """Whether the model's Linear layers give each row of a batch exactly what that row
    gives alone: a few of its layers, random rows in its dtype, computed both ways."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if any(type(m) is not torch.nn.Linear for m in linears):
        # Quantized layers (bitsandbytes) run kernels of their own, and their first call
        # changes their state: neither probed nor promised.
        return False
    linears = linears[:layers]
    try:
        return bool(linears) and all(_rows_agree(layer, rows) for layer in linears)
    except Exception:  # an offloaded or quantized layer that cannot be probed: no promise
        return False


def _rows_agree(layer: torch.nn.Linear, rows: int) -> bool:
    weight = layer.weight
    dtype = weight.dtype if weight.is_floating_point() and weight.numel() else torch.float32
    device = weight.device if weight.device.type != "meta" else torch.device("cpu")
    x = torch.randn(rows, 1, layer.in_features, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    with torch.inference_mode():
        together = layer(x)
        return all(torch.equal(layer(x[row : row + 1]), together[row : row + 1]) for row in range(rows))


def use_row_attention(model) -> bool:
    """Switch a model that attends with SDPA to the row-wise decode; False where it
    uses something else (and stays as it was)."""
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    if current == NAME:
        return True
    if current != WRAPPED or not hasattr(model, "set_attn_implementation"):
        return False
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, TypeError, AttributeError):  # a model class that refuses custom attention
        return False
    return True
