"""Steps that push individual tokens up or down: repetition penalties, logit bias, bans.

The penalties look at the context (`input_ids`); only its last `range_` tokens count when
`range_` > 0, as Text Generation WebUI's `repetition_penalty_range`.  Context ids outside the
vocabulary (padding such as -100, or a tokenizer larger than the output layer) are ignored
rather than indexed: on a GPU an out-of-range index is a device-side assert that kills the
whole CUDA context.

Token ids that a *user* supplies (logit bias, bans) are checked instead, with
`ids_in_vocab`, and refused with a ValueError that names the id.

None of the penalties removes a token: a finite logit stays finite (clamped to the dtype's
range), and -inf (removed by an earlier step) stays -inf.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from transformers import LogitsProcessor

from webui.generation.samplers.checks import finite_number


def ids_in_vocab(ids: Iterable[int] | torch.Tensor, vocab_size: int, *, field: str = "token id") -> None:
    """Raise ValueError naming the first id that is not an integer in [0, vocab_size)."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"`vocab_size` must be a positive integer, got {vocab_size!r}")
    if isinstance(ids, torch.Tensor):
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"{field}: token ids must be integers, got a {ids.dtype} tensor")
        ids = ids.flatten().tolist()
    for token_id in ids:
        _token_id(token_id, field)
        if token_id >= vocab_size:
            raise ValueError(f"{field}: token id {token_id} is outside the vocabulary (0..{vocab_size - 1})")


def _token_id(value: object, field: str) -> int:
    """A non-negative int; the upper bound needs the vocabulary and is checked at call time."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field}: token id {value!r} is not an integer")
    if value < 0:
        raise ValueError(f"{field}: token id {value} is outside the vocabulary (ids start at 0)")
    return value


def _context_range(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`range_` must be an integer >= 0 (0 = whole context), got {value!r}")
    return value


def token_counts(input_ids: torch.LongTensor, vocab_size: int, range_: int = 0) -> torch.FloatTensor:
    """How often each token occurs in each row's last `range_` tokens (0 = all): [batch, vocab]."""
    window = input_ids[:, -range_:] if range_ > 0 else input_ids
    valid = (window >= 0) & (window < vocab_size)
    # Invalid ids are pointed at token 0 but add 0 there, so they count for nothing.
    index = window.clamp(0, vocab_size - 1)
    counts = torch.zeros(window.shape[0], vocab_size, dtype=torch.float32, device=window.device)
    return counts.scatter_add_(1, index, valid.float())


def _stay_finite(original: torch.FloatTensor, shifted: torch.FloatTensor) -> torch.FloatTensor:
    """Keep finite logits finite: a penalty reorders tokens, it must never remove (or force) one."""
    info = torch.finfo(shifted.dtype)
    return torch.where(torch.isfinite(original), shifted.clamp(info.min, info.max), shifted)


