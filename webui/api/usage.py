"""Tokens in and out per API key, for the admin (GET /v1/internal/usage); and whom the
scheduler is fair between for an API request (`api_party`).

A key is named by the first 12 hex digits of its SHA-256: enough to tell keys apart
on one server, useless for guessing them, and safe to show in a page or a log.
Counted in memory since start-up: a gateway's meter, not a bill.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import asdict, dataclass

from webui.api.security import presented_key
from webui.connections import client_key


def key_label(headers) -> str:
    key = presented_key(headers)
    return f"key-{hashlib.sha256(key.encode()).hexdigest()[:12]}" if key else "no-key"


def api_party(request) -> str:
    """The scheduler's owner for an API request (webui/generation/scheduler.py): its key
    and its client's address.  Each key is a party of its own; and since one key is
    usually shared (--api-key), each address using it is one too -- two programs on two
    machines are two clients, not one.  A client does not get more places by sending
    more requests, only by using more keys or machines, which it would need to have.
    Behind a reverse proxy every client has the proxy's address: there only the key tells
    clients apart."""
    client = getattr(request, "client", None)
    return f"api {key_label(request.headers)} @ {client_key((client.host,) if client else None)}"


@dataclass
class KeyUsage:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class UsageCounter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, KeyUsage] = {}

    def add(self, label: str, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            entry = self._by_key.setdefault(label, KeyUsage())
            entry.requests += 1
            entry.prompt_tokens += prompt_tokens
            entry.completion_tokens += completion_tokens

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {label: asdict(entry) for label, entry in sorted(self._by_key.items())}
