"""Log-probabilities in OpenAI's two layouts: chat's per-token objects, and the legacy
completions' parallel lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from webui.generation.request import TokenLogprob


def format_logprobs(tokenizer: Any, entries: Sequence[TokenLogprob], chat: bool) -> dict[str, Any]:
    def text(token_id: int) -> str:
        return tokenizer.decode([token_id])

    if chat:
        return {"content": [
            {"token": text(e.token_id), "logprob": e.logprob, "bytes": list(text(e.token_id).encode()),
             "top_logprobs": [{"token": text(i), "logprob": lp, "bytes": list(text(i).encode())} for i, lp in e.top]}
            for e in entries
        ]}
    texts = [text(e.token_id) for e in entries]
    offsets, position = [], 0
    for piece in texts:
        offsets.append(position)
        position += len(piece)
    return {"tokens": texts, "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{text(i): lp for i, lp in e.top} for e in entries], "text_offset": offsets}
