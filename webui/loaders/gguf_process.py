"""A GGUF model served by a llama.cpp worker process: a native crash ends only the worker.

llama.cpp is C++: a segmentation fault inside llama_decode (a CPU path that is broken
on some machine, a bad file, a bug) would end whichever process runs it.  So the
server does not run it: each loaded GGUF model gets a worker process
(webui/loaders/gguf_worker.py) that loads it with the same code as before and runs
the same LlamaCppBackend, and this class, in the server, is the Backend the engine
drives (webui/generation/backend.py).  The engine keeps everything above the logits
(batching, sampler chain, grammar, stop strings) on this side of the boundary; a step
is one small message each way, and the logits rows come through shared memory.

Each sequence is mirrored here (its id in the worker and how many tokens it holds), so
`can_admit` needs no round trip.  The tokenizer is llama.cpp's too, over a
`vocab_only` load of the same file in this process (no weights, no context), made
only after the worker has loaded the file: a file that crashes llama.cpp at load
crashes the worker, and the load fails with a LoadError.

When the worker dies during a call, the call raises BackendCrashed: the engine ends
the requests that were running with its message, and the worker is started again in
the background (the model reloaded) so that the next request is answered.  The log
says so in one ERROR line, and `status_note` tells the Model tab.  A worker that dies
RESTART_LIMIT times within RESTART_WINDOW seconds is not restarted again: the model
reports itself failed, with why, until it is loaded again.
"""

from __future__ import annotations

import logging
import mmap
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from webui.generation.backend import BackendCrashed, Capabilities, OutOfMemory, ServingOptions
from webui.errors import AppError
from webui.generation.request import GenerationError, PromptError
from webui.loaders.base import LoadError
from webui.loaders.gguf_backend import NO_EMBEDS, NO_GUIDANCE, admits

log = logging.getLogger(__name__)

RESTART_LIMIT = 3  # crashes within RESTART_WINDOW after which the worker is not restarted
RESTART_WINDOW = 60.0
CLOSE_SECONDS = 10.0  # a worker told to close is killed after this long
REAP_SECONDS = 5.0  # how long a worker whose socket closed may take to exit before it is killed
# What each command was doing, for the message when the worker dies during it.
DOING = {"start": "reading a prompt", "step": "decoding", "embed": "computing embeddings", "images": "reading images",
         "finish": "releasing a sequence", "clear": "clearing the prefix cache"}
ERRORS = {"OutOfMemory": OutOfMemory, "GenerationError": GenerationError, "LoadError": LoadError,
          "PromptError": PromptError}


def how_it_ended(code: int | None) -> str:
    """'SIGSEGV', 'exit status 3': how a worker process ended."""
    if code is None:
        return "no exit status"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


class WorkerSlot:
    """One sequence, as the server sees it: its id in the worker and the tokens it holds."""

    __slots__ = ("seq", "fed", "cached_tokens", "logits", "done", "life")

    def __init__(self, seq: int, fed: int, cached_tokens: int, logits: torch.Tensor, life: int):
        self.seq = seq
        self.fed = fed
        self.cached_tokens = cached_tokens
        self.logits = logits
        self.done = False
        self.life = life  # which worker it lives in: a slot of a dead worker is gone


class Worker:
    """One worker process, its socket and the shared rows it writes logits into."""

    def __init__(self, process: subprocess.Popen, sock: socket.socket):
        self.process = process
        self.sock = sock
        self.conn = Connection(os.dup(sock.fileno()))
        self.shared: mmap.mmap | None = None
        self.rows: np.ndarray | None = None
        self.ready: dict[str, Any] = {}

    def share_rows(self, rows: int, vocab: int) -> None:
        """Make the logits memory and hand it to the worker (SCM_RIGHTS)."""
        size = rows * vocab * 4
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("webui-gguf-logits", os.MFD_CLOEXEC)
        else:  # an unlinked temporary file does the same where memfd does not exist
            import tempfile

            handle = tempfile.TemporaryFile()  # noqa: SIM115 - only its descriptor is kept
            fd = os.dup(handle.fileno())
            handle.close()
        try:
            os.ftruncate(fd, size)
            self.shared = mmap.mmap(fd, size)
            socket.send_fds(self.sock, [b"m"], [fd])
        finally:
            os.close(fd)
        self.rows = np.frombuffer(self.shared, dtype=np.float32).reshape(rows, vocab)

    def reap(self, seconds: float) -> int | None:
        """The exit code, killing the process if it has not ended within `seconds`."""
        try:
            return self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def stop(self) -> None:
        """Ask the worker to close (it frees the model), then make sure it has ended."""
        if self.process.poll() is None:
            try:
                self.conn.send(("close",))
            except OSError:
                pass
            self.reap(CLOSE_SECONDS)
        self.release()

    def release(self) -> None:
        self.rows = None
        for close in (self.conn.close, self.sock.close):
            try:
                close()
            except OSError:
                pass
        if self.shared is not None:
            self.shared.close()
            self.shared = None


