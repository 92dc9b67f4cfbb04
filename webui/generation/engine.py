"""Prompt -> stream of text pieces.

Requests queue for one model thread, which runs `model.generate` for each in turn
while holding the model lock (so requests never interleave and a model is never
swapped under a stream), and hands text to the caller through a small mailbox.
Per-request state (cancel token, sampling values, stop strings) lives in the request object, never in globals, so Stop in one browser tab ends only that tab's
request: a StoppingCriteria checks the request's own token after every step.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import LogitsProcessor, StoppingCriteria, StoppingCriteriaList

from webui.chat.prompt import PromptError, RenderedPrompt, prompt_ids
from webui.generation.chain import build_chain
from webui.generation.detok import IncrementalDecoder
from webui.generation.stops import StopStringFilter
from webui.loaders.base import LoadedModel
from webui.model_manager import ModelBusy, ModelManager, NoModelLoaded
from webui.presets import MAX_SEED, ParamsError, SamplingParams

FinishReason = Literal["stop", "length", "cancelled"]


class GenerationError(RuntimeError):
    """Generation failed; the message is fit to show the user."""


class QueueFull(GenerationError):
    """Too many requests are waiting; answered at once instead of hanging."""


class CancelToken:
    """Set once by Stop (or a closed connection); read by the decoding loop."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True)
class GenerationRequest:
    """One request.  `prompt` is text, or a function prompt(tokenizer, room) that renders
    it, as text or a RenderedPrompt with its own stop strings.  Chat prompts use the
    loaded model's template, read while holding the model, so a model swapped in
    meanwhile is rendered with its own template; `room` is how many prompt tokens fit
    beside the reply, so a chat can leave out whole turns rather than cut mid-text."""

    prompt: str | Callable[[Any, int], str | RenderedPrompt]
    params: SamplingParams = field(default_factory=SamplingParams)
    cancel: CancelToken = field(default_factory=CancelToken)
    # None: no log-probabilities; n >= 0: record each token's, with its n likeliest rivals.
    logprobs: int | None = None
    # The extensions' `state` dict for this request (built from params when None).
    state: dict[str, Any] | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token, its log-probability under the final (processed) distribution,
    and the likeliest alternatives at that step."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]


class _RecordLogprobs(LogitsProcessor):
    """Last step of the chain: keeps the distribution the token is drawn from, so the
    streamer can read the chosen token's log-probability when it arrives."""

    def __init__(self, top: int):
        self.top = top
        self.pending: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.pending = torch.log_softmax(scores[0].float(), dim=-1)
        return scores

    def take(self, token_id: int) -> TokenLogprob | None:
        row, self.pending = self.pending, None
        if row is None:
            return None
        values, ids = torch.topk(row, self.top) if self.top else (row[:0], row[:0].long())
        top = tuple(zip(ids.tolist(), values.tolist(), strict=True))
        return TokenLogprob(token_id, float(row[token_id]), top)


@dataclass(frozen=True)
class GenerationStats:
    prompt_tokens: int
    new_tokens: int
    seconds: float
    finish_reason: FinishReason
    seed: int
    truncated_tokens: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = (
            f"{self.new_tokens} tokens, {self.tokens_per_second:.1f} tokens/s, "
            f"prompt {self.prompt_tokens} tokens, seed {self.seed}, {self.finish_reason}"
        )
        if self.truncated_tokens:
            text += f" (oldest {self.truncated_tokens} prompt tokens dropped to fit the context)"
        return text


