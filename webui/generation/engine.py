"""Prompt -> stream of text pieces, for many requests at once.

One long-lived model thread runs a step loop (continuous batching): between steps it
admits waiting requests (round-robin across owners, webui/generation/scheduler.py) and
drops finished ones, and each step decodes one token for every running request in a
single batched call to the backend (webui/generation/backend.py).  A long new prompt
beside running requests is read a piece at a time between steps (`_prefill`), and a
request decoding alone may check tokens drafted from its context in one step
(webui/generation/speculative.py); neither changes a reply.  Everything else is
per request and lives in its `_Sequence`: its sampler chain and random generator, stop
strings, incremental decoder, log-probabilities, cancel token and token budget.  So a
request behaves the same alone or beside others, and Stop in one browser tab ends only
that tab's request, within one step.

The thread holds the model (ModelManager.use) while any request runs, so a model is
never swapped under a stream; a load that is waiting stops new admissions, the running
requests finish, and the load goes ahead.
"""

from __future__ import annotations

import atexit
import copy
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch

from webui.errors import AppError
from webui.generation import token_probs
from webui.generation.backend import Backend, BackendCrashed, OutOfMemory
from webui.generation.chain import build_chain
from webui.generation.detok import IncrementalDecoder
from webui.generation.reasoning import ThinkingFormat, ThinkingGate
from webui.generation.embedding import BATCH_TOKENS, STEP_TOKENS, EmbeddingJob
from webui.generation.grammar_compile import constraint_of
from webui.generation.samplers.grammar import GrammarState, GrammarTokenizers, GrammarUnsupported
from webui.generation.params import MAX_SEED, ParamsError
from webui.generation.request import (
    CancelToken,
    CannotSee,
    FinishReason,
    GenerationError,
    GenerationRequest,
    GenerationStats,
    PromptError,
    QueueFull,
    RenderedPrompt,
    TokenLogprob,
    fit_prompt,
    prompt_ids,
    prompt_room,
)
from webui.generation.scheduler import FairQueue
from webui.generation.speculative import PromptLookup, draft_budget
from webui.generation.stops import StopStringFilter
from webui.model_manager import ModelBusy, ModelManager, NoModelLoaded
from webui.steer.library import VectorLibrary, steer_key
from webui.openmp import release_thread_pool

log = logging.getLogger(__name__)

# Idle this long after a batch, the model thread gives its OpenMP pool back, so that a
# job the model is lent to (training) or a load computes without a second pool beside
# it (webui/openmp.py).  Not after every batch: rebuilding the pool costs a short
# request about as much as its own compute.
POOL_IDLE_SECONDS = 1.0

__all__ = [
    "CancelToken", "GenerationEngine", "GenerationError", "GenerationRequest", "GenerationStats",
    "GenerationStream", "QueueFull", "TokenLogprob", "Waiting", "fit_prompt", "prompt_room",
]


def failure(exc: BaseException, what: str = "generation") -> AppError:
    """What a request that `exc` ended hears, as the object it raises at the edge
    (webui/errors.py): an AppError keeps its type, status and field (a refused grammar is
    a 400 naming it, a crashed backend a 503), one copy per request, since each reader
    raises it on its own thread; anything else is a server error naming the exception."""
    if isinstance(exc, AppError):
        return copy.copy(exc)
    return GenerationError(f"{what} failed: {exc.__class__.__name__}: {exc}")


@dataclass(frozen=True)
class Waiting:
    """A request still queued: `ahead` requests will be admitted before it."""

    ahead: int


class _Mailbox:
    """Hands text from the model thread to the reader, coalescing pieces.

    Waking the reader for every token costs the model CPU time on small machines (the
    reader's thread competes with torch's worker threads), so the reader takes
    whatever has accumulated at most once per `interval`: still ~50 smooth updates a
    second, and the first piece is never delayed.
    """

    def __init__(self, interval: float):
        self.interval = interval
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._finished = threading.Event()
        self._pieces: list[str] = []
        self._final: tuple[str, Any] | None = None
        # Set once the engine has decided about the request: admitted with its prompt read
        # and its values checked, or ended (webui/generation/engine.py GenerationStream.admitted).
        self._decided = threading.Event()

    def put_text(self, text: str) -> None:
        with self._lock:
            self._pieces.append(text)
        if not self._ready.is_set():  # set() takes a lock and notifies; skip when pending
            self._ready.set()

    def poke(self) -> None:
        """Wake the reader with no text (its place in the queue changed)."""
        self._ready.set()

    def finish(self, kind: str, value: Any) -> None:
        """End the request: ("done", stats or result) or ("error", the AppError to raise)."""
        with self._lock:
            self._final = (kind, value)
        self._finished.set()
        self._decided.set()
        self._ready.set()

    def decide(self) -> None:
        self._decided.set()

    def wait_decided(self, timeout: float | None = None) -> tuple[str, Any] | None:
        """Block until the request is admitted or ended; its end, if it has one."""
        self._decided.wait(timeout)
        with self._lock:
            return self._final

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def take(self, since_last: float) -> tuple[str, tuple[str, Any] | None]:
        """Block until something arrives; return (text, final-or-None)."""
        self._ready.wait()
        if since_last < self.interval:
            # Let a few more tokens collect, but wake at once when the request ends.
            self._finished.wait(self.interval - since_last)
        with self._lock:
            text, self._pieces = "".join(self._pieces), []
            final = self._final
            self._ready.clear()
        return text, final