class LlamaCppWorker:
    """The engine's Backend for a GGUF model whose llama.cpp runs in a worker process."""

    def __init__(self, name: str, file: Path, info: Any, options: Any, serving: ServingOptions,
                 projector: Path | None = None):
        self.name = name
        self.file = file
        self.projector = projector  # the image projector the worker loads with the model
        self._context_length = info.context_length
        self._chat_template = info.chat_template
        self._options = options
        self._serving = serving
        self.device = "cpu"  # where the engine keeps logits and token ids
        self.tokenizer: Any = None
        self.capabilities: Capabilities = Capabilities()
        self.n_ctx = 0
        self._vocab = 0
        self._lib: Any = None
        self._vocab_model: Any = None
        self._call_lock = threading.RLock()  # one command in flight on the socket
        self._state = threading.Lock()  # the fields below
        self._worker: Worker | None = None
        self._launching: Worker | None = None
        self._reloader: threading.Thread | None = None
        self._life = 0
        self._running: dict[int, WorkerSlot] = {}
        self._crashes: deque[float] = deque()
        self._restarts = 0
        self._last_crash: tuple[str, float] | None = None
        self._failed: str | None = None
        self._closed = False

    @classmethod
    def spawn(cls, name: str, file: Path, info: Any, options: Any, serving: ServingOptions,
              projector: Path | None = None) -> LlamaCppWorker:
        """Start the worker, wait until it has loaded the model, then read the tokenizer
        here; raises LoadError (the worker's own, or how it died) and leaves nothing."""
        self = cls(name, file, info, options, serving, projector)
        worker = self._launch()
        try:
            self._worker = worker
            ready = worker.ready
            self.capabilities, self.n_ctx, self._vocab = ready["capabilities"], ready["n_ctx"], ready["vocab"]
            self.tokenizer = self._vocab_tokenizer()
            self.tokenizer.image_marker = ready.get("image_marker")
        except BaseException:
            worker.stop()
            self._free_vocab()
            raise
        return self

    # -- the worker process ----------------------------------------------------------
    def _launch(self) -> Worker:
        """Start a worker process and wait until it has loaded the model and holds the
        shared rows; raises LoadError (its own, or how the process died)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        root = str(Path(__file__).resolve().parents[2])  # the worker imports this very webui
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        try:
            process = subprocess.Popen(  # noqa: S603 - our own module, with this interpreter
                [sys.executable, "-m", "webui.loaders.gguf_worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=2, env=env)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        worker = Worker(process, ours)
        with self._state:
            self._launching = worker
            closed = self._closed
        try:
            if closed:
                raise LoadError(f"{self.name}: the model was unloaded")
            levels = {"": logging.getLogger().getEffectiveLevel(),
                      "llama.cpp": logging.getLogger("llama.cpp").getEffectiveLevel()}
            worker.conn.send({"name": self.name, "file": self.file, "context_length": self._context_length,
                              "options": self._options, "serving": self._serving, "levels": levels,
                              "projector": self.projector})
            reply = self._receive(worker)
            if reply[0] == "error":
                raise LoadError(reply[2]) if reply[1] == "LoadError" else LoadError(f"{self.name}: {reply[2]}")
            worker.ready = reply[1]
            worker.share_rows(worker.ready["capabilities"].max_batch, worker.ready["vocab"])
        except (EOFError, OSError):
            how = how_it_ended(worker.reap(REAP_SECONDS))
            worker.release()
            raise LoadError(f"{self.name}: llama.cpp stopped ({how}) while loading {self.file.name}; the file may "
                            "be damaged, or this llama.cpp build cannot run it on this machine") from None
        except BaseException:
            worker.stop()
            raise
        finally:
            with self._state:
                self._launching = None
        return worker

    def _receive(self, worker: Worker) -> Any:
        """The worker's next answer; its log records on the way go to our loggers."""
        while True:
            message = worker.conn.recv()
            if isinstance(message, tuple) and message[0] == "log":
                _, name, level, text = message
                logger = logging.getLogger(name)
                if logger.isEnabledFor(level):
                    logger.log(level, "%s", text)
                continue
            return message

    def _vocab_tokenizer(self):
        from webui.loaders.gguf_loader import LlamaCppLoader, import_llama_cpp
        from webui.loaders.gguf_tokenizer import GGUFTokenizer

        lib = self._lib = import_llama_cpp()
        lib.llama_backend_init()
        params = LlamaCppLoader._model_params(lib, self._options, vocab_only=True)
        self._vocab_model = lib.llama_model_load_from_file(str(self.file).encode(), params)
        if not self._vocab_model:
            raise LoadError(f"{self.name}: llama.cpp could not read the vocabulary of {self.file.name}")
        return GGUFTokenizer(lib, self._vocab_model, self._chat_template)

    def _free_vocab(self) -> None:
        if self._vocab_model:
            self._lib.llama_model_free(self._vocab_model)
            self._vocab_model = None

    def _usable(self) -> Worker:
        """The worker to send a command to: after a reload that is under way, if any."""
        reloader = self._reloader
        if reloader is not None:
            reloader.join()
        with self._state:
            if self._closed:
                raise GenerationError(f"{self.name} was unloaded")
            if self._failed is not None:
                raise BackendCrashed(f"{self.name} is not available: {self._failed}")
            if self._worker is None:  # never expected: a reload either sets it or says why not
                raise BackendCrashed(f"{self.name} is not available: its llama.cpp worker is not running")
            return self._worker

    def _call(self, op: str, *args: Any) -> Any:
        with self._call_lock:
            worker = self._usable()
            try:
                worker.conn.send((op, *args))
                reply = self._receive(worker)
            except (EOFError, OSError):
                raise self._crashed(worker, DOING.get(op, op)) from None
        if reply[0] == "error":
            _, kind, message, param = reply
            error = ERRORS.get(kind, RuntimeError)
            if issubclass(error, AppError):  # the worker's own error, its field kept
                raise error(message, param=param)
            raise error(message)
        return reply[1]

    def _crashed(self, worker: Worker, doing: str) -> BackendCrashed:
        """The worker died during a call: forget its sequences, restart it unless it keeps
        dying, log it once, and return the error for the requests that were running."""
        how = how_it_ended(worker.reap(REAP_SECONDS))
        worker.release()
        now = time.monotonic()
        with self._state:
            self._worker = None
            self._life += 1
            for slot in self._running.values():
                slot.done = True
            self._running.clear()
            self._crashes.append(now)
            while self._crashes and now - self._crashes[0] > RESTART_WINDOW:
                self._crashes.popleft()
            self._last_crash = (how, time.time())
            if len(self._crashes) >= RESTART_LIMIT:
                self._failed = (f"the llama.cpp worker stopped {len(self._crashes)} times within "
                                f"{RESTART_WINDOW:.0f} seconds (last: {how} while {doing}); it is not restarted "
                                "again: load the model again to retry")
                log.error("%s: %s", self.name, self._failed)
                return BackendCrashed(f"the llama.cpp worker stopped ({how}) while {doing}; {self._failed}")
            self._restarts += 1
            self._reloader = threading.Thread(target=self._reload, daemon=True, name="llama.cpp-reload")
            self._reloader.start()
        log.error("%s: the llama.cpp worker stopped (%s) while %s; reloading the model", self.name, how, doing)
        return BackendCrashed(f"the llama.cpp worker stopped ({how}) while {doing}; the model is being reloaded")

    def _reload(self) -> None:
        try:
            worker = self._launch()
            if worker.ready["vocab"] != self._vocab or worker.ready["n_ctx"] != self.n_ctx:
                worker.stop()
                raise LoadError(f"{self.file.name} changed on disk")
        except Exception as exc:
            with self._state:
                if not self._closed:
                    self._failed = f"the llama.cpp worker could not be restarted: {exc}"
            log.error("%s: the llama.cpp worker could not be restarted: %s", self.name, exc)
            return
        with self._state:
            if not self._closed:
                self._worker, worker = worker, None
        if worker is not None:  # unloaded meanwhile
            worker.stop()
            return
        log.warning("%s: the llama.cpp worker was restarted and the model reloaded", self.name)

    # -- what the Model tab shows ----------------------------------------------------
    @property
    def status_note(self) -> str | None:
        """How the worker has fared, when it is worth saying (None while all is well)."""
        with self._state:
            if self._failed is not None:
                return f"llama.cpp worker failed: {self._failed}"
            if self._last_crash is None:
                return None
            how, at = self._last_crash
            times = f"{self._restarts} time{'s' if self._restarts != 1 else ''}"
            reloading = self._reloader is not None and self._reloader.is_alive()
            return (f"llama.cpp worker restarted after {how} at {datetime.fromtimestamp(at):%H:%M:%S} ({times})"
                    + ("; reloading the model now" if reloading else ""))

    @property
    def pid(self) -> int | None:
        worker = self._worker
        return worker.process.pid if worker is not None else None

    # -- the Backend protocol --------------------------------------------------------
    def vocab_size(self) -> int:
        return self._vocab

    def eos_ids(self) -> set[int]:
        return set(self.tokenizer.eog_ids)

    def can_admit(self, running: int, prompt_tokens: int, new_tokens: int) -> bool:
        used = sum(slot.fed for slot in self._running.values())
        return admits(self.capabilities.max_batch, self.n_ctx, used, running, prompt_tokens + new_tokens)

    def guidance_processor(self, scale: float, negative_ids: list[int]):
        raise GenerationError(NO_GUIDANCE)

    def encode_images(self, text: str, images: tuple):
        from webui.generation.vision import VisionPrompt

        ids, key, spans = self._call("images", text, tuple(images))
        return VisionPrompt(ids, key, spans, tuple(images), {"text": text})

    def start(self, ids: list[int], embeds: torch.Tensor | None = None, reuse: bool = True,
              vision=None, steer=None) -> WorkerSlot:
        if embeds is not None:
            raise GenerationError(NO_EMBEDS)
        with self._call_lock:
            seq, cached = self._call("start", list(ids), reuse, vision, steer)
            worker = self._worker
            slot = WorkerSlot(seq, len(ids), cached, torch.from_numpy(worker.rows[:1].copy()), self._life)
            self._running[seq] = slot
        return slot

    def step(self, slots: list[WorkerSlot], tokens: list[int]) -> torch.Tensor:
        with self._call_lock:
            if any(slot.life != self._life for slot in slots):
                raise BackendCrashed("the llama.cpp worker was restarted: this sequence is gone")
            self._call("step", [slot.seq for slot in slots], list(tokens))
            rows = torch.from_numpy(self._worker.rows[: len(slots)].copy())
        for slot in slots:
            slot.fed += 1
        return rows

    def finish(self, slot: WorkerSlot, keep: bool) -> None:
        with self._call_lock:
            if slot is None or slot.done or slot.life != self._life or self._running.get(slot.seq) is not slot:
                return  # finished already, or it died with its worker
            slot.done = True
            del self._running[slot.seq]
            self._call("finish", slot.seq, keep)

    def clear_cache(self) -> None:
        self._call("clear")

    def embed(self, batch: list[list[int]]) -> torch.Tensor:
        return torch.from_numpy(self._call("embed", [list(ids) for ids in batch]))

    def close(self) -> None:
        """Tell the worker to close, wait for it (then kill it), free the vocabulary."""
        with self._state:
            if self._closed:
                return
            self._closed = True
            launching = self._launching
        if launching is not None:  # a reload under way: its process goes at once
            launching.process.kill()
        reloader = self._reloader
        if reloader is not None:
            reloader.join(CLOSE_SECONDS)
        with self._call_lock, self._state:
            worker, self._worker = self._worker, None
            self._running.clear()
        if worker is not None:
            worker.stop()
        self._free_vocab()
