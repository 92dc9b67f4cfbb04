"""The llama.cpp worker process: one per loaded GGUF model, started by
webui/loaders/gguf_process.py as `python -m webui.loaders.gguf_worker FD`.

It loads the model exactly as the in-process loader does (gguf_loader.open_backend,
the same LlamaCppBackend) and answers the server's commands over the socket FD, one at
a time, in order:

    ("start", ids, reuse, vision, steer) -> (seq, cached_tokens); the prompt's logits row in shared row 0
    ("images", text, images) -> (ids, key, spans) of the prompt with its images (a vision model)
    ("step", seqs, tokens)  -> None; one logits row per sequence in shared rows 0..n-1
    ("finish", seq, keep)   -> None
    ("clear",)              -> None
    ("embed", batch)        -> a float32 array [len(batch), hidden]
    ("close",)              -> None, then the process exits

Each answer is ("ok", value) or ("error", class name, message, param).  Logits do not travel
in the messages: the server sends a shared memory file (a memfd, SCM_RIGHTS) right
after ("ready", ...), sized max_batch x vocab float32, and LlamaCppBackend writes the
rows straight into it (LlamaCppBackend.rows_out): a step is one small message each way
plus the one copy out of llama.cpp's buffer the in-process path makes anyway.

Log records (llama.cpp's lines included, webui/loaders/llama_logs.py) travel to the
server as ("log", logger, level, text) at the levels the server's loggers had when it
started the worker, so the server's log looks as it did with llama.cpp in process.

The process ends when the socket closes (the server exited or was killed: no orphan
keeps the model's memory) and when its parent process changes (checked every second,
for the time a long llama_decode keeps it from reading).  PR_SET_PDEATHSIG is not
used: it fires when the *thread* that started the process ends, and the server starts
workers from short-lived threads (a reload after a crash).

Test-only fault injection (tests/test_gguf_worker.py): WEBUI_GGUF_WORKER_FAULT makes the
worker crash on purpose, to prove that a crash inside llama.cpp ends only this process:

    segfault-after-steps:N   SIGSEGV on the N+1th step command (after N steps)
    segfault-at-load         SIGSEGV before the model is loaded
    exit-after-steps:N       exit with status 3 instead of a signal

A trailing "@PATH" arms the fault only while the file PATH exists, and the worker
deletes it as it fires: the worker started after the crash runs clean.
"""

from __future__ import annotations

import logging
import mmap
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.connection import Connection
from types import SimpleNamespace
from typing import Any

FAULT_ENV = "WEBUI_GGUF_WORKER_FAULT"


class Fault:
    """The crash WEBUI_GGUF_WORKER_FAULT asks for (see the module docstring)."""

    def __init__(self, spec: str):
        spec, _, self.arm = spec.partition("@")
        kind, _, count = spec.partition(":")
        self.kind = kind.strip()
        self.after = int(count) if count.strip() else 0
        self.steps = 0

    @classmethod
    def from_env(cls) -> Fault | None:
        spec = os.environ.get(FAULT_ENV, "").strip()
        return cls(spec) if spec else None

    def _armed(self) -> bool:
        if not self.arm:
            return True
        try:
            os.unlink(self.arm)  # whoever removes it fires, once
        except FileNotFoundError:
            return False
        return True

    def at_load(self) -> None:
        if self.kind == "segfault-at-load" and self._armed():
            os.kill(os.getpid(), signal.SIGSEGV)

    def at_step(self) -> None:
        if self.kind not in ("segfault-after-steps", "exit-after-steps"):
            return
        self.steps += 1
        if self.steps > self.after and self._armed():
            if self.kind == "exit-after-steps":
                os._exit(3)
            os.kill(os.getpid(), signal.SIGSEGV)


class Channel:
    """The socket to the server: pickled messages (multiprocessing's framing), sent under
    a lock because llama.cpp may log from another thread while a reply is being sent."""

    def __init__(self, fd: int):
        self.sock = socket.socket(fileno=fd)
        self.conn = Connection(os.dup(fd))
        self._lock = threading.Lock()

    def send(self, message: Any) -> None:
        with self._lock:
            self.conn.send(message)

    def recv(self) -> Any:
        return self.conn.recv()