class GenerationStream:
    """Iterate to get text pieces as they are decoded; `stats` is set at the end.

    `updates()` also yields Waiting(ahead) while the request is queued.  Leaving the
    loop early (a closed browser tab, a dropped HTTP client) cancels the request, so
    its place in the batch is freed within one decoding step.
    """

    def __init__(self, request: GenerationRequest, interval: float, engine: GenerationEngine):
        self.request = request
        self.stats: GenerationStats | None = None
        self.logprobs: list[TokenLogprob] = []
        self.new_tokens = 0
        self.prompt_tokens = 0  # set when admitted: usage can be counted for a reader that left early
        # The reply's thinking markers, set before its first piece (None: it does not think).
        self.thinking: ThinkingFormat | None = None
        self.started = False  # admitted into the batch
        self.queued_at = time.monotonic()
        self._engine = engine
        self._mailbox = _Mailbox(interval)

    @property
    def tokens_so_far(self) -> int:
        return self.new_tokens

    def ahead(self) -> int | None:
        """Requests that will be admitted before this one; None once it runs."""
        return None if self.started or self._mailbox.finished else self._engine.position(self)

    def updates(self) -> Iterator[str | Waiting]:
        last = float("-inf")
        shown: int | None = None
        try:
            while True:
                if not self.started:
                    ahead = self.ahead()
                    if ahead is not None and ahead != shown:
                        shown = ahead
                        yield Waiting(ahead)
                text, final = self._mailbox.take(time.monotonic() - last)
                if text:
                    last = time.monotonic()
                    yield text
                if final is None:
                    continue
                kind, value = final
                if kind == "error":
                    raise value if isinstance(value, AppError) else GenerationError(value)
                self.stats = value
                return
        finally:
            if self.stats is None:
                self.request.cancel.cancel()

    def admitted(self, timeout: float | None = None) -> None:
        """Block until the engine has admitted this request (its prompt read, its values
        checked against the model) or ended it, raising the AppError it ended with.  A
        streamed API reply waits for this before its first byte, so that a request the
        model refuses is a 4xx naming the field, not an error event inside a 200."""
        final = self._mailbox.wait_decided(timeout)
        if final is not None and final[0] == "error":
            value = final[1]
            raise copy.copy(value) if isinstance(value, AppError) else GenerationError(value)

    def __iter__(self) -> Iterator[str]:
        return (piece for piece in self.updates() if isinstance(piece, str))

    def text(self) -> str:
        """Consume the whole stream and return the reply."""
        return "".join(self)


def alone(backend: Backend, stream) -> bool:
    """Whether this request must decode in a batch of its own: it asks to be computed as
    it would be alone, and this backend's rows depend on what they are batched with."""
    return stream.request.params.deterministic and not backend.capabilities.batch_invariant


def apart(backend: Backend, stream, running: list) -> bool:
    """Whether this request must wait for the running ones to finish: the backend steers
    a whole batch at once (llama.cpp: one control vector per context) and they are
    steered differently."""
    if backend.capabilities.steer_rows or not running or isinstance(stream, EmbeddingJob):
        return False
    key = steer_key(stream.request.params.control_vectors)
    return any(steer_key(seq.request.params.control_vectors) != key for seq in running)


def thinking_keep(tokenizer, thinking: ThinkingFormat | None) -> dict[int, str]:
    """Special tokens that spell the thinking markers: shown, where other special tokens
    are left out of the text (gpt-oss's <|channel|>, <|message|>...)."""
    if thinking is None:
        return {}
    markers = thinking.markers
    specials = getattr(tokenizer, "all_special_tokens", None) or []
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    names = set(specials) | {str(token) for token in added.values()}
    keep = {}
    for name in names:
        if len(name) > 1 and any(name in marker for marker in markers):
            token = tokenizer.convert_tokens_to_ids(name)
            if isinstance(token, int) and token >= 0:
                keep[token] = name
    return keep


def thinking_gate(thinking: ThinkingFormat | None, params, grammar: bool) -> ThinkingGate | None:
    """The gate that follows a thinking reply: it counts the thinking tokens, and where a
    budget is to be kept or a grammar waits for the answer, it writes markers in."""
    if thinking is None:
        return None
    return ThinkingGate(thinking, params.thinking_budget, force_open=grammar and params.thinking_budget != 0)


