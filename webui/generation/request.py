"""What travels with one generation request, and what comes back: the engine's
vocabulary, shared by the UI, the API, the chat and every backend.

Per-request state (cancel token, sampling values, stop strings, who asked) lives in the
request object, never in globals, so Stop in one browser tab ends only that tab's
request, and the scheduler can be fair between the people asking.
"""

from __future__ import annotations

import weakref

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from webui.errors import AppError, ServerError
from webui.generation.params import SamplingParams
from webui.generation.reasoning import ThinkingFormat

FinishReason = Literal["stop", "length", "cancelled"]


class GenerationError(ServerError, RuntimeError):
    """Generation failed; the message is fit to show the user."""


class QueueFull(GenerationError):
    """Too many requests are waiting; answered at once instead of hanging."""

    status, code = 503, "server_busy"


class ModelNotServed(GenerationError):
    """The request names a model that is neither loaded here nor on a remote engine
    (or it went away between the check and the start)."""

    status, code, kind = 404, "model_not_found", "invalid_request_error"


class PromptError(AppError, ValueError):
    """A prompt that cannot be built (a template that fails or drops text, ...)."""


class CannotSee(GenerationError):
    """A prompt with images for a model that reads only text: said, never dropped."""

    status, code, kind = 400, "model_cannot_see", "invalid_request_error"


class CancelToken:
    """Set once by Stop (or a closed connection); read by the decoding loop each step."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Run `callback` when the request is cancelled (at once if it already is): for a
        request blocked on something other than the decoding loop, such as a remote
        engine's response, which must be closed at once rather than at the next token."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True)
class RenderedPrompt:
    """Prompt text plus the stop strings that end the turn it asks for, and the reply's
    thinking markers when the model thinks (its `starts_open` read off this text)."""

    text: str
    stops: tuple[str, ...] = ()
    thinking: ThinkingFormat | None = None
    # Checked images (webui/images.py ImageInput), in the order the text places them:
    # only a backend that sees (Capabilities.vision) takes a prompt with any.
    images: tuple[Any, ...] = ()


@dataclass(frozen=True)
class EnginePrompt:
    """A prompt for an engine that tokenizes and applies chat templates on its own side
    (a remote one): plain `text` to continue, or chat `messages` for its template; plus
    the stop strings that end the turn.  A prompt function offers one through
    `for_engine()` (None: it needs our tokenizer or template)."""

    text: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    stops: tuple[str, ...] = ()
    # Chat request fields for the engine's own template, passed as they are
    # (chat_template_kwargs, reasoning_effort: a thinking model's switches).
    template_fields: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    """One request.  `prompt` is text, or a function prompt(tokenizer, room) that renders
    it, as text or a RenderedPrompt with its own stop strings.  Chat prompts use the
    serving model's template, read when the request is admitted, so a model swapped in
    meanwhile is rendered with its own template; `room` is how many prompt tokens fit
    beside the reply, so a chat can leave out whole turns rather than cut mid-text.

    `owner` names who asked (a signed-in user across all their tabs, an API key at one
    address, a browser tab when nobody signs in; see `ui_party` and webui/api/usage.py's
    `api_party`): the scheduler admits waiting requests round-robin across owners.
    """

    prompt: str | Callable[[Any, int], str | RenderedPrompt]
    params: SamplingParams = field(default_factory=SamplingParams)
    cancel: CancelToken = field(default_factory=CancelToken)
    # None: no log-probabilities; n >= 0: record each token's, with its n likeliest rivals.
    logprobs: int | None = None
    # The extensions' `state` dict for this request (built from params when None).
    state: dict[str, Any] | None = None
    owner: str = ""
    # With logprobs: also the model's own distribution (before the samplers) and each
    # alternative's text, for the token views (webui/generation/token_probs.py).
    token_detail: bool = False


@dataclass(frozen=True)
class Alternative:
    """A token that could have come at one step: its text as it would read in place, its
    log-probability after the samplers (-inf: they removed it) and under the model alone."""

    token_id: int
    text: str
    logprob: float
    raw_logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token, its log-probability under the distribution it was drawn from
    (after the samplers), and the likeliest alternatives at that step.

    With the request's token_detail, also: its log-probability under the model's own
    distribution, the text it added to the reply, and `alternatives`, the likeliest tokens
    of either distribution (and the chosen one) with their texts.
    """

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]
    raw_logprob: float | None = None
    text: str = ""
    alternatives: tuple[Alternative, ...] = ()
    # From an engine that names tokens by their text, not by ids in our vocabulary (a
    # remote one): token_id is -1, `text` is the token, and these are the alternatives.
    top_texts: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class GenerationStats:
    prompt_tokens: int
    new_tokens: int
    seconds: float
    finish_reason: FinishReason
    seed: int
    truncated_tokens: int = 0
    # Prompt tokens whose KV cache was reused from an earlier request (not recomputed).
    cached_tokens: int = 0
    # Seconds spent waiting for a place in the running batch.
    queued_seconds: float = 0.0
    # Of new_tokens, those a thinking model spent thinking.
    thinking_tokens: int = 0
    # The stop string that ended the reply (None: end of text, length or cancelled).
    stop_string: str | None = None
    # Speculative decoding: tokens drafted (prompt lookup), and of those, the ones kept.
    drafted_tokens: int = 0
    accepted_tokens: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = (
            f"{self.new_tokens} token{'' if self.new_tokens == 1 else 's'}, {self.tokens_per_second:.1f} tokens/s, "
            f"prompt {self.prompt_tokens} tokens, seed {self.seed}, {self.finish_reason}"
        )
        if self.thinking_tokens:
            text += f", {self.thinking_tokens} of them thinking"
        if self.cached_tokens:
            text += f", {self.cached_tokens} prompt tokens reused from cache"
        if self.drafted_tokens:
            text += (f", {self.accepted_tokens} of {self.drafted_tokens} drafted tokens accepted "
                     f"({self.accepted_tokens / self.drafted_tokens:.0%})")
        if self.truncated_tokens:
            text += f" (oldest {self.truncated_tokens} prompt tokens dropped to fit the context)"
        return text


def prompt_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt.  Chat templates usually write the BOS token themselves;
    never add a second one."""
    bos = tokenizer.bos_token
    return tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]


_LONGEST_TOKEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def most_chars_per_token(tokenizer) -> int:
    """The longest token of the vocabulary, in characters of its written form: no token
    covers more of a text than that, so a text of n characters has at least n / this
    many tokens (read once per tokenizer).  Lets a prompt far beyond the context be
    refused without tokenizing it: tokenizing 1 MB took 1.2 s and hundreds of MB."""
    try:
        return _LONGEST_TOKEN[tokenizer]
    except (KeyError, TypeError):
        pass
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else tokenizer.convert_ids_to_tokens(
        list(range(len(tokenizer))))
    longest = max((len(token) for token in vocab if isinstance(token, str)), default=1)
    try:
        _LONGEST_TOKEN[tokenizer] = longest
    except TypeError:  # not weakly referenceable: read again next time
        pass
    return longest


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


def ui_party(user: str | None, session: str) -> str:
    """Whom the scheduler is fair between for a UI request: the signed-in user, however
    many tabs (sessions) they open -- ten tabs of one user got every batch place, and
    the other users waited for one of their replies to end (hostile round 2, N51).
    Without sign-in the app has no people to tell apart, only tabs (on loopback every
    tab has the same address), so each tab is one."""
    return f"user {user}" if user else session