def prompt_room(max_new_tokens: int, context: int) -> int:
    """Prompt tokens that fit: half the context (or max_new_tokens, if smaller) stays
    free for the reply."""
    return context - max(1, min(max_new_tokens, context // 2))


def fit_prompt(ids: list[int], max_new_tokens: int, context: int) -> tuple[list[int], int, int]:
    """Stated policy for a prompt that does not fit the context window.

    Half the context (or max_new_tokens, if smaller) stays free for the reply; the
    oldest prompt tokens are dropped to make room.  Returns (ids, new-token budget,
    dropped count).
    """
    dropped = max(0, len(ids) - prompt_room(max_new_tokens, context))
    kept = ids[dropped:]
    return kept, min(max_new_tokens, context - len(kept)), dropped


class _StopOnRequest(StoppingCriteria):
    def __init__(self, should_stop):
        self._should_stop = should_stop

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self._should_stop(), dtype=torch.bool, device=input_ids.device)


class _Mailbox:
    """Hands text from the decoding thread to the reader, coalescing pieces.

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

    def put_text(self, text: str) -> None:
        with self._lock:
            self._pieces.append(text)
        if not self._ready.is_set():  # set() takes a lock and notifies; skip when pending
            self._ready.set()

    def finish(self, kind: str, value: Any) -> None:
        with self._lock:
            self._final = (kind, value)
        self._finished.set()
        self._ready.set()

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


class _TextStreamer:
    """transformers streamer protocol (put/end): token ids in, visible text out."""

    def __init__(self, decoder: IncrementalDecoder, stops: StopStringFilter, out: _Mailbox,
                 recorder: _RecordLogprobs | None = None):
        self._decoder = decoder
        self._stops = stops
        self._out = out
        self._recorder = recorder
        self._prompt_seen = False
        self.logprobs: list[TokenLogprob] = []
        self.new_tokens = 0
        self.last_token: int | None = None

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first echoes the prompt
            self._prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            self.new_tokens += 1
            self.last_token = token_id
            if self._recorder is not None and (entry := self._recorder.take(token_id)) is not None:
                self.logprobs.append(entry)
            self._emit(self._stops.feed(self._decoder.push(token_id)))

    def end(self) -> None:
        self._emit(self._stops.feed(self._decoder.flush()))
        self._emit(self._stops.flush())

    def _emit(self, text: str) -> None:
        if text:
            self._out.put_text(text)


class GenerationStream:
    """Iterate to get text pieces as they are decoded; `stats` is set at the end.

    Leaving the loop early (a closed browser tab, a dropped HTTP client) cancels the
    request, so the model is freed within one decoding step.
    """

    def __init__(self, request: GenerationRequest, interval: float):
        self.request = request
        self.stats: GenerationStats | None = None
        self.streamer: _TextStreamer | None = None  # set once decoding starts
        self._mailbox = _Mailbox(interval)

    @property
    def tokens_so_far(self) -> int:
        return self.streamer.new_tokens if self.streamer else 0

    def __iter__(self) -> Iterator[str]:
        last = float("-inf")
        try:
            while True:
                text, final = self._mailbox.take(time.monotonic() - last)
                if text:
                    last = time.monotonic()
                    yield text
                if final is None:
                    continue
                kind, value = final
                if kind == "error":
                    raise GenerationError(value)
                self.stats = value
                return
        finally:
            if self.stats is None:
                self.request.cancel.cancel()

    def text(self) -> str:
        """Consume the whole stream and return the reply."""
        return "".join(self)


class GenerationEngine:
    """Runs requests one at a time, in arrival order, on one long-lived model thread.

    One thread (not one per request) because torch's CPU thread pool belongs to the
    thread that calls it: a fresh calling thread per request measurably slows
    decoding on small CPUs (docs/PERFORMANCE.md).  The FIFO queue is also what makes
    waiting requests fair, and where batching can later gather concurrent requests.
    """

    def __init__(
        self,
        manager: ModelManager,
        wait_timeout: float | None = None,
        stream_interval: float = 0.02,
        max_pending: int = 64,
        extensions: Any = None,
    ):
        self.manager = manager
        self.extensions = extensions  # an ExtensionHost: tokenizer and logits hooks
        self.wait_timeout = wait_timeout
        self.stream_interval = stream_interval
        self.max_pending = max_pending
        self._pending = 0  # queued + running; guarded by _worker_lock
        self._jobs: queue.SimpleQueue[GenerationStream] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()

    def generate(self, request: GenerationRequest) -> GenerationStream:
        """Queue a request; raises QueueFull when max_pending requests are already in."""
        stream = GenerationStream(request, self.stream_interval)
        with self._worker_lock:
            if self._pending >= self.max_pending:
                raise QueueFull(f"the server is busy ({self._pending} requests waiting); try again shortly")
            self._pending += 1
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, daemon=True, name="model-worker")
                self._worker.start()
        self._jobs.put(stream)
        return stream

    @property
    def pending(self) -> int:
        return self._pending

    def _serve(self) -> None:
        while True:
            stream = self._jobs.get()
            try:
                self._run(stream)
            finally:
                with self._worker_lock:
                    self._pending -= 1

    def _run(self, stream: GenerationStream) -> None:
        out = stream._mailbox
        try:
            with self.manager.use(timeout=self.wait_timeout) as loaded:
                out.finish("done", self._generate(loaded, stream))
        except (ModelBusy, NoModelLoaded, PromptError, ParamsError) as exc:
            out.finish("error", str(exc))
        except torch.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            out.finish("error", "out of memory while generating; try fewer tokens or a smaller model")
        except Exception as exc:  # the caller gets the error promptly, never a hang
            out.finish("error", f"generation failed: {exc.__class__.__name__}: {exc}")

    def _generate(self, loaded: LoadedModel, stream: GenerationStream) -> GenerationStats:
        request = stream.request
        params = request.params
        tokenizer = loaded.tokenizer
        context = min(params.truncation_length or loaded.context_length, loaded.context_length)
        prompt = request.prompt
        if not isinstance(prompt, str):
            prompt = prompt(tokenizer, prompt_room(params.max_new_tokens, context))
        rendered = prompt if isinstance(prompt, RenderedPrompt) else RenderedPrompt(prompt)
        ids = prompt_ids(tokenizer, rendered.text)
        ext = self.extensions
        state = request.state
        if ext is not None and state is None and (ext.has("tokenizer_modifier") or ext.has("logits_processor_modifier")):
            from webui.extensions.state import make_state

            state = make_state(params, mode="api", context_length=loaded.context_length)
        embeds = None
        if ext is not None and ext.has("tokenizer_modifier"):
            _, modified, embeds = ext.tokenizer(state, rendered.text, torch.tensor([ids]), None, vocab_size(loaded))
            ids = modified[0].tolist()
        ids, max_new, dropped = fit_prompt(ids, params.max_new_tokens, context)
        if embeds is not None:
            embeds = embeds[:, dropped:].to(loaded.model.device, loaded.model.dtype)
        seed = params.seed if params.seed >= 0 else random.randint(0, MAX_SEED)  # noqa: S311 - a sampling seed, not a secret
        if request.cancel.cancelled or max_new <= 0:
            return GenerationStats(len(ids), 0, 0.0, "cancelled", seed, dropped)

        eos = eos_ids(loaded)
        chain = build_chain(params, tokenizer, loaded.model, vocab_size(loaded), eos)
        # loaded.device, not model.device: with disk offload the latter can be "meta".
        input_ids = torch.tensor([ids], device=loaded.device)
        if ext is not None and ext.has("logits_processor_modifier"):
            chain = ext.logits_processors(chain, input_ids, tokenizer, state)
        stops = StopStringFilter((*params.stop, *rendered.stops))
        recorder = None
        if request.logprobs is not None:
            recorder = _RecordLogprobs(request.logprobs)
            chain.append(recorder)
        streamer = _TextStreamer(IncrementalDecoder(tokenizer, ids), stops, stream._mailbox, recorder)
        stream.streamer = streamer
        should_stop = lambda: request.cancel.cancelled or stops.stopped  # noqa: E731
        torch.manual_seed(seed)  # safe: we hold the model lock, nobody else samples now
        started = time.perf_counter()
        loaded.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_StopOnRequest(should_stop)]),
            logits_processor=chain,
            pad_token_id=tokenizer.pad_token_id,
            **({"inputs_embeds": embeds} if embeds is not None else {}),
            **sampling_kwargs(params, max_new),
        )
        seconds = time.perf_counter() - started
        if stops.stopped or streamer.last_token in eos:
            reason: FinishReason = "stop"
        elif request.cancel.cancelled:
            reason = "cancelled"
        else:
            reason = "length"
        return GenerationStats(len(ids), streamer.new_tokens, seconds, reason, seed, dropped)


def vocab_size(loaded: LoadedModel) -> int:
    """Rows of the output layer: the ids a logit exists for."""
    return loaded.model.get_output_embeddings().weight.shape[0]


def eos_ids(loaded: LoadedModel) -> set[int]:
    ids = loaded.model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(loaded.tokenizer.eos_token_id)
    return ids


# generate()'s own sampling knobs, all explicitly off: the model's generation_config
# must not add steps behind the user's back.  Our chain (chain.py) does all shaping.
NEUTRAL_GENERATE_KWARGS = {
    name: None
    for name in (
        "temperature", "top_p", "top_k", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff",
        "repetition_penalty", "no_repeat_ngram_size", "guidance_scale",
    )
}


def sampling_kwargs(params: SamplingParams, max_new_tokens: int) -> dict[str, Any]:
    """generate() keyword arguments other than the logits processors."""
    return {**NEUTRAL_GENERATE_KWARGS, "max_new_tokens": max_new_tokens, "do_sample": not params.greedy}