class _Sequence:
    """A running request: everything decoding needs that belongs to it alone."""

    def __init__(self, stream: GenerationStream, backend: Backend, ids: list[int], max_new: int,
                 chain, stops: StopStringFilter, seed: int, generator: torch.Generator, dropped: int,
                 embeds: torch.Tensor | None, grammar: GrammarState | None = None,
                 thinking: ThinkingFormat | None = None, vision: Any = None):
        self.stream = stream
        self.vision = vision  # a VisionPrompt (webui/generation/vision.py) when the prompt has images
        self.steer = None  # its control vectors (webui/steer/library.py Steering), None when not steered
        self.request = stream.request
        self.owner = stream.request.owner
        self.chain = chain
        self.grammar = grammar
        self.stops = stops
        self.seed = seed
        self.generator = generator
        self.dropped = dropped
        self.embeds = embeds
        self.prompt_tokens = len(ids)
        self.max_new = max_new
        self.eos = backend.eos_ids()
        self.tokenizer = backend.tokenizer
        self.decoder = IncrementalDecoder(backend.tokenizer, ids, thinking_keep(backend.tokenizer, thinking))
        # A thinking reply followed token by token (webui/generation/reasoning.py).
        self.gate = thinking_gate(thinking, stream.request.params, grammar is not None)
        self.forced: list[int] = []  # tokens to write next instead of sampling (the gate's)
        if grammar is not None and self.gate is not None:
            grammar.paused = not self.gate.answering
        self.greedy = stream.request.params.greedy
        # Prompt and reply so far, for the samplers that look back (penalties, DRY...).
        self.ids = torch.zeros(1, len(ids) + max_new, dtype=torch.long, device=backend.device)
        self.ids[0, : len(ids)] = torch.tensor(ids)
        self.length = len(ids)
        self.prompt = ids
        self.slot: Any = None
        self.last_token = -1
        self.started = time.perf_counter()
        self.reason: FinishReason | None = None
        self.failure: AppError | None = None  # set when this request must end with an error
        self.queued_seconds = 0.0
        self.record: TokenLogprob | None = None  # the chosen token's probabilities, until accepted
        # Speculative decoding (webui/generation/speculative.py): tokens drafted per step.
        params = stream.request.params
        self.lookahead = draft_budget(params.prompt_lookup_num_tokens, params.deterministic, backend.capabilities)
        self.drafted = 0
        self.accepted = 0
        self.lookup = PromptLookup(ids) if self.lookahead > 0 else None

    def drafts(self) -> list[int]:
        """Tokens the context suggests come next (prompt lookup); [] for none."""
        room = self.max_new - self.stream.new_tokens - 1  # the step's own token is one more
        if self.lookup is None or room <= 0 or self.forced:
            return []
        return self.lookup.draft(min(self.lookahead, room))

    @property
    def plain_greedy(self) -> bool:
        """Greedy with nothing to run on the logits: its token is the batch's argmax."""
        return (self.greedy and not self.chain and self.request.logprobs is None
                and (self.gate is None or not self.gate.forces))

    def choose(self, logits: torch.Tensor) -> int:
        """Run this request's chain on its logits ([1, vocab]) and pick the next token."""
        if self.gate is not None:
            if not self.forced and (text := self.gate.wants()) is not None:
                self.forced = self.tokenizer.encode(text, add_special_tokens=False)
            if self.forced:
                return self.forced.pop(0)  # written by the gate: no sampling, no record
        scores = raw = logits.float()
        if self.chain:
            if self.request.token_detail:
                raw = scores.clone()  # the model's own distribution, whatever the chain does in place
            ids = self.ids[:, : self.length].to(scores.device)
            # Each step called directly: LogitsProcessorList.__call__ inspects every
            # processor's signature on every call, which costs more than most steps.
            for step in self.chain:
                scores = step(ids, scores)
        if self.grammar is not None and not bool(torch.isfinite(scores).any()):
            # A later step (a ban, ban_eos_token, no_repeat_ngram) removed every token
            # the grammar allows: the grammar wins, or the reply could not go on validly.
            scores = self.grammar.restrict(logits.float())
        if self.greedy:
            token = int(scores.argmax(dim=-1))
        else:
            probs = torch.softmax(scores, dim=-1).to(self.generator.device)
            token = int(torch.multinomial(probs, 1, generator=self.generator))
        if self.request.logprobs is not None:  # only then: plain requests pay nothing here
            top = self.request.logprobs
            if self.request.token_detail:
                context = self.ids[0, max(0, self.length - token_probs.CONTEXT_TOKENS) : self.length].tolist()
                self.record = token_probs.detailed_record(token, scores, raw, top, self.tokenizer, context)
            else:
                self.record = token_probs.record(token, scores, top)
        return token

    def accept(self, token: int) -> bool:
        """Record a chosen token and show its text; True when the reply is complete."""
        self.stream.new_tokens += 1
        self.last_token = token
        self.ids[0, self.length] = token
        self.length += 1
        if self.lookup is not None:
            self.lookup.push(token)
        piece = "" if token in self.eos else self.decoder.push(token)
        if self.record is not None:
            # The text this token added to the reply (before stop strings are held back).
            self.stream.logprobs.append(replace(self.record, text=piece))
            self.record = None
        if token in self.eos:
            self.reason = "stop"
        else:
            if self.grammar is not None and not self.grammar.paused:
                try:
                    self.grammar.advance(token)
                except ValueError as exc:  # never expected (the mask allowed it): end this request only
                    self.failure = GenerationError(f"generation failed: {exc}")
                    self.reason = "cancelled"
                    return True
            if self.gate is not None:
                self.gate.push(piece)
                if self.grammar is not None:
                    self.grammar.paused = not self.gate.answering
                    if self.gate.answering:
                        self.forced.clear()  # the layout after the close: the grammar now decides
            self._emit(self.stops.feed(piece))
            if self.stops.stopped:
                self.reason = "stop"
            elif self.stream.new_tokens >= self.max_new:
                self.reason = "length"
        return self.reason is not None

    def finish(self, reason: FinishReason | None = None) -> None:
        """Flush held-back text and hand the stats to the reader."""
        self.reason = self.reason or reason or "cancelled"
        if self.failure:
            self.stream._mailbox.finish("error", self.failure)
            return
        tail = self.decoder.flush()  # a last token's unfinished UTF-8 bytes, as U+FFFD
        if tail and self.stream.logprobs:  # its text too: the tokens' texts join to the reply exactly
            last = self.stream.logprobs[-1]
            self.stream.logprobs[-1] = replace(last, text=last.text + tail)
        self._emit(self.stops.feed(tail))
        self._emit(self.stops.flush())
        stream = self.stream
        stream._mailbox.finish("done", GenerationStats(
            self.prompt_tokens, stream.new_tokens, time.perf_counter() - self.started, self.reason, self.seed,
            self.dropped, cached_tokens=getattr(self.slot, "cached_tokens", 0),
            queued_seconds=self.queued_seconds, thinking_tokens=self.gate.spent if self.gate else 0,
            stop_string=self.stops.matched, drafted_tokens=self.drafted, accepted_tokens=self.accepted))

    def _emit(self, text: str) -> None:
        if text:
            self.stream._mailbox.put_text(text)


