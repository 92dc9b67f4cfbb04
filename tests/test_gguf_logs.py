"""llama.cpp says nothing on stderr at the default log level except warnings and errors.

Each case runs in a fresh interpreter so that what reaches file descriptor 2 (where
llama.cpp's C code writes, below Python) is captured whole.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.gguf_fixtures import Q8, require_llama_cpp
from webui.settings import PROJECT_ROOT

# Load the tiny GGUF, read a prompt, decode a few tokens, unload.  argv: file, n_ctx,
# and the level to give the "llama.cpp" logger ("" = the default).
SCRIPT = r"""
import logging, sys
from pathlib import Path
from webui.loaders.gguf_loader import LlamaCppLoader
from webui.loaders.gguf_options import LlamaCppOptions

path, n_ctx, level = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if level:
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    logging.getLogger("llama.cpp").setLevel(level)
loader = LlamaCppLoader()
loaded = loader.load(path.name, path, LlamaCppOptions(n_ctx=n_ctx))
backend = loaded.backend
slot = backend.start(loaded.tokenizer("Once upon a time")["input_ids"])
token = int(slot.logits.argmax())
for _ in range(4):
    token = int(backend.step([slot], [token]).argmax())
backend.finish(slot, keep=False)
loader.unload(loaded)
print("done")
"""


def run_load(path, n_ctx=0, level=""):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(path), str(n_ctx), level],
                          capture_output=True, text=True, env=env, timeout=240, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr[-3000:]
    return done.stderr


def test_a_load_and_a_reply_print_nothing_at_the_default_level(gguf_root):
    require_llama_cpp()
    assert run_load(gguf_root / Q8) == ""


def test_the_lines_are_logged_at_their_own_level_when_asked_for(gguf_root):
    require_llama_cpp()
    # At INFO the load's lines come through Python logging, one record per line, named.
    lines = run_load(gguf_root / Q8, level="INFO").splitlines()
    assert len(lines) > 50 and all(line.startswith("llama.cpp ") for line in lines)
    assert any(line.startswith("llama.cpp INFO llama_model_loader: loaded meta data") for line in lines)
    assert not any(" DEBUG " in line for line in lines)
    # At WARNING (the default's level, with a handler that names it): no INFO line.
    assert all(" INFO " not in line for line in run_load(gguf_root / Q8, level="WARNING").splitlines())


def test_a_warning_still_reaches_stderr(gguf_root):
    require_llama_cpp()
    # A context beyond the 512 tokens the model was trained on makes llama.cpp warn.
    lines = run_load(gguf_root / Q8, n_ctx=1024).splitlines()
    assert len(lines) == 1 and "n_ctx_seq (1024) > n_ctx_train (512)" in lines[0], lines


def test_pieces_are_joined_into_lines_at_the_level_that_began_them():
    import logging

    from webui.loaders.llama_logs import GGML_CONT, LlamaLogRouter

    class Lib:  # only the two calls the router makes at start; the lines are fed directly
        llama_log_callback = staticmethod(lambda function: function)

        @staticmethod
        def llama_log_set(callback, user_data):
            Lib.installed = callback

    records: list[tuple[int, str]] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append((record.levelno, record.getMessage()))

    logger = logging.getLogger("test.llama.cpp.router")
    logger.setLevel(logging.INFO)
    logger.addHandler(Keep())
    router = LlamaLogRouter(Lib, logger)
    assert Lib.installed == router._receive
    router.feed(3, "low memory: ")
    router.feed(GGML_CONT, "40 MiB\nsecond line\n")
    router.feed(1, "a debug line\n")  # below the logger's level
    router.feed(2, "unfinished")
    router.feed(4, "failed\n")
    Lib.installed(2, b"bytes \xff\n", None)
    assert records == [(logging.WARNING, "low memory: 40 MiB"), (logging.WARNING, "second line"),
                       (logging.INFO, "unfinished"), (logging.ERROR, "failed"), (logging.INFO, "bytes \ufffd")]
