"""A model served by a remote engine, driven like the local GenerationEngine.

`RemoteModel.generate(request)` returns the same GenerationStream the local engine
does (text pieces, then GenerationStats; leaving the loop cancels), so the chat, the
notebook and the API read it unchanged.  The engine batches on its side, so requests
are not queued here: each runs at once as a task on the remote-engine loop, up to the
engine's `max_concurrent`; beyond that the caller hears "busy" at once (QueueFull).

Stop strings are sent to the engine and also applied here: an engine may ignore them,
and a chat template's turn-end strings must never show.  Cancel (Stop, a closed tab, a
dropped API client) cancels the task, which closes the upstream response at once.
"""

from __future__ import annotations

import base64

import asyncio
import threading
import time
from contextlib import aclosing
from typing import Any

from webui.generation.backend import Capabilities
from webui.generation.engine import GenerationStream
from webui.generation.request import (
    EnginePrompt,
    GenerationError,
    GenerationRequest,
    GenerationStats,
    QueueFull,
    TokenLogprob,
)
from webui.generation.reasoning import ThinkingFormat
from webui.generation.stops import StopStringFilter
from webui.images import png_bytes
from webui.remote.capabilities import capabilities, upstream_fields
from webui.remote.client import RemoteClient, RemoteError
from webui.remote.config import RemoteEngineConfig
from webui.remote.loop import LoopThread

# An engine's thinking (sent beside the answer) written into the reply between these
# markers, so that the chat and the API separate it as they do a local model's.
PASSED_THROUGH = ThinkingFormat(starts_open=True)


class RemoteEngine:
    """One configured engine: its client, its concurrency limit, its capabilities."""

    def __init__(self, config: RemoteEngineConfig, loop: LoopThread, stream_interval: float = 0.02):
        self.config = config
        self.client = RemoteClient(config)
        self.capabilities: Capabilities = capabilities(config.kind)
        self.stream_interval = stream_interval
        self._loop = loop
        self._lock = threading.Lock()
        self._active = 0

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def running(self) -> int:
        return self._active

    def list_models(self) -> list[str]:
        return self._loop.call(self.client.list_models(), timeout=self.config.timeout + 5)

    def generate(self, model: str, request: GenerationRequest) -> GenerationStream:
        with self._lock:
            if self._active >= self.config.max_concurrent:
                raise QueueFull(f"remote engine {self.name} already has {self._active} requests running; "
                                "try again shortly")
            self._active += 1
        stream = GenerationStream(request, self.stream_interval, self)
        stream.started = True  # nothing waits here: the engine queues on its side
        stream._mailbox.decide()  # and decides there: its refusals come as the reply's end
        self._loop.submit(self._run(model, stream))
        return stream

    def position(self, stream: GenerationStream) -> int | None:
        return None  # GenerationStream asks only while not started; ours start at once

    # -- on the loop -------------------------------------------------------------------
    async def _run(self, model: str, stream: GenerationStream) -> None:
        """Read the engine's reply until it ends or the request is cancelled, then tell the reader.

        The read is a task of its own, cancelled when the request is: this coroutine always
        runs to the end, so the reader always hears how its request ended."""
        request, mailbox = stream.request, stream._mailbox
        started = time.perf_counter()
        result = _Result()
        loop = asyncio.get_running_loop()
        cancelled = asyncio.Event()
        try:
            request.cancel.on_cancel(lambda: loop.call_soon_threadsafe(cancelled.set))
            path, payload, stops = self._payload(model, request)
            reading = asyncio.ensure_future(self._read(path, payload, StopStringFilter(stops), stream, result))
            waiting = asyncio.ensure_future(cancelled.wait())
            await asyncio.wait({reading, waiting}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if not reading.done():
                reading.cancel()  # closes the upstream response: the engine sees the client leave
                result.reason = "cancelled"
            await asyncio.gather(reading, return_exceptions=True)
            if not reading.cancelled() and reading.exception() is not None:
                raise reading.exception()
        except GenerationError as exc:  # the engine behind us failed: a 502, its key never shown
            mailbox.finish("error", RemoteError(self.client.scrub(str(exc))))
            return
        except Exception as exc:  # a reader must always hear how its request ended
            mailbox.finish("error", RemoteError(f"remote engine {self.name} failed: {exc.__class__.__name__}"))
            return
        finally:
            with self._lock:
                self._active -= 1
        mailbox.finish("done", GenerationStats(
            result.prompt_tokens, result.completion_tokens or stream.new_tokens, time.perf_counter() - started,
            result.reason, request.params.seed))

    async def _read(self, path: str, payload: dict[str, Any], stops: StopStringFilter,
                    stream: GenerationStream, result: _Result) -> None:
        chat = path == "chat/completions"
        thinking_open = False
        async with aclosing(self.client.stream(path, payload)) as events:
            async for event in events:
                if event.get("usage"):
                    result.take_usage(event["usage"], self.name)
                for choice in event["choices"][:1]:
                    text = _text(choice, chat, self.name)
                    if stream.request.logprobs is not None:
                        stream.logprobs.extend(_logprobs(choice.get("logprobs"), chat, self.name))
                    reasoning = _reasoning(choice, self.name) if chat else ""
                    if reasoning and (thinking_open or stream.thinking is None):
                        # The engine's thinking passes through as a local model's would: the
                        # reply opens in its thinking and the first answer text closes it.
                        if stream.thinking is None:
                            stream.thinking, thinking_open = PASSED_THROUGH, True
                        stream.new_tokens += 1
                        stream._mailbox.put_text(reasoning)
                    if text and thinking_open:
                        stream._mailbox.put_text(PASSED_THROUGH.close)
                        thinking_open = False
                    if text:
                        stream.new_tokens += 1  # a piece per event: tokens until the engine's usage says
                        shown = stops.feed(text)
                        if shown:
                            stream._mailbox.put_text(shown)
                        if stops.stopped:
                            result.reason = "stop"
                            return  # leaving closes the response: the engine stops generating
                    if choice.get("finish_reason"):
                        result.reason = "length" if choice["finish_reason"] == "length" else "stop"
        tail = stops.flush()
        if tail:
            stream._mailbox.put_text(tail)

    def _payload(self, model: str, request: GenerationRequest) -> tuple[str, dict[str, Any], tuple[str, ...]]:
        prompt = request.prompt
        if isinstance(prompt, str):
            prompt = EnginePrompt(text=prompt)
        elif not isinstance(prompt, EnginePrompt):
            prompt = getattr(prompt, "for_engine", lambda: None)()
            if prompt is None:
                raise GenerationError(
                    "a remote model tokenizes and applies its chat template on its side; this action "
                    "(continue, impersonate or a reply prefix in instruct mode, continue in chat-instruct "
                    "mode, or an extension's prompt) needs the local model's template: load a local model")
        stops = (*request.params.stop, *prompt.stops)
        if prompt.messages is not None:
            path, body = "chat/completions", {"messages": [with_image_parts(m) for m in prompt.messages],
                                              **dict(prompt.template_fields)}
        else:
            path, body = "completions", {"prompt": prompt.text}
        fields = upstream_fields(self.config.kind, request.params, tuple(dict.fromkeys(stops)))
        if request.logprobs is not None:  # OpenAI's two shapes: chat's flag and count, completions' count
            fields.update({"logprobs": True, "top_logprobs": request.logprobs} if prompt.messages is not None
                          else {"logprobs": request.logprobs})
        return path, {"model": model, **body, **fields, "stream_options": {"include_usage": True}}, stops


class _Result:
    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.reason = "stop"

    def take_usage(self, usage: Any, name: str) -> None:
        try:
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)
        except (AttributeError, TypeError, ValueError):
            raise RemoteError(f"remote engine {name} sent usage figures that are not numbers") from None


