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

from webui.generation.backend import Capabilities

# Longest and shortest run of tokens looked up in the context.  A single token recurs
# almost everywhere in a long context, so one-token matches would draft on nearly every
# step and be rejected mostly (not measured against 2 here; a choice, not a finding).
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


class PromptLookup:
    """The n-grams of a request's prompt and reply, each with where it last ended, kept
    up to date token by token: a draft costs a dictionary lookup, not a scan of the
    context (which took 0.4 ms per step at 1k tokens and 2 ms at 8k, measured)."""

    def __init__(self, ids: list[int], max_ngram: int = MAX_NGRAM, min_ngram: int = MIN_NGRAM):
        self.tokens = list(ids)
        self.sizes = range(max_ngram, min_ngram - 1, -1)
        self._last: dict[tuple[int, ...], int] = {}  # n-gram -> the position of its last token
        self._indexed = 0  # n-grams ending before this position are in _last

    def push(self, token: int) -> None:
        self.tokens.append(token)

    def draft(self, count: int) -> list[int]:
        """Up to `count` tokens that followed the latest earlier occurrence of the last n
        tokens (longest n first); [] when they do not occur earlier."""
        tokens = self.tokens
        end = len(tokens) - 1  # never the tail itself
        for i in range(self._indexed, end):
            for n in self.sizes:
                if i + 1 >= n:
                    self._last[tuple(tokens[i + 1 - n : i + 1])] = i
        self._indexed = max(self._indexed, end)
        if count <= 0:
            return []
        for n in self.sizes:
            if len(tokens) > n:
                at = self._last.get(tuple(tokens[-n:]))
                if at is not None:
                    return tokens[at + 1 : at + 1 + count]
        return []
