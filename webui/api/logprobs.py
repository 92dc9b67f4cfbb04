"""Log-probabilities in OpenAI's two layouts: chat's per-token objects, and the legacy
completions' parallel lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from webui.generation.request import TokenLogprob


def format_logprobs(tokenizer: Any, entries: Sequence[TokenLogprob], chat: bool) -> dict[str, Any]:
    """`tokenizer` names our own token ids; a remote engine's entries come named already
    (token_id -1, webui/generation/request.py)."""
    def text(token_id: int) -> str:
        return tokenizer.decode([token_id])

    def named(entry: TokenLogprob) -> tuple[str, list[tuple[str, float]]]:
        if entry.token_id < 0:
            return entry.text, list(entry.top_texts)
        # The chosen token is named by the text it added to the reply (the engine's
        # incremental decoding), so the tokens join to the reply exactly; decoded alone, a
        # byte token or a word piece reads differently (a lone byte is U+FFFD).
        return entry.text, [(text(i), lp) for i, lp in entry.top]

    rows = [(*named(e), e.logprob) for e in entries]
    if chat:
        return {"content": [
            {"token": token, "logprob": logprob, "bytes": list(token.encode()),
             "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top]}
            for token, top, logprob in rows
        ]}
    offsets, position = [], 0
    for token, _, _ in rows:
        offsets.append(position)
        position += len(token)
    return {"tokens": [token for token, _, _ in rows], "token_logprobs": [logprob for _, _, logprob in rows],
            "top_logprobs": [dict(top) for _, top, _ in rows], "text_offset": offsets}
