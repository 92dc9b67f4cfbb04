"""llama.cpp's log lines, sent to Python logging at their real level.

llama.cpp logs several hundred INFO lines per model load (every metadata key, every
buffer it allocates).  llama-cpp-python 0.3.36 installs a callback that maps ggml's
log levels with the numbering of an older ggml (INFO = 1, WARN = 2); the ggml it ships
numbers them DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5, so every INFO line passed its
WARNING filter and went to stderr.  This module replaces that callback: each line goes
to the "llama.cpp" logger at its own level, and that logger shows warnings and errors
unless the user gave it a level of its own (logging.getLogger("llama.cpp").setLevel).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
from typing import Any

LOGGER = "llama.cpp"
# ggml_log_level as numbered by the ggml inside llama-cpp-python 0.3.36 (the version pyproject.toml pins).
GGML_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
GGML_CONT = 5  # "continue the previous line": a piece of the line before, at its level


class LlamaLogRouter:
    """Joins llama.cpp's pieces into lines and logs each line once, at its level."""

    def __init__(self, lib: Any, logger: logging.Logger):
        self._logger = logger
        self._lock = threading.Lock()  # llama.cpp may log from a load and a decode thread at once
        self._level = logging.INFO
        self._partial = ""
        # llama.cpp keeps only the pointer: this object must outlive every call (see route_llama_logs).
        self._callback = lib.llama_log_callback(self._receive)
        lib.llama_log_set(self._callback, ctypes.c_void_p(0))

    def _receive(self, level: int, text: bytes | None, _user_data: Any) -> None:
        try:
            self.feed(level, (text or b"").decode("utf-8", errors="replace"))
        except Exception:  # noqa: S110 - an exception must not unwind into C code; nowhere to report it
            pass

    def feed(self, level: int, text: str) -> None:
        with self._lock:
            if level != GGML_CONT:
                if self._partial:  # a new message ends an unfinished line
                    self._emit(self._partial)
                    self._partial = ""
                self._level = GGML_LEVELS.get(level, logging.INFO)
            *lines, self._partial = (self._partial + text).split("\n")
            for line in lines:
                self._emit(line)

    def _emit(self, line: str) -> None:
        if line.strip() and self._logger.isEnabledFor(self._level):
            self._logger.log(self._level, "%s", line.rstrip())


@functools.cache
def route_llama_logs(lib: Any) -> LlamaLogRouter:
    """Install the router, once per process.  Cached on purpose: llama.cpp holds a single
    process-wide callback pointer, so the router it points at must live as long as the
    process (a router freed while a model is still loaded would be called after death)."""
    logger = logging.getLogger(LOGGER)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
    return LlamaLogRouter(lib, logger)


@functools.cache
def route_mtmd_logs(mtmd: Any, lib: Any) -> tuple:
    """libmtmd (images, webui/loaders/gguf_vision.py) logs through a callback of its own,
    to stderr by default, a line per projector tensor: to the same router, once per
    process and kept alive for the same reason as above."""
    router = route_llama_logs(lib)
    callbacks = []
    for setter in (mtmd.mtmd_log_set, mtmd.mtmd_helper_log_set):
        callback = setter.argtypes[0](router._receive)
        setter(callback, ctypes.c_void_p(0))
        callbacks.append(callback)
    return tuple(callbacks)
