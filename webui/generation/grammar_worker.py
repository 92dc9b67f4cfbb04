"""Grammars are compiled and checked in a child process, never first in the server.

llguidance is native code: a grammar it cannot handle may crash it (a stack overflow
is a SIGSEGV, not an exception), and the GBNF converter can spend seconds on one
grammar.  Every grammar text is therefore compiled first by a small child process
(`python -m webui.generation.grammar_worker`) that reads one JSON request per line
and writes one JSON answer per line.  The child compiles on a thread whose stack is
CHILD_STACK, smaller than the server's threads get (8 MiB by default): a grammar the
child compiled without overflowing compiles within the server's larger stack too,
when the engine builds its matcher (webui/generation/samplers/grammar.py).  Matching
during decoding does not recurse over the rules (llguidance's Earley parser keeps
its items in flat tables; a lexer's regex nesting is bounded by llguidance itself).

A child that dies (a signal) or overruns its time is replaced by a fresh one on the
next request; the request that did it gets a reason, and the server keeps serving.
The child also limits its own address space, so a compile that asks for gigabytes
fails there.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CHILD_STACK = 2 * 1024 * 1024  # bytes of stack for the compile thread in the child
CHILD_MEMORY = 3 * 1024**3  # address space the child may use (RLIMIT_AS)
COMPILE_SECONDS = 10.0  # one grammar's compile, in the child, wall clock
WORKERS = 2  # children at most: one slow compile does not hold up every other
MAX_ANSWER = 64 * 1024 * 1024  # bytes of one answer line (a compiled grammar)

# Flexible whitespace off for JSON schemas (webui/generation/grammar_compile.py says why).
JSON_DEFAULTS = {"whitespace_flexible": False}


@dataclass(frozen=True)
class Compiled:
    """A grammar text's outcome: llguidance's grammar definition, or why there is none."""

    grammar: str | None
    problem: str | None


class WorkerFailed(RuntimeError):
    """The child could not answer: it died, overran its time, or could not start.
    `lasting`: the same grammar would fail the same way again (it crashed the child)."""

    def __init__(self, message: str, lasting: bool = False):
        super().__init__(message)
        self.lasting = lasting


# -- the child -----------------------------------------------------------------------
def _compile_in_child(kind: str, text: str, matcher_tokenizer) -> Compiled:
    from llguidance import LLMatcher, grammar_from

    try:
        if kind == "json_schema":
            grammar = LLMatcher.grammar_from_json_schema(text, defaults=JSON_DEFAULTS)
        else:
            # GBNF or Lark, told apart by llguidance's converter; a regex is Lark: start: /[0-9]+/
            grammar = grammar_from("grammar", text)
    except ValueError as exc:
        return Compiled(None, first_lines(str(exc)) or "the grammar cannot be read")
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        return Compiled(None, first_lines(messages[0] if messages else "the grammar is invalid"))
    # A grammar no text satisfies (`root ::= a`, `a ::= a`) is valid to llguidance, and
    # a reply under it would end at once, matching nothing: ask for the first step.
    matcher = LLMatcher(matcher_tokenizer, grammar, log_level=0)
    matcher.compute_bitmask()
    if matcher.is_error() and not matcher.is_accepting():
        error = matcher.get_error()
        if "NoExtensionBias" in error:
            return Compiled(None, "the grammar matches nothing: no text can satisfy it")
        return Compiled(None, first_lines(error))
    return Compiled(grammar, None)


class _Bytes:
    """A vocabulary of the 256 bytes and an end token: enough to ask a grammar what
    may come first, without a model."""

    eos_token_id = 256
    bos_token_id = None
    tokens = [bytes([i]) for i in range(256)] + [b"</s>"]
    special_token_ids = [256]

    def __call__(self, text):
        return list(text if isinstance(text, bytes) else text.encode("utf-8"))


def child_main() -> None:
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
    except (ValueError, OSError):
        pass  # a lower limit is already set: keep it
    from llguidance import LLTokenizer, TokenizerWrapper

    tokenizer = LLTokenizer(TokenizerWrapper(_Bytes()))
    threading.stack_size(CHILD_STACK)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    for line in source:
        request = json.loads(line)
        answer: list[Compiled] = []

        def run(request=request, answer=answer) -> None:
            try:
                answer.append(_compile_in_child(request["kind"], request["text"], tokenizer))
            except MemoryError:
                answer.append(Compiled(None, "compiling the grammar needs more memory than a grammar may use"))
            except RecursionError:
                answer.append(Compiled(None, "the grammar is nested too deeply"))

        thread = threading.Thread(target=run, name="grammar-compile")
        thread.start()
        thread.join()
        result = answer[0] if answer else Compiled(None, "the grammar could not be compiled")
        sink.write(json.dumps({"grammar": result.grammar, "problem": result.problem}).encode() + b"\n")
        sink.flush()


def first_lines(message: str, limit: int = 400) -> str:
    # llguidance's messages may quote the whole grammar; the start says what is wrong.
    message = " ".join(line.strip() for line in message.splitlines() if line.strip())
    return message if len(message) <= limit else message[: limit - 1] + "…"


# -- the server's side ---------------------------------------------------------------
class CompileWorker:
    """One child process, used by one thread at a time (CompilePool hands it out)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._buffer = b""

    def compile(self, kind: str, text: str, seconds: float) -> Compiled:
        process = self._started()
        try:
            process.stdin.write(json.dumps({"kind": kind, "text": text}).encode() + b"\n")
            process.stdin.flush()
            line = self._read_line(process, time.monotonic() + seconds)
        except (OSError, ValueError) as exc:
            self._stop()
            raise WorkerFailed(f"the grammar compiler stopped ({exc})") from None
        answer = json.loads(line)
        return Compiled(answer["grammar"], answer["problem"])

    def _started(self) -> subprocess.Popen:
        if self._process is not None and self._process.poll() is None:
            return self._process
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "webui.generation.grammar_worker"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, close_fds=True,
            )
        except OSError as exc:
            raise WorkerFailed(f"the grammar compiler could not start ({exc})") from None
        self._buffer = b""
        return self._process

    def _read_line(self, process: subprocess.Popen, deadline: float) -> bytes:
        fd = process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self._stop()
                raise WorkerFailed("compiling the grammar took too long")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                code = process.wait()
                self._stop()
                cause = f"signal {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() \
                    else f"exit status {code}"
                log.warning("the grammar compiler died (%s); a new one starts for the next grammar", cause)
                raise WorkerFailed(f"the grammar crashed the compiler ({cause}); it is probably nested too deeply",
                                   lasting=True)
            self._buffer += chunk
            if len(self._buffer) > MAX_ANSWER:
                self._stop()
                raise WorkerFailed("the compiled grammar is too large")
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _stop(self) -> None:
        process, self._process = self._process, None
        self._buffer = b""
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def close(self) -> None:
        self._stop()


class CompilePool:
    """Up to WORKERS children, started on first use; a caller waits for a free one."""

    def __init__(self, size: int = WORKERS):
        self._free: queue.LifoQueue[CompileWorker] = queue.LifoQueue()
        for _ in range(size):
            self._free.put(CompileWorker())

    def compile(self, kind: str, text: str, seconds: float | None = None) -> Compiled:
        worker = self._free.get()
        try:
            return worker.compile(kind, text, COMPILE_SECONDS if seconds is None else seconds)
        finally:
            self._free.put(worker)


if __name__ == "__main__":
    child_main()
