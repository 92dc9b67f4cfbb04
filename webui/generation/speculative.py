"""Speculative decoding by prompt lookup: drafts from the context, checked in one step.

A reply that repeats its context (code being edited, a quoted document, a list being
continued) can be guessed ahead: find the last few tokens earlier in the prompt or the
reply, and propose what followed them there.  The engine feeds the request's newest
token and the drafts in one forward (Backend.verify) and gets the model's logits after
each of them; it then chooses tokens exactly as it would one step at a time — the
request's own chain and random generator, one draw per position — and keeps drafts
while the chosen token equals the draft.  The first token that differs is still a token
the model chose, so every step yields at least one; the rejected drafts' KV is dropped
(Backend.rewind).

So the reply is the one decoding without drafts gives: greedy token for token, and a
seeded one draw for draw (a draft is accepted exactly when the draw picks it, which is
the standard acceptance rule for a draft that proposes one token with certainty).  What
can differ is rounding: several tokens in one forward are computed like a prompt read
after a cached prefix, so a backend promises equal logits only where it promises
`reuse_invariant` (fp32 arithmetic); elsewhere only requests that ask speculate, and a
`deterministic` one never does.

Only a request decoding alone speculates: beside others the step is already a batch,
the cores are busy, and drafts would add work where they save little.
"""

from __future__ import annotations

import torch

from webui.generation.backend import Capabilities

# Longest and shortest run of tokens looked up in the context.  One-token matches draft
# too often to pay; three tokens already pin a repeat down (bench/bench_speculative.py).
MAX_NGRAM = 3
MIN_NGRAM = 2


def draft_budget(requested: int, deterministic: bool, capabilities: Capabilities) -> int:
    """Tokens this request may draft per step: its own prompt_lookup_num_tokens, or the
    server's default (-1), where the backend can check drafts and keeps the reply as it is."""
    if capabilities.prompt_lookup is None:
        return 0
    if deterministic and not capabilities.reuse_invariant:
        return 0  # asked to be computed as it would be alone: no multi-token steps
    if requested >= 0:
        return requested
    # The server's default applies only where verifying keeps every logit as it was.
    return capabilities.prompt_lookup if capabilities.reuse_invariant else 0


def lookup(context: torch.Tensor, count: int, max_ngram: int = MAX_NGRAM, min_ngram: int = MIN_NGRAM) -> list[int]:
    """Up to `count` tokens that followed the latest earlier occurrence of the context's
    last n tokens (longest n first); [] when it does not repeat itself."""
    total = context.numel()
    if count <= 0 or total < min_ngram + 1:
        return []
    earlier = context[:-1]  # windows that end before the last token: never the tail itself
    for n in range(min(max_ngram, total - 1), min_ngram - 1, -1):
        windows = earlier.unfold(0, n, 1)
        hits = (windows == context[-n:]).all(dim=1).nonzero()
        if hits.numel():
            start = int(hits[-1]) + n
            return context[start : start + count].tolist()
    return []
