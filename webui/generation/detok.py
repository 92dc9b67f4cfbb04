"""Incremental detokenization.

Decoding one token at a time is wrong (SentencePiece drops the leading space of a
lone word piece; a character split over byte-fallback tokens decodes to U+FFFD), and
re-decoding the whole reply each step is O(n^2).  Instead we decode a short sliding
window twice: the tokens already shown (the "prefix") and the same tokens plus the new
ones; the difference is the new text.  Text ending in U+FFFD is an incomplete
character, so it is held back until the next token completes it.  The window starts a
few tokens before its first new token so that word-boundary spaces come out right,
and it slides forward every time text is emitted, so each step costs O(window).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# Enough context for the tokenizer to place spaces correctly at the window start.
CONTEXT_TOKENS = 4


class IncrementalDecoder:
    def __init__(self, tokenizer, prompt_ids: Sequence[int] = (), keep: Mapping[int, str] | None = None):
        """keep: special tokens shown as their text (token id -> text) where every other
        special token is left out: the markers that separate a reply's thinking from its
        answer in some formats (webui/generation/reasoning.py)."""
        self._tokenizer = tokenizer
        self._keep = dict(keep or {})
        # Fast tokenizers: call the Rust decoder directly; transformers' Python wrapper
        # around it costs more than the decoding itself, twice per token.
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._ids: list[int] = list(prompt_ids[-CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def _decode(self, ids: list[int]) -> str:
        if self._keep and not self._keep.keys().isdisjoint(ids):
            parts, run = [], []
            for token in ids:
                if token in self._keep:
                    parts += [self._plain(run), self._keep[token]]
                    run = []
                else:
                    run.append(token)
            return "".join(parts) + self._plain(run)
        return self._plain(ids)

    def _plain(self, ids: list[int]) -> str:
        if not ids:
            return ""
        if self._backend is not None:
            return self._backend.decode(ids, skip_special_tokens=True)
        return self._tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes ('' if none yet)."""
        self._ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Return whatever is still held back (call once, at the end)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        shown = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) <= len(shown) or (full.endswith("\ufffd") and not final):
            return ""
        # The tokens just shown become the next window's context.
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return full[len(shown) :]
