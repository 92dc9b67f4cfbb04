"""What the engine records about one step's distributions, when a request asks.

Only requests with `logprobs` set come here (webui/generation/engine.py), so a request
that asks for nothing pays nothing: plain greedy rows never leave the batch's argmax.

Two distributions exist at each step: the model's own (softmax of its logits) and the
one the token is drawn from (softmax of the logits after the request's sampler chain,
where a token the samplers removed has probability 0).  The API reports the second,
as OpenAI does; the token views show both (`token_detail`).
"""

from __future__ import annotations

import math

import torch

from webui.generation.request import Alternative, TokenLogprob

# Tokens of context decoded before a token, so that its text reads as it does in place
# (a SentencePiece word piece keeps its leading space); as webui/generation/detok.py does.
CONTEXT_TOKENS = 4


def top_pairs(row: torch.Tensor, n: int) -> tuple[tuple[int, float], ...]:
    """The n highest (id, log-probability) pairs of a 1-D row, highest first.  Tokens a
    step removed (a grammar, top_k) are no alternatives: their -inf is not even
    representable in JSON."""
    if n <= 0:
        return ()
    values, ids = torch.topk(row, min(n, row.shape[-1]))
    return tuple((i, v) for i, v in zip(ids.tolist(), values.tolist(), strict=True) if v != -math.inf)


def record(token: int, scores: torch.Tensor, top: int) -> TokenLogprob:
    """The API's record: `token`'s log-probability after the samplers, and the `top`
    likeliest there (scores: [1, vocab], after the chain)."""
    row = torch.log_softmax(scores[0].float(), dim=-1)
    return TokenLogprob(token, float(row[token]), top_pairs(row, top))


def detailed_record(token: int, scores: torch.Tensor, raw: torch.Tensor, top: int, tokenizer,
                    context: list[int]) -> TokenLogprob:
    """`record`, plus the model's own distribution (raw: [1, vocab], before the chain)
    and the alternatives' texts: the `top` likeliest tokens after the samplers (those they
    kept), the `top` likeliest under the model, and the chosen token."""
    row = torch.log_softmax(scores[0].float(), dim=-1)
    raw_row = torch.log_softmax(raw[0].float(), dim=-1)
    sampled = top_pairs(row, top)
    kept = [token_id for token_id, value in sampled if value > -math.inf]
    ids = list(dict.fromkeys([*kept, *(token_id for token_id, _ in top_pairs(raw_row, top)), token]))
    after = row[ids].tolist()
    before = raw_row[ids].tolist()
    texts = in_place_texts(tokenizer, context, ids)
    alternatives = tuple(Alternative(i, t, a, b) for i, t, a, b in zip(ids, texts, after, before, strict=True))
    return TokenLogprob(token, float(row[token]), sampled, raw_logprob=float(raw_row[token]),
                        alternatives=alternatives)


def in_place_texts(tokenizer, context: list[int], ids: list[int]) -> list[str]:
    """Each token's text as it would read after `context` (decoded with it, minus the
    context's own text).  A token with no readable text of its own (a special token, one
    byte of a longer character) is named by its vocabulary entry instead."""
    context = list(context[-CONTEXT_TOKENS:])
    backend = getattr(tokenizer, "backend_tokenizer", None)
    sequences = [context + [token_id] for token_id in ids]
    if backend is not None:  # the Rust decoder directly: one call for all of them
        base = backend.decode(context, skip_special_tokens=True)
        full = backend.decode_batch(sequences, skip_special_tokens=True)
    else:
        options = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}
        base = tokenizer.decode(context, **options)
        full = [tokenizer.decode(sequence, **options) for sequence in sequences]
    texts = []
    for token_id, text in zip(ids, full, strict=True):
        piece = text[len(base):] if text.startswith(base) else ""
        if not piece or "\ufffd" in piece:
            piece = str(tokenizer.convert_ids_to_tokens(token_id))
        texts.append(piece)
    return texts