def _text(choice: Any, chat: bool, name: str) -> str:
    if not isinstance(choice, dict):
        raise RemoteError(f"remote engine {name} sent a choice that is not a JSON object")
    text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
    if text is not None and not isinstance(text, str):
        raise RemoteError(f"remote engine {name} sent text that is not a string")
    return text or ""


def _reasoning(choice: dict, name: str) -> str:
    """A chat event's thinking, under the names engines give it (vLLM's and DeepSeek's
    `reasoning_content`, the newer `reasoning`)."""
    delta = choice.get("delta") or {}
    text = delta.get("reasoning_content") or delta.get("reasoning")
    if text is not None and not isinstance(text, str):
        raise RemoteError(f"remote engine {name} sent thinking that is not a string")
    return text or ""


def _logprobs(data: Any, chat: bool, name: str) -> list[TokenLogprob]:
    """An event's log-probabilities, in either of OpenAI's layouts, as entries named by
    their text (the engine's token ids are not ours)."""
    if data is None:
        return []
    try:
        if chat:
            return [TokenLogprob(-1, float(item["logprob"]), (), text=str(item["token"]),
                                 top_texts=tuple((str(alt["token"]), float(alt["logprob"]))
                                                 for alt in item.get("top_logprobs") or ()))
                    for item in data.get("content") or ()]
        tops = data.get("top_logprobs") or [None] * len(data["tokens"])
        return [TokenLogprob(-1, float(logprob), (), text=str(token),
                             top_texts=tuple((str(t), float(lp)) for t, lp in (top or {}).items()))
                for token, logprob, top in zip(data["tokens"], data["token_logprobs"], tops, strict=True)]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise RemoteError(f"remote engine {name} sent log-probabilities in a shape this server cannot read") from None


class RemoteModel:
    """A model name bound to the engine serving it: what the Runtime routes a request to."""

    def __init__(self, engine: RemoteEngine, model: str):
        self.engine = engine
        self.name = model

    @property
    def capabilities(self) -> Capabilities:
        return self.engine.capabilities

    def generate(self, request: GenerationRequest) -> GenerationStream:
        return self.engine.generate(self.name, request)

    def generate_many(self, requests: list[GenerationRequest]) -> list[GenerationStream]:
        """Several requests at once (`n` choices); the engine batches them on its side.
        One that does not fit (QueueFull) cancels those already sent."""
        streams: list[GenerationStream] = []
        try:
            for request in requests:
                streams.append(self.generate(request))
        except QueueFull:
            for stream in streams:
                stream.request.cancel.cancel()
            raise
        return streams


def with_image_parts(message: dict[str, Any]) -> dict[str, Any]:
    """A message for the engine: one with images (checked ImageInputs, webui/images.py)
    becomes OpenAI content parts, its text then each image as a PNG data: URL."""
    images = message.get("images")
    if not images:
        return {k: v for k, v in message.items() if k != "images"}
    parts: list[dict[str, Any]] = [{"type": "text", "text": message.get("content") or ""}]
    for image in images:
        encoded = base64.b64encode(png_bytes(image.image)).decode("ascii")
        parts.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{encoded}"}})
    return {**{k: v for k, v in message.items() if k != "images"}, "content": parts}
