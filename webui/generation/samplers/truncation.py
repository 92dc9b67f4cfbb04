"""Truncation steps that transformers does not ship or ships with loose ties: top-k,
top-a and tail-free sampling.

Each only ever sets logits to -inf, always keeps each row's most likely token, and works
on all rows of a batch at once.
"""

from __future__ import annotations


import torch
from transformers import LogitsProcessor

from webui.generation.samplers.checks import unit_interval

# Below this total curvature a row's sorted probabilities are flat or a straight line: there
# is no "tail" to find, and dividing by the (rounding-noise) total would cut at random.  The
# same threshold as llama.cpp's tail-free sampler.
FLAT_CURVATURE = 1e-6


class TopKLogitsProcessor(LogitsProcessor):
    """Top-k sampling that keeps exactly k tokens; among equal logits the lowest ids,
    the one `argmax` (greedy) picks first.

    Why not transformers' TopKLogitsWarper: it keeps every token equal to the k-th
    logit.  bf16 logits have 8 bits of mantissa, so equal top logits are common; with
    `top_k=1` two tied tokens survived, the draw chose between them, and the reply
    changed with the temperature (the draw's input) and parted from greedy.  Here
    `top_k=1` is greedy, at any temperature (tests/test_determinism.py).

    Neutral value: ``top_k == 0`` (off; the step is left out of the chain).
    """

    def __init__(self, top_k: int):
        if top_k < 1:
            raise ValueError("top_k must be at least 1 when the step runs")
        self.top_k = int(top_k)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        k = min(self.top_k, scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[..., -1:]
        above = scores > kth
        ties = scores == kth
        # Of the tokens equal to the k-th value, as many as are still needed, lowest ids first.
        needed = k - above.sum(dim=-1, keepdim=True)
        keep = above | (ties & (ties.long().cumsum(dim=-1) <= needed))
        return scores.masked_fill(~keep, float("-inf"))


class TopALogitsProcessor(LogitsProcessor):
    """Top-a sampling: drop tokens with ``p < top_a * max(p) ** 2``.

    Reference: BlinkDL's top-a (RWKV), as in KoboldAI / Text Generation WebUI (`top_a`).
    Squaring the top probability makes the cutoff adaptive: a confident model (max p near 1)
    cuts hard, an unsure one (small max p) barely cuts at all.

    The top token always survives (``p_max >= top_a * p_max**2`` for ``top_a <= 1``; we also
    keep it explicitly so rounding can never empty a row).

    Neutral value: ``top_a == 0`` (nothing is below 0).
    """

    def __init__(self, top_a: float):
        self.top_a = unit_interval("top_a", top_a)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.top_a == 0:
            return scores.clone()
        probs = torch.softmax(scores.float(), dim=-1)
        top_p, top_index = probs.max(dim=-1, keepdim=True)
        # An all -inf row has NaN probabilities; NaN < x is False, so it is left alone.
        remove = probs < self.top_a * top_p * top_p
        remove.scatter_(1, top_index, False)
        return scores.masked_fill(remove, float("-inf"))


class TailFreeLogitsProcessor(LogitsProcessor):
    """Tail-free sampling (TFS).

    Reference: Trenton Bricken, "Tail-Free Sampling" (2019), with Text Generation WebUI's
    indexing (`TailFreeLogitsWarper`, parameter `tfs`).

    Per row: sort the probabilities in descending order, take the absolute second
    differences ``d2[j] = |p[j] - 2 p[j+1] + p[j+2]|`` (V-2 values for V tokens), normalise
    them to sum to 1 and accumulate them into ``cdf``.  The tail starts where the curve
    flattens out, i.e. where ``cdf`` passes `tfs`.

    Indexing convention (Text Generation WebUI's, "centred" as in Bricken's original):
    ``d2[j]`` is the curvature *at* sorted token ``j + 1`` (the middle point of the three it
    is computed from), so

    * sorted token 0 is always kept,
    * sorted token ``j + 1`` is kept iff ``cdf[j] <= tfs`` (a prefix, since cdf only grows),
    * the last sorted token, which has no second difference of its own, is always dropped.

    llama.cpp instead keeps sorted token ``j`` iff ``cdf[j] <= tfs`` (one token fewer, and
    never drops the last token outright).  Rows whose total curvature is below
    `FLAT_CURVATURE` (e.g. uniform) are left alone, as in llama.cpp; so are rows of one or
    two tokens, which have no second difference at all.  Ties are sorted by token id.

    Neutral value: ``tfs == 1`` (off; the step is skipped).
    """

    def __init__(self, tfs: float):
        self.tfs = unit_interval("tfs", tfs)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch, vocab = scores.shape
        if self.tfs >= 1.0 or vocab <= 2:
            return scores.clone()
        sorted_logits, order = torch.sort(scores.float(), dim=-1, descending=True, stable=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        d2 = probs.diff(dim=-1).diff(dim=-1).abs()
        total = d2.sum(dim=-1, keepdim=True)
        cdf = (d2 / total).cumsum(dim=-1)

        first = torch.zeros(batch, 1, dtype=torch.bool, device=scores.device)
        last = torch.ones(batch, 1, dtype=torch.bool, device=scores.device)
        remove_sorted = torch.cat((first, cdf > self.tfs, last), dim=-1)
        # Flat rows have no tail to cut; NaN totals (all -inf rows) compare False and stay too.
        remove_sorted &= total > FLAT_CURVATURE

        # Back from sorted positions to token ids.
        remove = torch.zeros_like(remove_sorted).scatter(1, order, remove_sorted)
        return scores.masked_fill(remove, float("-inf"))
