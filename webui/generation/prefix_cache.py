"""An LRU of earlier sequences' KV caches, looked up by the longest shared token prefix.

Chat turn N+1's prompt starts with turn N's prompt and reply; Regenerate and Continue
share almost all of theirs.  Each finished sequence leaves its KV here (keyed by the
tokens it covers); a new prompt takes the entry sharing the longest prefix with it and
only the rest is computed.  Bounded in bytes; the least recently used entry goes first.
What an entry holds is the backend's business: this class only sees tokens and sizes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Shorter shared prefixes are not worth a lookup's copy; below this, compute afresh.
MIN_REUSE_TOKENS = 16


@dataclass
class CacheEntry:
    tokens: tuple[int, ...]
    value: Any
    nbytes: int


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the common case for a follow-up turn: one C-level comparison
        return n
    lo, hi = 0, n  # binary search on slice equality: O(n log n) in C, not a Python loop
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class PrefixCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, CacheEntry] = OrderedDict()
        self._bytes = 0
        self._next = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, ids: Sequence[int]) -> tuple[CacheEntry | None, int]:
        """The entry sharing the longest prefix with `ids`, and that length (at most
        len(ids) - 1: the last prompt token is always computed, for its logits)."""
        ids = tuple(ids)
        best, best_len = None, 0
        with self._lock:
            for key, entry in self._entries.items():
                n = min(shared_prefix(entry.tokens, ids), len(ids) - 1)
                if n > best_len:
                    best, best_len, best_key = entry, n, key
            if best is None or best_len < MIN_REUSE_TOKENS:
                self.misses += 1
                return None, 0
            self._entries.move_to_end(best_key)
            self.hits += 1
        return best, best_len

    def add(self, tokens: Sequence[int], value: Any, nbytes: int) -> None:
        """Keep `value` (the KV of exactly `tokens`); entries it extends are dropped."""
        tokens = tuple(tokens)
        if len(tokens) < MIN_REUSE_TOKENS or nbytes > self.max_bytes:
            return
        with self._lock:
            for key in [k for k, e in self._entries.items() if tokens[: len(e.tokens)] == e.tokens]:
                self._bytes -= self._entries.pop(key).nbytes
            self._entries[self._next] = CacheEntry(tokens, value, nbytes)
            self._next += 1
            self._bytes += nbytes
            while self._bytes > self.max_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
