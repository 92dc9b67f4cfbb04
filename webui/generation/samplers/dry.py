"""DRY ("Don't Repeat Yourself"): penalise tokens that would continue a verbatim repeat."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from transformers import LogitsProcessor

from webui.generation.samplers.checks import finite_number

# Longest repeat we measure, as in Text Generation WebUI.  It bounds the exponent of the
# penalty (1.75 ** 48 is still a finite float32) and the worst-case work per step (a context
# that is one token repeated matches everywhere).
MAX_MATCH = 50


def _whole_number(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}")
    return value


def _breaker_ids(sequence_breakers: Iterable[int | Sequence[int]] | None) -> frozenset[int]:
    """Normalise the breakers to a set of token ids.

    An item may be a token id, or the token ids of one breaker string; for the latter we
    keep its *last* token, as Text Generation WebUI does (it encodes ``"a" + breaker`` and
    takes the last id), since that is the token which ends the breaker in a context.
    """
    ids: set[int] = set()
    for item in sequence_breakers or ():
        if isinstance(item, Sequence):
            if not item:
                continue
            item = item[-1]
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)) or item < 0:
            raise ValueError(f"`sequence_breakers` must hold token ids (ints >= 0), got {item!r}")
        ids.add(int(item))
    return frozenset(ids)


def repeat_lengths(context: np.ndarray, breakers: frozenset[int]) -> dict[int, int]:
    """For each token t that follows an earlier copy of the context's tail: the match length.

    The match length of t is the longest L such that the last L tokens of `context` also
    occur earlier, immediately followed by t (the earlier copy may overlap the tail).
    Matching never crosses a breaker token, a context ending in a breaker matches nothing,
    and a breaker is never reported as a continuation (so it is never penalised).  L is
    capped at `MAX_MATCH`.
    """
    n = context.size
    if n < 2:
        return {}
    last = int(context[-1])
    if last in breakers:
        return {}
    breaker_array = np.fromiter(breakers, dtype=context.dtype, count=len(breakers))
    # Every earlier position holding the last token ends a match of length >= 1.  (The last
    # position itself is excluded: the tail trivially matches itself, with no next token.)
    ends = np.flatnonzero(context[:-1] == last)
    if breakers:
        ends = ends[~np.isin(context[ends + 1], breaker_array)]
    if ends.size == 0:
        return {}
    # tail[k] is the token k places before the context's end.  A match stops at the tail's
    # first breaker, for every candidate alike, so only the tail before it can match.
    tail = context[n - 1 - np.arange(min(MAX_MATCH, n - 1))]
    if breakers:
        hit = np.flatnonzero(np.isin(tail, breaker_array))
        if hit.size:
            tail = tail[: hit[0]]
    # All candidates against all offsets at once (ends.size x tail.size <= n x MAX_MATCH
    # booleans, no Python loop per token).  Row i of `windows` is the tail.size tokens ending
    # at candidate end i, in context order; the front padding (-1, never a token id) lets
    # windows run off the start of the context and simply not match there.
    width = tail.size
    padded = np.concatenate([np.full(width - 1, -1, dtype=context.dtype), context])
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)[ends]
    # same[i, k]: the token k before end i equals the token k before the context's end.
    same = (windows == tail[::-1])[:, ::-1]
    # The match length is the number of leading Trues (argmin finds the first False).
    lengths = np.where(same.all(axis=1), width, same.argmin(axis=1))
    # Keep each continuation token's longest match: sort by (token, length), take each
    # token's last entry.
    tokens = context[ends + 1]
    order = np.lexsort((lengths, tokens))
    tokens, lengths = tokens[order], lengths[order]
    last_of_token = np.append(tokens[1:] != tokens[:-1], True)
    return dict(zip(tokens[last_of_token].tolist(), lengths[last_of_token].tolist(), strict=True))


class DRYLogitsProcessor(LogitsProcessor):
    """DRY ("Don't Repeat Yourself") repetition penalty.

    Reference: p-e-w's DRY sampler (text-generation-webui PR #5677), also in KoboldCpp and
    llama.cpp; parameter names as in Text Generation WebUI (`dry_multiplier`, `dry_base`,
    `dry_allowed_length`, `dry_sequence_breakers`).

    If the last L tokens of the context already occurred earlier, followed there by token t,
    then generating t now would repeat that sequence verbatim.  When L >= `allowed_length`,
    t's logit is lowered by ``multiplier * base ** (L - allowed_length)``: short repeats
    (common phrases) are free, and the penalty grows exponentially with the repeat's length.
    For each t the longest such L counts (capped at `MAX_MATCH` = 50, as in Text Generation
    WebUI).  Example: context ``[1, 2, 3, 4, 1, 2, 3]`` has tail ``[1, 2, 3]`` (L = 3) that
    was followed by 4, so with ``allowed_length = 2`` token 4 loses ``multiplier * base``.

    `sequence_breakers` are token ids that a match may not extend across (newlines, ":",
    quotes, "*" in chat: repeating speaker names or markup is not degenerate).  A context
    ending in a breaker gets no penalty, and a breaker is never penalised.  Items may also be
    lists of ids (one tokenised breaker string each); their last id is the breaker.

    `range_` limits matching to the last `range_` tokens of the context; 0 means all of it.

    Penalties only lower finite logits and stay finite (-inf logits stay -inf), so every
    token that was possible stays possible.  Each row of a batch is matched separately.

    Neutral value: ``multiplier == 0`` (no penalty).
    """

    def __init__(
        self,
        multiplier: float,
        base: float = 1.75,
        allowed_length: int = 2,
        sequence_breakers: Iterable[int | Sequence[int]] | None = None,
        range_: int = 0,
    ):
        self.multiplier = finite_number("multiplier", multiplier)
        if self.multiplier < 0:
            raise ValueError(f"`multiplier` must be >= 0, got {multiplier}")
        self.base = finite_number("base", base)
        # A base below 1 would make longer repeats cheaper than short ones.
        if self.base < 1:
            raise ValueError(f"`base` must be >= 1, got {base}")
        self.allowed_length = _whole_number("allowed_length", allowed_length, 1)
        self.sequence_breakers = _breaker_ids(sequence_breakers)
        self.range_ = _whole_number("range_", range_, 0)

    def penalty(self, length: int) -> float:
        """The logit penalty for continuing a repeat of `length` tokens (0 below the allowance)."""
        if length < self.allowed_length:
            return 0.0
        return self.multiplier * self.base ** (length - self.allowed_length)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = scores.clone()
        if self.multiplier == 0:
            return out
        context = input_ids if self.range_ == 0 else input_ids[:, -self.range_:]
        # Matching is sequential integer work: numpy on the CPU beats launching device kernels.
        rows = context.detach().cpu().numpy()
        vocab = scores.shape[-1]
        limit = torch.finfo(scores.dtype).max
        for row, ids in enumerate(rows):
            hits = {
                token: self.penalty(length)
                for token, length in repeat_lengths(ids, self.sequence_breakers).items()
                if length >= self.allowed_length and token < vocab
            }
            if not hits:
                continue
            index = torch.tensor(list(hits), device=scores.device)
            # Cap the penalty at the dtype's range (a huge multiplier in float16 would
            # otherwise be inf), and keep penalised logits finite: DRY discourages a token,
            # it never bans it outright, so a row can never lose all of its tokens.
            penalty = torch.tensor([min(p, limit) for p in hits.values()], dtype=scores.dtype,
                                   device=scores.device)
            before = out[row, index]
            after = (before - penalty).clamp(min=-limit)
            out[row, index] = torch.where(torch.isfinite(before), after, before)
        return out