class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Multiplicative repetition penalty over a window of the context.

    Reference: CTRL (Keskar et al. 2019) as implemented by transformers'
    `RepetitionPenaltyLogitsProcessor`, plus Text Generation WebUI's
    `repetition_penalty_range`.  Every token that occurs (any number of times) in the last
    `range_` context tokens (0 = the whole context) gets its logit divided by `penalty` when
    positive and multiplied by it when negative, so ``penalty > 1`` makes it less likely
    either way.

    Neutral value: ``penalty == 1.0``.
    """

    def __init__(self, penalty: float, range_: int = 0):
        penalty = finite_number("penalty", penalty)
        if penalty <= 0:
            raise ValueError(f"`penalty` must be > 0, got {penalty}")
        self.penalty = penalty
        self.range_ = _context_range(range_)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.penalty == 1.0:
            return scores.clone()
        seen = token_counts(input_ids, scores.shape[-1], self.range_) > 0
        penalized = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return _stay_finite(scores, torch.where(seen, penalized, scores))


class PresenceFrequencyPenaltyLogitsProcessor(LogitsProcessor):
    """Additive presence and frequency penalties over a window of the context.

    Reference: OpenAI's API (``presence_penalty``, ``frequency_penalty``), as in Text
    Generation WebUI.  With ``count`` a token's occurrences in the last `range_` context
    tokens (0 = the whole context)::

        logit -= presence_penalty * (count > 0) + frequency_penalty * count

    Negative values encourage repetition instead (OpenAI allows -2..2; any finite value is
    accepted here).

    Neutral value: ``presence_penalty == 0`` and ``frequency_penalty == 0``.
    """

    def __init__(self, presence_penalty: float, frequency_penalty: float, range_: int = 0):
        self.presence_penalty = finite_number("presence_penalty", presence_penalty)
        self.frequency_penalty = finite_number("frequency_penalty", frequency_penalty)
        self.range_ = _context_range(range_)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.presence_penalty == 0 and self.frequency_penalty == 0:
            return scores.clone()
        counts = token_counts(input_ids, scores.shape[-1], self.range_)
        penalty = self.presence_penalty * (counts > 0).float() + self.frequency_penalty * counts
        return _stay_finite(scores, scores - penalty.to(scores.dtype))


class LogitBiasLogitsProcessor(LogitsProcessor):
    """Add a fixed bias to the logits of chosen token ids.

    Reference: OpenAI's ``logit_bias`` / Text Generation WebUI's logit bias.  The bias is
    added to every row; a token already at -inf (removed by an earlier step) stays removed,
    and no finite logit is pushed to +-inf.  Ids are checked against the vocabulary of the
    scores at call time (ValueError naming the id); negative ids are refused at once.

    Neutral value: an empty mapping (or all biases 0).
    """

    def __init__(self, bias: Mapping[int, float]):
        if not isinstance(bias, Mapping):
            raise ValueError(f"`bias` must be a mapping of token id -> bias, got {type(bias).__name__}")
        ids, values = [], []
        for token_id, value in bias.items():
            ids.append(_token_id(token_id, "logit_bias"))
            values.append(finite_number(f"bias[{token_id}]", value))
        self.bias = dict(zip(ids, values, strict=True))
        self._ids = torch.tensor(ids, dtype=torch.long)
        self._values = torch.tensor(values, dtype=torch.float32)
        self._checked_vocab: int | None = None  # the ids only need checking once per vocabulary

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[-1] != self._checked_vocab:
            ids_in_vocab(self.bias, scores.shape[-1], field="logit_bias")
            self._checked_vocab = scores.shape[-1]
        out = scores.clone()
        if not self.bias:
            return out
        ids = self._ids.to(scores.device)
        # Mapping keys are unique, so this indexed add never adds twice to one token.
        out[:, ids] += self._values.to(device=scores.device, dtype=scores.dtype)
        return _stay_finite(scores, out)


class BanTokensLogitsProcessor(LogitsProcessor):
    """Never generate the given token ids (their logits become -inf).

    Reference: Text Generation WebUI's ``custom_token_bans`` (and ``ban_eos_token``).
    A ban never leaves a row without a candidate: if it would remove every token still in
    play, the row keeps its best (highest-logit) token, at its original logit.  Ids are
    checked against the vocabulary of the scores at call time (ValueError naming the id);
    negative ids are refused at once.

    Neutral value: an empty list.
    """

    def __init__(self, token_ids: Iterable[int]):
        if isinstance(token_ids, (str, bytes)) or not isinstance(token_ids, Iterable):
            raise ValueError(f"`token_ids` must be a list of token ids, got {type(token_ids).__name__}")
        # Sorted and de-duplicated: a repeated id changes nothing.
        self.token_ids = sorted({_token_id(token_id, "token_ids") for token_id in token_ids})
        self._ids = torch.tensor(self.token_ids, dtype=torch.long)
        self._checked_vocab: int | None = None  # the ids only need checking once per vocabulary

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[-1] != self._checked_vocab:
            ids_in_vocab(self.token_ids, scores.shape[-1], field="token_ids")
            self._checked_vocab = scores.shape[-1]
        out = scores.clone()
        if not self.token_ids:
            return out
        out[:, self._ids.to(scores.device)] = float("-inf")
        # Rows that had a candidate before and have none now get their best one back.
        emptied = torch.isneginf(out).all(dim=-1, keepdim=True) & ~torch.isneginf(scores).all(
            dim=-1, keepdim=True
        )
        best = torch.zeros_like(scores, dtype=torch.bool).scatter(1, scores.argmax(dim=-1, keepdim=True), True)
        return torch.where(emptied & best, scores, out)
