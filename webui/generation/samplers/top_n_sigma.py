"""Top-nσ: keep the tokens whose logit is within n standard deviations of the best one."""

from __future__ import annotations

import math

import torch
from transformers import LogitsProcessor


class TopNSigmaLogitsProcessor(LogitsProcessor):
    """Top-nσ truncation.

    Reference: Chenxia Tang et al., "Top-nσ: Not All Logits Are You Need" (2024,
    arXiv:2411.07641); as in llama.cpp (`top_n_sigma`) and Text Generation WebUI.

    Per row, with M the largest logit and σ the standard deviation of the row's finite
    logits (population σ, dividing by the count, as in the paper and llama.cpp), keep the
    tokens with ``logit >= M - n * σ`` and set the rest to -inf.  The paper's observation is
    that logits look like a Gaussian "noise" bulk plus a few informative outliers; the cut
    sits a fixed number of σ below the top, so it adapts to how peaked the row is.

    Placement: the paper defines it on the raw logits, i.e. before temperature.  Temperature
    T divides M and σ alike (``(M - nσ) / T = M/T - n(σ/T)``), so the kept set does not
    depend on T: put top-nσ before temperature and temperature only reshapes the survivors.
    Tokens already at -inf (banned by an earlier step) are ignored for σ and stay removed.

    The top token always survives (σ >= 0), as do tokens tied with it; a row with a single
    finite logit has σ = 0 and keeps just its ties with the top.

    Neutral value: ``n <= 0`` (off; Text Generation WebUI uses 0).
    """

    def __init__(self, n: float):
        # bool is an int subclass, but True as n is a caller's mistake, not 1.0.
        if isinstance(n, bool) or not isinstance(n, (int, float)) or math.isnan(n):
            raise ValueError(f"`n` must be a number, got {n!r}")
        self.n = float(n)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = scores.clone()
        if self.n <= 0 or math.isinf(self.n):
            return out  # n = +inf keeps everything
        logits = scores.float()
        finite = torch.isfinite(logits)
        count = finite.sum(dim=-1, keepdim=True).clamp(min=1)
        values = logits.masked_fill(~finite, 0.0)
        mean = values.sum(dim=-1, keepdim=True) / count
        # Two-pass variance (subtract the mean first): logits are often large and close
        # together, where E[x^2] - E[x]^2 would cancel catastrophically.
        sigma = (((values - mean) * finite) ** 2).sum(dim=-1, keepdim=True).div(count).sqrt()
        top = logits.masked_fill(~finite, float("-inf")).amax(dim=-1, keepdim=True)
        # Compare in float32 even for half-precision scores; an all -inf row has top = -inf,
        # for which nothing is < the (NaN) cutoff, so it is returned unchanged.
        remove = logits < top - self.n * sigma
        return out.masked_fill_(remove, float("-inf"))
