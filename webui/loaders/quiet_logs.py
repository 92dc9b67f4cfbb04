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


# Messages that say a library skipped fetching code from the hub because the app runs
# offline (webui/__main__.py sets HF_HUB_OFFLINE): expected, and the privacy promise kept,
# not a failure.  bitsandbytes on a CPU with AVX512-BF16 looks for an optional 4-bit kernel
# there at import and warns twice on every start.  (logger, message start)
OFFLINE_NOTICES = (
    ("kernels._internals.hf_hub", "Skipping publisher trust check"),
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
)


class DropStarting(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


def quiet_offline_notices() -> None:
    """Idempotent; call before bitsandbytes is first imported."""
    for name, start in OFFLINE_NOTICES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropStarting) and f.start == start for f in logger.filters):
            logger.addFilter(DropStarting(start))


def quiet_chatty_loggers() -> None:
    """Idempotent: safe to call on every model load."""
    quiet_offline_notices()
    for name in CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OncePerMessage) for f in logger.filters):
            logger.addFilter(OncePerMessage())