class GenerationEngine:
    """Admits requests into a running batch and decodes them together on one model thread.

    One thread (not one per request) because torch's CPU thread pool belongs to the
    thread that calls it: a fresh calling thread per request measurably slows
    decoding on small CPUs (docs/PERFORMANCE.md).
    """

    def __init__(
        self,
        manager: ModelManager,
        wait_timeout: float | None = None,
        stream_interval: float = 0.02,
        max_pending: int = 64,
        extensions: Any = None,
        per_owner: int | None = None,
        vectors: VectorLibrary | None = None,
    ):
        self.manager = manager
        self.vectors = vectors  # user_data/control-vectors/ (webui/steer/library.py)
        self.extensions = extensions  # an ExtensionHost: tokenizer and logits hooks
        self.wait_timeout = wait_timeout
        self.stream_interval = stream_interval
        self.max_pending = max_pending
        self._queue = FairQueue(max_pending, per_owner or 1)
        self._per_owner_default = per_owner is None
        self._running = 0
        self._admitting = 0  # taken from the queue, not yet running: counted as pending
        self._owners: dict[str, int] = {}  # running sequences per owner (a snapshot, for positions)
        # Admitted embedding jobs, a group embedded between two decoding steps (model thread's)
        self._embedding: list[EmbeddingJob] = []
        # Admitted requests whose prompts are being read a piece at a time (model thread's)
        self._prefilling: list[_Sequence] = []
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._grammar_tokenizers = GrammarTokenizers()  # per loaded model, used on the model thread
        self._closed = threading.Event()

    # -- callers ---------------------------------------------------------------------
    def generate(self, request: GenerationRequest) -> GenerationStream:
        """Queue a request; raises QueueFull when max_pending requests are already waiting."""
        stream = GenerationStream(request, self.stream_interval, self)
        self._enqueue(request.owner, stream)
        return stream

    def generate_many(self, requests: list[GenerationRequest]) -> list[GenerationStream]:
        """Queue requests of one owner together (an API request's `n` choices): admitted at
        the same step where the batch has room, they decode as one batch.  Raises
        QueueFull, queueing none, when they do not all fit the queue."""
        streams = [GenerationStream(request, self.stream_interval, self) for request in requests]
        if streams:
            self._enqueue(requests[0].owner, streams)
        return streams

    def embed(self, inputs: list[list[int]], owner: str, cancel: CancelToken) -> EmbeddingJob:
        """Queue token ids to embed (webui/generation/embedding.py); the model thread
        runs them between decoding steps.  Raises QueueFull like generate()."""
        job = EmbeddingJob(inputs, owner, cancel, _Mailbox(self.stream_interval))
        self._enqueue(owner, job)
        return job

    def _enqueue(self, owner: str, item: GenerationStream | EmbeddingJob | list[GenerationStream]) -> None:
        if self._closed.is_set():
            raise GenerationError("the server is shutting down")
        if not (self._queue.put_many(owner, item) if isinstance(item, list) else self._queue.put(owner, item)):
            raise QueueFull(f"the server is busy ({len(self._queue)} requests waiting); try again shortly")
        with self._worker_lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, daemon=True, name="model-worker")
                self._worker.start()
                # A process that exits while the thread is inside torch aborts ("terminate
                # called without an active exception"): stop it at a step boundary first.
                atexit.register(self.close)
        self._poke_waiting()

    @property
    def pending(self) -> int:
        """Requests waiting, being admitted or running (embedding jobs included)."""
        return len(self._queue) + self._admitting + self._running + len(self._embedding)

    @property
    def running(self) -> int:
        return self._running

    def position(self, stream: GenerationStream) -> int | None:
        for ahead, waiting in enumerate(self._queue.order(self._owners)):
            if waiting is stream:
                return ahead
        return None

    # -- the model thread --------------------------------------------------------------
    def close(self, timeout: float = 10.0) -> None:
        """Stop serving: queued requests end with an error, running ones are cancelled at
        the next step, and the model thread leaves (waiting up to `timeout` seconds)."""
        self._closed.set()
        for stream in self._queue.remove_if(lambda s: True):
            stream._mailbox.finish("error", GenerationError("the server is shutting down"))
        self._queue.wake()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    def _serve(self) -> None:
        holds_pool = False
        while not self._closed.is_set():
            # Sleeps until a request is queued or close() wakes it: an idle server's model
            # thread runs once after a batch, to give its OpenMP pool back, and then not at
            # all (tests/test_engine.py measures it).
            if not self._queue.wait(timeout=POOL_IDLE_SECONDS if holds_pool else None, until=self._closed.is_set):
                if holds_pool:
                    release_thread_pool()
                    holds_pool = False
                continue
            self._drop_cancelled()
            if not len(self._queue):
                continue
            if self.manager.swap_waiting():
                time.sleep(0.01)  # let the waiting load take the model first
                continue
            try:
                with self.manager.use(timeout=self.wait_timeout) as loaded:
                    holds_pool = True
                    self._run_batch(loaded)
            except (NoModelLoaded, ModelBusy) as exc:  # 503s, each reader its own copy
                for stream in self._queue.remove_if(lambda s: True):
                    stream._mailbox.finish("error", failure(exc))
            except Exception:  # never let the model thread die: requests would hang
                log.exception("the model thread failed")
                time.sleep(0.1)

    def _run_batch(self, loaded) -> None:
        backend: Backend = loaded.backend
        if self._per_owner_default:  # one place always left for somebody else
            self._queue.per_owner = max(1, backend.capabilities.max_batch - 1)
        active: list[_Sequence] = []
        prefilling = self._prefilling
        while True:
            try:
                if self._closed.is_set():
                    for seq in [*active, *prefilling]:
                        seq.request.cancel.cancel()  # retired as cancelled by the step below
                    for job in self._embedding:
                        job.request.cancel.cancel()
                self._drop_cancelled()
                if not self.manager.swap_waiting() and not self._closed.is_set():
                    self._admit(loaded, backend, active)
                if prefilling:
                    # One piece of one prompt (in turn) between two steps: the replies keep moving.
                    self._prefill(backend, active)
                if self._embedding:
                    # One group of one job (in turn) between two steps: the replies keep moving.
                    self._embed_group(loaded, backend, budget=STEP_TOKENS if active else BATCH_TOKENS)
                if not active:
                    if self._embedding or prefilling:
                        continue
                    return  # nothing runs: release the model (a load may be waiting)
                self._step(backend, active)
            except Exception as exc:  # every running request hears why, promptly; none hangs
                if not isinstance(exc, BackendCrashed):  # the backend logged that one, once
                    log.exception("a decoding step failed")
                for seq in [*active, *prefilling]:
                    seq.stream._mailbox.finish("error", failure(exc))
                    if seq.slot is not None:
                        backend.finish(seq.slot, keep=False)
                active.clear()
                prefilling.clear()
                self._running = 0
                for job in self._embedding:
                    job.fail(failure(exc, "embedding"))
                self._embedding.clear()

    def _drop_cancelled(self) -> None:
        dropped = self._queue.remove_if(lambda s: s.request.cancel.cancelled)
        for stream in dropped:
            stream._mailbox.finish("done", GenerationStats(0, 0, 0.0, "cancelled", stream.request.params.seed))
        if dropped:  # the others moved up a place
            self._poke_waiting()

    def _poke_waiting(self) -> None:
        for stream in self._queue.order(self._owners):
            stream._mailbox.poke()

    def _admit(self, loaded, backend: Backend, active: list[_Sequence]) -> None:
        while True:
            # An embedding job holds a place of its owner's while it runs, like a reply.
            running = [*active, *self._prefilling]
            owners = self._owners = Counter([seq.owner for seq in running] + [j.owner for j in self._embedding])
            # An embedding job keeps no KV: it always fits.  A request that must decode
            # alone waits for an empty batch, and keeps it empty while it runs.
            stream = self._queue.take(owners, lambda s, running=running: isinstance(s, EmbeddingJob) or (
                not (running and (alone(backend, s) or any(alone(backend, a.stream) for a in running)))
                and not apart(backend, s, running)
                and backend.can_admit(len(running), 0, s.request.params.max_new_tokens)))
            if stream is None:
                return
            stream.started = True
            self._admitting = 1
            try:
                self._poke_waiting()
                if isinstance(stream, EmbeddingJob):
                    self._start_embedding(loaded, backend, stream)
                else:
                    self._start_sequence(loaded, backend, stream, active)
            finally:
                self._admitting = 0

    def _start_sequence(self, loaded, backend: Backend, stream: GenerationStream, active: list[_Sequence]) -> None:
        seq = self._prepare(loaded, backend, stream)
        if seq is None:
            return
        seq.queued_seconds = time.monotonic() - stream.queued_at
        try:
            if self._in_pieces(backend, seq, active):
                seq.slot = backend.begin(seq.prompt, reuse=self._reuse(backend, seq))
                self._prefilling.append(seq)  # read a piece at a time by _prefill, between steps
                self._running = len(active) + len(self._prefilling)
                return
            seq.slot = self._start(backend, seq)
        except OutOfMemory as exc:
            stream._mailbox.finish("error", GenerationError(
                f"{exc}; try a shorter prompt, fewer tokens or a smaller model"))
            return
        except Exception as exc:
            stream._mailbox.finish("error", failure(exc))
            return
        self._join(backend, seq, active)

    def _join(self, backend: Backend, seq: _Sequence, active: list[_Sequence]) -> None:
        """A sequence whose prompt is read decodes from now on: its first token, at once."""
        seq.stream._mailbox.decide()  # it runs: a streamed reply may send its first byte
        active.append(seq)
        self._running = len(active) + len(self._prefilling)
        if self._advance(seq, seq.slot.logits):
            self._retire(backend, seq, active)

    def _in_pieces(self, backend: Backend, seq: _Sequence, active: list[_Sequence]) -> bool:
        """Whether this prompt is read in pieces: long, and others are decoding meanwhile
        (alone, it is read whole: nothing waits, and the reply is as it always was)."""
        chunk = backend.capabilities.prefill_chunk
        return bool(chunk and (active or self._prefilling) and len(seq.prompt) > chunk
                    and seq.embeds is None and seq.vision is None and seq.steer is None
                    and (not seq.request.params.deterministic or backend.capabilities.reuse_invariant))

    def _prefill(self, backend: Backend, active: list[_Sequence]) -> None:
        """Read the next piece of the first prompt waiting, which then goes to the back."""
        seq = self._prefilling.pop(0)
        try:
            if seq.request.cancel.cancelled:
                seq.finish("cancelled")
                backend.finish(seq.slot, keep=False)
                return
            chunk = backend.capabilities.prefill_chunk
            try:
                try:
                    done = backend.prefill(seq.slot, chunk)
                except OutOfMemory:
                    backend.clear_cache()  # the prefix cache is the first thing to give up
                    done = backend.prefill(seq.slot, chunk)
            except OutOfMemory as exc:
                seq.stream._mailbox.finish("error", GenerationError(
                    f"{exc}; try a shorter prompt, fewer tokens or a smaller model"))
                return
            except BackendCrashed as exc:  # every request hears it (_run_batch); this one is no longer listed
                seq.stream._mailbox.finish("error", failure(exc))
                raise
            except Exception as exc:  # this request hears why; the others go on
                log.exception("reading a prompt failed")
                seq.stream._mailbox.finish("error", failure(exc))
                return
            if not done:
                self._prefilling.append(seq)
                return
        finally:
            self._running = len(active) + len(self._prefilling)
        self._join(backend, seq, active)

    def _start_embedding(self, loaded, backend: Backend, job: EmbeddingJob) -> None:
        """Admit an embedding job, to be run a group at a time (`_embed_group`)."""
        if not backend.capabilities.embeddings:
            job.fail(GenerationError(f"this model's backend ({loaded.loader}) cannot compute embeddings"))
            return
        longest = max((len(ids) for ids in job.inputs), default=0)
        if longest > loaded.context_length or not all(job.inputs):
            job.fail(PromptError(f"each input must have 1 to {loaded.context_length} tokens (the model's context)"))
            return
        if not job.inputs:
            job.finish(torch.zeros(0, 0))
            return
        self._embedding.append(job)

    def _embed_group(self, loaded, backend: Backend, budget: int) -> None:
        """Embed the next group of the first admitted job, which then goes to the back."""
        job = self._embedding.pop(0)
        if job.request.cancel.cancelled:
            job.fail(GenerationError("the embedding request was cancelled"))
            return
        rows = job.next_group(budget)
        try:
            try:
                vectors = backend.embed(rows)
            except OutOfMemory:
                backend.clear_cache()  # the prefix cache is the first thing to give up
                vectors = backend.embed(rows)
        except OutOfMemory as exc:
            job.fail(GenerationError(f"{exc}; try fewer or shorter inputs"))
            return
        except BackendCrashed as exc:
            job.fail(failure(exc))
            return
        except Exception as exc:  # the caller gets the error promptly, never a hang
            log.exception("an embedding forward failed")
            job.fail(GenerationError(f"embedding failed: {exc.__class__.__name__}: {exc}"))
            return
        if job.add(len(rows), vectors):
            job.finish(torch.cat(job.parts))
        else:
            self._embedding.append(job)

    @staticmethod
    def _reuse(backend: Backend, seq: _Sequence) -> bool:
        # A deterministic request computes its prompt whole where a cache hit could round differently.
        # A steered one too: the prefix cache holds unsteered states only (its KV is never kept).
        if seq.steer is not None:
            return False
        return not seq.request.params.deterministic or backend.capabilities.reuse_invariant

    def _start(self, backend: Backend, seq: _Sequence):
        reuse = self._reuse(backend, seq)
        # Only a backend that sees is given a vision prompt: the others keep their signature.
        extra = {"vision": seq.vision} if seq.vision is not None else {}
        if seq.steer is not None:  # likewise: a backend that cannot steer keeps its signature
            extra["steer"] = seq.steer
        try:
            return backend.start(seq.prompt, seq.embeds, reuse=reuse, **extra)
        except OutOfMemory:
            backend.clear_cache()  # the prefix cache is the first thing to give up
            return backend.start(seq.prompt, seq.embeds, reuse=reuse, **extra)

    def _prepare(self, loaded, backend: Backend, stream: GenerationStream) -> _Sequence | None:
        """Render and tokenize the prompt and build the sampler chain; on a bad request,
        answer it with the reason and return None."""
        request = stream.request
        try:
            if request.cancel.cancelled:
                stream._mailbox.finish("done", GenerationStats(0, 0, 0.0, "cancelled", request.params.seed))
                return None
            return self._sequence(loaded, backend, stream)
        except AppError as exc:  # keeps its type: a refused grammar or prompt is a 400 naming its field
            stream._mailbox.finish("error", exc)
        except Exception as exc:  # the caller gets the error promptly, never a hang
            stream._mailbox.finish("error", failure(exc))
        return None

    def _sequence(self, loaded, backend: Backend, stream: GenerationStream) -> _Sequence | None:
        request = stream.request
        params = request.params
        tokenizer = backend.tokenizer
        context = min(params.truncation_length or loaded.context_length, loaded.context_length)
        prompt = request.prompt
        if not isinstance(prompt, (str, RenderedPrompt)):
            prompt = prompt(tokenizer, prompt_room(params.max_new_tokens, context))
        rendered = prompt if isinstance(prompt, RenderedPrompt) else RenderedPrompt(prompt)
        vision = None
        if rendered.images:
            vision = self._vision(loaded, backend, rendered)
            ids = list(vision.ids)
        else:
            ids = prompt_ids(tokenizer, rendered.text)
        ext = self.extensions
        state = request.state
        if ext is not None and state is None and (ext.has("tokenizer_modifier") or ext.has("logits_processor_modifier")):
            from webui.extensions.state import make_state

            state = make_state(params, mode="api", context_length=loaded.context_length)
        embeds = None
        # An extension's tokenizer hook rewrites ids; with images the ids must stay the
        # processor's (each placeholder holds a piece of an image), so it is not run.
        if ext is not None and ext.has("tokenizer_modifier") and vision is None:
            _, modified, embeds = ext.tokenizer(state, rendered.text, torch.tensor([ids]), None, backend.vocab_size())
            ids = modified[0].tolist()
        ids, max_new, dropped = fit_prompt(ids, params.max_new_tokens, context)
        if vision is not None and dropped:
            # Cutting the oldest tokens could cut an image in half: refused, not guessed.
            raise PromptError(f"the prompt with its images takes {len(vision.ids):,} tokens; this model's "
                              f"context leaves room for {prompt_room(params.max_new_tokens, context):,}: "
                              "send fewer or smaller images, or start a new chat", param="messages")
        if embeds is not None:
            if not backend.capabilities.input_embeddings:
                raise GenerationError("this model's backend cannot take input embeddings from an extension")
            embeds = embeds[:, dropped:].to(backend.device, loaded.model.dtype)
        seed = params.seed if params.seed >= 0 else random.randint(0, MAX_SEED)  # noqa: S311 - a sampling seed, not a secret
        if max_new <= 0 or not ids:
            stream._mailbox.finish("done", GenerationStats(len(ids), 0, 0.0, "cancelled", seed, dropped))
            return None
        generator = torch.Generator(device=backend.device).manual_seed(seed)
        grammar = self._grammar(backend, params)
        chain = build_chain(params, tokenizer, backend, backend.vocab_size(), backend.eos_ids(), generator, grammar)
        if ext is not None and ext.has("logits_processor_modifier"):
            chain = ext.logits_processors(chain, torch.tensor([ids], device=backend.device), tokenizer, state)
        # With a grammar, the grammar ends the reply (end-of-text is allowed only once it
        # is complete); a stop string, the template's or the caller's, could otherwise cut
        # a JSON reply short at a "}" or an "<|im_end|>" inside one of its strings.
        stops = () if grammar is not None else (*params.stop, *rendered.stops)
        thinking = rendered.thinking
        if thinking is not None:
            # The reply starts inside the thinking when the prompt opened it; a marker of
            # the thinking format is never a stop (gpt-oss ends its analysis with "<|end|>").
            thinking = thinking.opened(thinking.ends_open(rendered.text))
            stops = tuple(s for s in stops if not any(s in marker for marker in thinking.markers))
        steer = self._steering(backend, params)
        stream.prompt_tokens = len(ids)
        stream.thinking = thinking
        seq = _Sequence(stream, backend, ids, max_new, chain, StopStringFilter(stops), seed, generator, dropped,
                        embeds, grammar, thinking, vision)
        seq.steer = steer
        return seq

    def _steering(self, backend: Backend, params):
        """The request's control vectors resolved for this model (None: not steered)."""
        if not steer_key(params.control_vectors):
            return None  # none, or every strength 0: nothing is added, nothing costs
        if backend.capabilities.steering is None:
            raise ParamsError("control_vectors: this model's backend cannot steer", param="control_vectors",
                              reason="this model's backend cannot steer")
        if self.vectors is None:
            raise ParamsError("control_vectors: this server has no control-vector folder", param="control_vectors",
                              reason="this server has no control-vector folder")
        return self.vectors.resolve(params.control_vectors, backend.capabilities.steering)

    def _vision(self, loaded, backend: Backend, rendered: RenderedPrompt):
        """The images' tokens and tensors, from the model's own processor; a model that
        reads only text says so (the images are never silently dropped)."""
        if not backend.capabilities.vision:
            count = len(rendered.images)
            raise CannotSee(f"{loaded.name} reads only text and cannot see the {count} image"
                            f"{'s' if count > 1 else ''} sent; load a vision model, or send text only",
                            param="messages")
        return backend.encode_images(rendered.text, tuple(rendered.images))

    def _grammar(self, backend: Backend, params) -> GrammarState | None:
        constraint = constraint_of(params.grammar_string, params.json_schema)
        if constraint is None:
            return None
        try:
            tokenizer = self._grammar_tokenizers.get(backend.tokenizer, backend.vocab_size(), backend.eos_ids())
            return GrammarState(constraint, tokenizer, backend.vocab_size())
        except (GrammarUnsupported, ValueError) as exc:
            raise ParamsError(f"{constraint.kind}: {exc}", param=constraint.kind, reason=str(exc)) from exc

    def _step(self, backend: Backend, active: list[_Sequence]) -> None:
        for seq in [s for s in active if s.request.cancel.cancelled]:
            self._retire(backend, seq, active, "cancelled")
        if not active:
            return
        if len(active) == 1 and self._speculate(backend, active):
            return
        try:
            logits = backend.step([seq.slot for seq in active], [seq.last_token for seq in active])
        except OutOfMemory:
            backend.clear_cache()
            try:
                logits = backend.step([seq.slot for seq in active], [seq.last_token for seq in active])
            except OutOfMemory as exc:
                # The newest request gives way; the others keep their places and go on.
                victim = active[-1]
                victim.stream._mailbox.finish("error", GenerationError(
                    f"{exc}: this request was stopped to let the others finish; try again shortly"))
                backend.finish(victim.slot, keep=False)
                active.remove(victim)
                self._running = len(active) + len(self._prefilling)
                return
        # Plain greedy rows take one argmax over the whole batch (one call, not one per row).
        argmax = logits.argmax(dim=-1).tolist() if any(seq.plain_greedy for seq in active) else None
        for index, seq in enumerate(list(active)):
            if argmax is not None and seq.plain_greedy and not seq.request.cancel.cancelled:
                done = seq.accept(argmax[index])
            else:
                done = self._advance(seq, logits[index : index + 1])
            if done:
                self._retire(backend, seq, active)

    def _speculate(self, backend: Backend, active: list[_Sequence]) -> bool:
        """One step of a lone request with drafted tokens (webui/generation/speculative.py):
        tokens are chosen position by position as plain steps would choose them, and kept
        while they equal the drafts.  False when there is nothing to draft (a plain step)."""
        seq = active[0]
        drafts = seq.drafts()
        if not drafts:
            return False
        try:
            logits = backend.verify(seq.slot, [seq.last_token, *drafts])
        except OutOfMemory:
            return False  # a plain step needs less
        seq.drafted += len(drafts)
        kept, done = 0, False
        for index in range(len(drafts) + 1):
            done = self._advance(seq, logits[index : index + 1])
            if done or index == len(drafts) or seq.last_token != drafts[index]:
                break
            kept += 1
        seq.accepted += kept
        backend.rewind(seq.slot, len(drafts) - kept)
        if done:
            self._retire(backend, seq, active)
        return True

    def _advance(self, seq: _Sequence, logits: torch.Tensor) -> bool:
        """Choose and record the next token; True when the request is done."""
        if seq.request.cancel.cancelled:
            seq.reason = "cancelled"
            return True
        return seq.accept(seq.choose(logits))

    def _retire(self, backend: Backend, seq: _Sequence, active: list[_Sequence],
                reason: FinishReason | None = None) -> None:
        active.remove(seq)
        self._running = len(active) + len(self._prefilling)
        self._owners = Counter(s.owner for s in [*active, *self._prefilling])
        try:
            seq.finish(reason)
        finally:
            backend.finish(seq.slot, keep=seq.steer is None and (seq.reason != "cancelled" or seq.stream.new_tokens > 0))
