"""Pages cut into overlapping windows of tokens, ending where the text breaks.

A chunk holds at most `size` tokens of one page (chunks never straddle pages, so a
citation names one page).  Its end is moved back to the last paragraph break in its
second half, else to the last sentence end there, else it stays a hard cut; the next
chunk starts `overlap` tokens before that end, so a passage split at a boundary is
whole in one of the two (a chunk that ends at a paragraph break cut nothing, so the
next starts there).  Offsets are characters of the page text, so a citation can
show the passage in place.

Tokens are whatever `spans` says: the embedding model's tokenizer (its offsets), or
words and punctuation (WORDS) where there is none.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from webui.documents.extract import Page

Spans = Callable[[str], Sequence[tuple[int, int]]]
SIZE = 200
OVERLAP = 40
_WORD = re.compile(r"\w+|[^\w\s]")
_SENTENCE_END = re.compile(r"[.!?;:][\"')\]]?\s*$")


def word_spans(text: str) -> list[tuple[int, int]]:
    """Words and punctuation marks as tokens: a tokenizer-free approximation."""
    return [m.span() for m in _WORD.finditer(text)]


@dataclass(frozen=True)
class Chunk:
    page: int | None
    start: int  # character offsets in the page's text
    end: int
    text: str
    tokens: int


def chunk_pages(pages: Sequence[Page], spans: Spans = word_spans, size: int = SIZE,
                overlap: int = OVERLAP) -> list[Chunk]:
    if size < 8 or not 0 <= overlap < size // 2:
        raise ValueError("chunk size must be at least 8 tokens and the overlap under half of it")
    chunks: list[Chunk] = []
    for page in pages:
        chunks += _chunk_page(page, list(spans(page.text)), size, overlap)
    return chunks


def _chunk_page(page: Page, tokens: list[tuple[int, int]], size: int, overlap: int) -> list[Chunk]:
    text, count = page.text, len(tokens)
    # Break strength before token i: 2 = a paragraph starts, 1 = a sentence starts.
    strength = [0] * (count + 1)
    for i in range(1, count):
        gap = text[tokens[i - 1][1]:tokens[i][0]]
        if gap.count("\n") >= 2 or (gap.count("\n") == 1 and not gap.strip(" \t\n")):
            strength[i] = 2 if gap.count("\n") >= 2 else 1
        elif _SENTENCE_END.search(text[max(0, tokens[i - 1][0]):tokens[i][0]]):
            strength[i] = 1
    chunks, start = [], 0
    while start < count:
        end = min(start + size, count)
        if end < count:
            end = _best_break(strength, start + size // 2, end) or end
        first, last = tokens[start][0], tokens[end - 1][1]
        chunks.append(Chunk(page.number, first, last, text[first:last], end - start))
        if end >= count:
            break
        if strength[end] == 2:  # ended at a paragraph: nothing was cut, so no overlap is needed
            start = end
            continue
        start = max(end - overlap, start + 1)
        # Begin the overlap at a sentence start when one is near, so a chunk reads cleanly.
        for i in range(start, min(end, start + overlap // 2)):
            if strength[i]:
                start = i
                break
    return chunks


def _best_break(strength: list[int], low: int, high: int) -> int | None:
    for wanted in (2, 1):
        for i in range(high, low, -1):
            if strength[i] >= wanted:
                return i
    return None
