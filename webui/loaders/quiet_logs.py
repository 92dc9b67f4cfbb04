"""Libraries that log on every call: let each distinct message through once.

bitsandbytes' 8-bit matmul logs "inputs will be cast ... to float16" at WARNING on every
call of every layer: ~150,000 lines (19 MB) for a few hundred tokens.  The first one
says what needs saying.  (llama.cpp's own log lines, written by C code, are routed to
Python logging by webui/loaders/llama_logs.py.)
"""

from __future__ import annotations

import logging
import threading

# Loggers known to repeat themselves per call; each gets one filter.
CHATTY_LOGGERS = ("bitsandbytes.autograd._functions",)
MAX_REMEMBERED = 1000


class OncePerMessage(logging.Filter):
    """Passes the first record of each message template; drops its repeats."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[str, object]] = set()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.msg if isinstance(record.msg, str) else repr(record.msg), record.args)
        with self._lock:
            if key in self._seen:
                return False
            if len(self._seen) < MAX_REMEMBERED:
                self._seen.add(key)
        return True


def quiet_chatty_loggers() -> None:
    """Idempotent: safe to call on every model load."""
    for name in CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OncePerMessage) for f in logger.filters):
            logger.addFilter(OncePerMessage())
