"""Anthropic's Messages API on the API port (POST /v1/messages, /v1/messages/count_tokens),
so that Anthropic's official client and programs written for it work unchanged.

A request is mapped (webui/api/anthropic_schemas.py) onto what the OpenAI chat route
uses, and goes the same way: the same model check, prompt rendering, tool offer, forced
call grammar, context check (webui/api/completions.py, prepare_conversation), queue,
keys and usage count.  Only the reply's shape is Anthropic's: content blocks (`text`,
`tool_use`), `stop_reason`, and, streamed, its event sequence (message_start, then per
block content_block_start / _delta / _stop, then message_delta and message_stop).
Errors are AppErrors like everywhere; webui/api/errors.py writes them in Anthropic's
`{"type": "error", "error": {"type", "message"}}` shape on these paths.

A thinking model's thinking comes as a `thinking` block before the answer (streamed as
thinking_delta events), its `signature` empty: there is nothing to sign on a local
server, and clients send the block back as it is.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from webui.api.anthropic_schemas import CountTokensRequest, MessagesRequest, field_name
from webui.api.completions import (
    capabilities_of,
    modified_output,
    prepare_conversation,
    reply_parts,
    failure_of,
    run_to_end,
    start_streamed,
)
from webui.api.disconnect import on_disconnect
from webui.api.errors import APIError, anthropic_error_body
from webui.api.image_inputs import require_vision
from webui.api.models import target
from webui.api.state import RuntimeDep
from webui.api.usage import api_party, key_label
from webui.chat.thinking import thinking_format
from webui.chat.tool_parser import Call, CallArguments, CallStart, Text, ToolCallParser, parse_reply
from webui.errors import AppError
from webui.generation.reasoning import Piece, ReasoningParser
from webui.generation.request import GenerationStats, prompt_ids
from webui.loaders.base import LoadedModel
from webui.remote.engine import RemoteModel
from webui.runtime import OwnedStream, Runtime

router = APIRouter(tags=["Anthropic"])


def prepare(runtime: Runtime, body: MessagesRequest, model: LoadedModel | RemoteModel):
    params = body.sampling()  # bad values are refused before anything is rendered
    tools = body.offered_tools()
    choice, parallel = body.choice(tools)
    ask = body.thinking.ask() if body.thinking is not None else None
    if ask is not None and ask.enable and isinstance(model, LoadedModel) and thinking_format(
            getattr(model.tokenizer, "chat_template", None), model.tokenizer) is None:
        raise APIError(400, f"thinking: the model '{body.model}' does not think (its chat template has no thinking)",
                       param="thinking", code="unsupported_parameter")
    messages = body.conversation()
    require_vision(model, sum(len(m.get("images", ())) for m in messages), capabilities_of(model))
    # max_tokens is required and explicit: one that cannot fit the context is a 400, as Anthropic's is.
    return prepare_conversation(runtime, model, messages, tools, choice, parallel, params, True, ask=ask)


@router.post("/v1/messages")
async def messages(body: MessagesRequest, request: Request, runtime: RuntimeDep):
    model = await target(runtime, body.model, request)
    prompt, params, names = await run_in_threadpool(prepare, runtime, body, model)  # CPU work: off the loop
    mid = f"msg_{uuid.uuid4().hex[:24]}"
    if body.stream:
        owner, stream = await start_streamed(runtime, request, body.model, prompt, params, model, field_name)
        events = stream_events(runtime, request, body, model, owner, stream, names, mid)
        return StreamingResponse(events, media_type="text/event-stream", headers={"cache-control": "no-cache"})
    owner = f"api-{uuid.uuid4().hex}"
    async with on_disconnect(request.receive, lambda: runtime.stop(owner)):
        done = await run_to_end(runtime, owner, api_party(request), body.model, prompt, params, None, model,
                                field_name)
    stats = done.stats
    runtime.usage.add(key_label(request.headers), stats.prompt_tokens, stats.new_tokens)
    reasoning, text = reply_parts(done.text, done.thinking)
    text = modified_output(runtime, text, params, True)
    content: list[dict[str, Any]] = []
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    calls = []
    if names is not None:
        text, calls = parse_reply(text, names)
        text = text.strip() if calls else text
    if text or not calls:
        content.append({"type": "text", "text": text})
    content += [{"type": "tool_use", "id": tool_use_id(c.id), "name": c.name, "input": call_input(c.arguments)}
                for c in calls]
    reason, sequence = stop_reason(stats, body, bool(calls))
    return {**message_head(mid, body.model), "content": content, "stop_reason": reason, "stop_sequence": sequence,
            "usage": message_usage(stats.prompt_tokens, stats.new_tokens, stats.cached_tokens)}


@router.post("/v1/messages/count_tokens")
async def count_tokens(body: CountTokensRequest, runtime: RuntimeDep):
    """The prompt's tokens as this model's template renders the request."""
    model = await target(runtime, body.model)
    if isinstance(model, RemoteModel):
        raise AppError("count_tokens: a remote engine's model renders its own prompt; it cannot be counted here",
                       param="model", code="unsupported_parameter", status=400)
    prompt, _, _ = await run_in_threadpool(prepare, runtime, body, model)
    tokens = await run_in_threadpool(lambda: len(prompt_ids(model.tokenizer, prompt.text)))
    return {"input_tokens": tokens}


def message_head(mid: str, model: str) -> dict[str, Any]:
    return {"id": mid, "type": "message", "role": "assistant", "model": model}


def message_usage(prompt_tokens: int, new_tokens: int, cached: int = 0) -> dict[str, int]:
    # Anthropic counts cache reads apart from input_tokens; our prefix cache's reuse is that.
    return {"input_tokens": prompt_tokens - cached, "output_tokens": new_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}


def tool_use_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


def call_input(arguments: str) -> Any:
    """A call's arguments as Anthropic's `input` object (a reply cut short may hold
    unfinished JSON: then the text is kept under one key rather than lost)."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return {"_unparsed": arguments}
    return value if isinstance(value, dict) else {"_unparsed": arguments}