class Forward(logging.Handler):
    """Every log record of this process, to the server's logger of the same name."""

    def __init__(self, channel: Channel):
        super().__init__()
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.channel.send(("log", record.name, record.levelno, text))
        except Exception:  # noqa: S110 - the server is gone; the next recv ends this process
            pass


def watch_parent(parent: int) -> None:
    """End this process once its parent is gone, even inside a long llama_decode."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def setup_logging(channel: Channel, levels: dict[str, int]) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(Forward(channel))
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)


def load(config: dict[str, Any]):
    from webui.loaders.gguf_loader import import_llama_cpp, open_backend

    lib = import_llama_cpp()
    info = SimpleNamespace(context_length=config["context_length"], chat_template=None)
    return open_backend(lib, config["name"], config["file"], info, config["options"], config["serving"],
                        chat_template="", projector=config.get("projector"))


def serve(channel: Channel, backend: Any, rows: Any, fault: Fault | None) -> None:
    slots: dict[int, Any] = {}
    while True:
        try:
            message = channel.recv()
        except (EOFError, OSError):
            return  # the server closed the socket or died
        op = message[0]
        try:
            value = None
            if op == "step":
                if fault is not None:
                    fault.at_step()
                backend.step([slots[seq] for seq in message[1]], message[2])
            elif op == "start":
                vision, steer = message[3], message[4]
                extra = {"vision": vision} if vision else {}
                if steer is not None:
                    extra["steer"] = steer
                slot = backend.start(message[1], reuse=message[2], **extra)
                slots[slot.seq] = slot
                value = (slot.seq, slot.cached_tokens)
            elif op == "images":
                prompt = backend.encode_images(message[1], message[2])
                value = (prompt.ids, prompt.key, prompt.spans)  # the images stay with the server
            elif op == "finish":
                slot = slots.pop(message[1], None)
                if slot is not None:
                    backend.finish(slot, keep=message[2])
            elif op == "clear":
                backend.clear_cache()
            elif op == "embed":
                value = backend.embed(message[1]).numpy()
            elif op == "close":
                backend.rows_out = None
                backend.close()
                channel.send(("ok", None))
                return
            else:
                raise ValueError(f"unknown command {op!r}")
        except Exception as exc:
            channel.send(("error", exc.__class__.__name__, str(exc), getattr(exc, "param", None)))
        else:
            channel.send(("ok", value))


def main(argv: list[str]) -> int:
    # Ctrl+C in the terminal reaches every process of the group: the server decides
    # when this one ends (it closes the socket), not the keyboard.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = Channel(int(argv[0]))
    threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True, name="parent-watch").start()
    try:
        config = channel.recv()
    except (EOFError, OSError):
        return 0
    setup_logging(channel, config["levels"])
    fault = Fault.from_env()
    if fault is not None:
        fault.at_load()
    try:
        backend = load(config)
    except Exception as exc:
        channel.send(("error", exc.__class__.__name__, str(exc)))
        return 0
    import numpy as np

    vocab, rows = backend.vocab_size(), backend.capabilities.max_batch
    channel.send(("ready", {"capabilities": backend.capabilities, "vocab": vocab, "n_ctx": backend.n_ctx,
                            "n_batch": backend.n_batch, "pid": os.getpid(),
                            "image_marker": getattr(backend.tokenizer, "image_marker", None)}))
    try:
        _, fds, _, _ = socket.recv_fds(channel.sock, 1, 1)
    except (EOFError, OSError):
        return 0
    if not fds:
        return 0
    shared = mmap.mmap(fds[0], rows * vocab * 4)
    os.close(fds[0])
    backend.rows_out = np.frombuffer(shared, dtype=np.float32).reshape(rows, vocab)
    serve(channel, backend, backend.rows_out, fault)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