def stop_reason(stats: GenerationStats, body: MessagesRequest, called: bool) -> tuple[str, str | None]:
    if called:
        return "tool_use", None
    if stats.finish_reason == "length":
        return "max_tokens", None
    if stats.stop_string is not None and stats.stop_string in (body.stop_sequences or ()):
        return "stop_sequence", stats.stop_string
    return "end_turn", None


def sse(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"


class Blocks:
    """Anthropic's content blocks as a reply streams: thinking, then each parser event
    (webui/chat/tool_parser.py) opens, extends or closes a block, and the events say so
    in order."""

    def __init__(self) -> None:
        self.index = -1
        self.open: str | None = None  # "text", "tool_use" or None
        self.calls = 0

    def _start(self, block: dict[str, Any]) -> list[str]:
        events = self.close()
        self.index += 1
        self.open = block["type"]
        return events + [sse("content_block_start", {"index": self.index, "content_block": block})]

    def close(self) -> list[str]:
        if self.open is None:
            return []
        self.open = None
        return [sse("content_block_stop", {"index": self.index})]

    def _delta(self, delta: dict[str, Any]) -> str:
        return sse("content_block_delta", {"index": self.index, "delta": delta})

    def text(self, piece: str) -> list[str]:
        if not piece:
            return []
        events = [] if self.open == "text" else self._start({"type": "text", "text": ""})
        return events + [self._delta({"type": "text_delta", "text": piece})]

    def thinking(self, piece: str) -> list[str]:
        if not piece:
            return []
        events = [] if self.open == "thinking" else self._start({"type": "thinking", "thinking": "", "signature": ""})
        return events + [self._delta({"type": "thinking_delta", "thinking": piece})]

    def event(self, found: Text | CallStart | CallArguments | Call) -> list[str]:
        if isinstance(found, Text):
            return self.text(found.text)
        if isinstance(found, CallStart):
            self.calls += 1
            return self._start({"type": "tool_use", "id": tool_use_id(found.id), "name": found.name, "input": {}})
        if isinstance(found, CallArguments):
            return [self._delta({"type": "input_json_delta", "partial_json": found.text})]
        if found.streamed:  # its arguments went out piece by piece: the block ends here
            return self.close()
        self.calls += 1
        call = found.call
        return self._start({"type": "tool_use", "id": tool_use_id(call.id), "name": call.name, "input": {}}) + [
            self._delta({"type": "input_json_delta", "partial_json": call.arguments})] + self.close()


async def stream_events(runtime: Runtime, request: Request, body: MessagesRequest, model: LoadedModel | RemoteModel,
                        owner: str, stream: OwnedStream, names: frozenset[str] | None, mid: str) -> AsyncIterator[str]:
    """An admitted reply (webui/api/completions.py start_streamed) as Anthropic's events."""
    blocks = Blocks()
    parser = ToolCallParser(names) if names is not None else None
    splitter: ReasoningParser | None = None  # a thinking model's reply, split as it streams
    started = False

    def events_for(pieces: list[Piece]) -> list[str]:
        out: list[str] = []
        for part in pieces:
            if part.part == "thinking":
                out += blocks.thinking(part.text)
                continue
            for item in parser.feed(part.text) if parser is not None else [Text(part.text)]:
                out += blocks.event(item)
        return out

    def head() -> list[str]:
        nonlocal started
        if started:
            return []
        started = True
        # Sent once the request is admitted, so that input_tokens is known.
        message = {**message_head(mid, body.model), "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": message_usage(stream.prompt_tokens, 0)}
        return [sse("message_start", {"message": message}), sse("ping", {})]

    try:
        async with on_disconnect(request.receive, lambda: runtime.stop(owner)) as gone:
            async for piece in iterate_in_threadpool(iter(stream)):
                for event in head():
                    yield event
                if splitter is None and stream.thinking is not None:
                    splitter = ReasoningParser(stream.thinking)
                for event in events_for(splitter.feed(piece) if splitter is not None else [Piece("answer", piece)]):
                    yield event
        if gone.is_set():
            return
        for event in head():
            yield event
        for event in events_for(splitter.finish() if splitter is not None else []):
            yield event
        for item in parser.finish() if parser is not None else ():
            for event in blocks.event(item):
                yield event
        if blocks.index < 0:  # an empty reply still has its one (empty) text block
            yield sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            blocks.index, blocks.open = 0, "text"
        for event in blocks.close():
            yield event
        stats = stream.stats
        reason, sequence = stop_reason(stats, body, blocks.calls > 0)
        yield sse("message_delta", {"delta": {"stop_reason": reason, "stop_sequence": sequence},
                                    "usage": {"output_tokens": stats.new_tokens}})
        yield sse("message_stop", {})
    except AppError as exc:
        yield sse("error", anthropic_error_body(failure_of(exc, model)))
    finally:
        runtime.stop(owner)  # the client left mid-stream: the generation stops within a step
        stats = stream.stats
        runtime.usage.add(key_label(request.headers), stats.prompt_tokens if stats else stream.prompt_tokens,
                          stats.new_tokens if stats else stream.new_tokens)
