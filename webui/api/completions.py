"""/v1/chat/completions and /v1/completions: a request is checked against the model it
names (samplers its backend honours, token ids, context) before anything is queued, then
runs through the Runtime's queue like a browser's, whole or streamed as server-sent events."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from webui.api import chat_fields
from webui.api.disconnect import on_disconnect
from webui.api.errors import APIError, error_body
from webui.api.logprobs import format_logprobs
from webui.api.models import target
from webui.api.schemas import ChatCompletionRequest, CompletionBase, CompletionRequest
from webui.api.state import RuntimeDep
from webui.api.usage import api_party, key_label
from webui.api.image_inputs import openai_images, require_vision, total_images
from webui.chat.prompt import PromptError, images_of, render_chat_prompt
from webui.chat.thinking import ThinkingAsk, thinking_format
from webui.chat.tool_parser import CallArguments, CallStart, Event, Text, ToolCallParser, parse_reply
from webui.chat.tools import Tool, ToolChoice, call_schema, read_tool_choice, read_tools, render_with_tools
from webui.errors import AppError
from webui.generation.chain import token_ids
from webui.generation.engine import GenerationError
from webui.generation.params import ParamsError, SamplingParams, changed_fields, make_params
from webui.generation.reasoning import Piece, ReasoningParser, ThinkingFormat, split
from webui.generation.request import EnginePrompt, GenerationStats, RenderedPrompt, most_chars_per_token
from webui.generation.samplers.grammar import unsupported_reason
from webui.loaders.base import LoadedModel
from webui.remote.client import RemoteError
from webui.remote.engine import RemoteModel
from webui.runtime import OwnedStream, Runtime

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, runtime: RuntimeDep):
    model = await target(runtime, body.model, request)
    # Checking the values (a grammar's compile), the extensions' hooks, the chat template
    # and the tokenizer are CPU work of unbounded size: off the event loop, so that one
    # large or hostile request does not stall every other route.
    prompt, params, names = await run_in_threadpool(prepare_chat, runtime, body, model)
    return await respond(runtime, request, body, prompt, params, True, model, names)


def prepare_chat(runtime: Runtime, body: ChatCompletionRequest, model: LoadedModel | RemoteModel):
    """The prompt, the checked values and the callable tool names (None: plain text)."""
    params = body.sampling()  # refuse bad values before rendering anything
    tools = read_tools(body.tools or [])
    choice = read_tool_choice(body.tool_choice, tools)
    # A required call is one call unless parallel calls are asked for (issue 31).
    parallel = body.parallel_tool_calls is True
    explicit = body.max_tokens is not None or body.max_completion_tokens is not None
    sent_as = {"json_schema": "response_format"} if body.response_format else {}
    fields = {"chat_template_kwargs": body.chat_template_kwargs, "reasoning_effort": body.reasoning_effort}
    messages = [m.as_dict() for m in body.messages]
    images = openai_images(body.messages, runtime.settings.allow_image_urls)  # checked, each refusal naming its part
    require_vision(model, total_images(images), capabilities_of(model))
    for index, found in images.items():
        messages[index]["images"] = found
    # Text Generation WebUI's chat fields (mode, character...): the chat tab's prompt.
    chat = (lambda sent, offered, values: chat_fields.chat_prompt(runtime, body, model, sent, offered, values)) \
        if body.chat_fields() else None
    return prepare_conversation(runtime, model, messages, tools, choice, parallel,
                                params, explicit, sent_as, body.thinking(),
                                tuple((k, v) for k, v in fields.items() if v is not None), chat)


def prepare_conversation(runtime: Runtime, model: LoadedModel | RemoteModel, messages: list[dict[str, Any]],
                         tools: tuple[Tool, ...], choice: ToolChoice, parallel: bool, params: SamplingParams,
                         explicit_max: bool, sent_as: dict[str, str] | None = None, ask: ThinkingAsk | None = None,
                         template_fields: tuple = (), chat: Callable[..., Any] | None = None):
    """A conversation in OpenAI's message shape -> (prompt, fitted values, callable tool
    names or None).  Shared by the chat routes (/v1/chat/completions, /v1/messages in
    webui/api/anthropic.py, /api/chat with tools), so that each renders and checks alike.
    `template_fields`: what a remote engine's template is given (chat_template_kwargs...).
    `chat`: builds the prompt instead, from (messages, offered tools, values): the chat
    tab's prompt for a request with Text Generation WebUI's chat fields."""
    offered = tools if choice.mode != "none" else ()
    params = forced_call(params, offered, choice, parallel, capabilities_of(model))
    names = frozenset(t.name for t in offered) if offered else None  # read the reply for calls
    tool_turns = any(m["role"] == "tool" or m.get("tool_calls") for m in messages)
    last_user = next((m for m in reversed(messages) if m["role"] == "user"), None)
    if last_user is not None:  # extensions' input_modifier sees the new message, as in the chat
        last_user["content"] = modified_input(runtime, last_user["content"], params, True)
    if chat is not None:
        prompt = chat(messages, offered, params)
        text = prompt.text if isinstance(prompt, RenderedPrompt) else ""
        return prompt, fit_params(params, model, text, explicit_max, sent_as), names
    if isinstance(model, RemoteModel):  # the engine applies its own chat template
        if offered or tool_turns:
            raise APIError(400, "tools and tool messages are not supported for a remote engine's model (yet)",
                           param="tools", code="unsupported_parameter")
        prompt = EnginePrompt(messages=tuple(messages), template_fields=template_fields)
        return prompt, fit_params(params, model, "", explicit_max, sent_as), None
    prompt, params = render_chat(model, messages, offered, ask or ThinkingAsk(), params, "messages")
    return prompt, fit_params(params, model, prompt.text, explicit_max, sent_as), names


def render_chat(model: LoadedModel, messages: list[dict[str, Any]], tools: tuple[Tool, ...], ask: ThinkingAsk,
                params: SamplingParams, field: str) -> tuple[RenderedPrompt, SamplingParams]:
    """A chat request's prompt with the model's template, its thinking switches set as
    asked, and the reply's thinking markers; `params` with the thinking budget that
    turning thinking off needs where the template has no switch for it.  Shared with the
    Ollama routes; `field` is the request's name for what a template failure blames."""
    tokenizer = model.tokenizer
    template = getattr(tokenizer, "chat_template", None)
    variables = ask.variables(template)
    budget = ask.budget(template, tokenizer, params.thinking_budget)
    if budget != params.thinking_budget:
        params = make_params({"thinking_budget": budget}, base=params)
    try:
        if tools or any(m["role"] == "tool" or m.get("tool_calls") for m in messages):
            text = render_with_tools(tokenizer, messages, tools, variables=variables)
        else:
            text = render_chat_prompt(tokenizer, messages, variables=variables)
    except PromptError as exc:
        exc.blame(field)
        raise
    # With images, the rendered text places them; the engine expands them (webui/generation/vision.py).
    return RenderedPrompt(text, (), thinking_format(template, tokenizer), images=images_of(messages)), params


def reply_parts(text: str, thinking: ThinkingFormat | None) -> tuple[str | None, str]:
    """(thinking, answer) of a whole chat reply; no thinking (None) for a model that does not think."""
    if thinking is None:
        return None, text
    reasoning, answer = split(text, thinking)
    return reasoning, answer


def forced_call(params: SamplingParams, tools: tuple[Tool, ...], choice: ToolChoice, parallel: bool,
                capabilities) -> SamplingParams:
    """With tool_choice required or a named function, the reply is constrained to a call
    whose arguments are valid against that function's schema (webui/chat/tools.py)."""
    schema = call_schema(tools, choice, parallel)
    if schema is None:
        return params
    if capabilities.ignores({"json_schema"}):
        raise APIError(400, f"tool_choice: '{choice.mode}' needs a grammar, which this model's backend cannot "
                       "enforce; use 'auto'", param="tool_choice", code="unsupported_parameter")
    if params.json_schema or params.grammar_string:
        raise APIError(400, "tool_choice: a required or named call cannot be combined with response_format or "
                       "grammar_string", param="tool_choice", code="invalid_value")
    try:
        return make_params({"json_schema": json.dumps(schema)}, base=params)
    except ParamsError as exc:
        raise APIError(400, f"tools: a function's parameters cannot constrain a call: {exc.reason}",
                       param="tools", code="invalid_value") from exc


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, runtime: RuntimeDep):
    model = await target(runtime, body.model, request)
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise APIError(400, "send one prompt per request", param="prompt")
        body.prompt = body.prompt[0]
    prompt, params = await run_in_threadpool(prepare_completion, runtime, body, model)  # CPU work: as for chat
    return await respond(runtime, request, body, prompt, params, False, model)


def prepare_completion(runtime: Runtime, body: CompletionRequest, model: LoadedModel | RemoteModel):
    params = body.sampling()
    prompt = modified_input(runtime, body.prompt, params, False)
    return prompt, fit(body, params, model, prompt)


def capabilities_of(model: LoadedModel | RemoteModel):
    return model.capabilities if isinstance(model, RemoteModel) else model.backend.capabilities


def fit(body: CompletionBase, params: SamplingParams, model: LoadedModel | RemoteModel, prompt: str) -> SamplingParams:
    # json_schema may have come from the caller's response_format: name what they sent.
    sent_as = {"json_schema": "response_format"} if body.response_format else {}
    return fit_params(params, model, prompt, body.max_tokens is not None or body.max_completion_tokens is not None,
                      sent_as)


def fit_params(params: SamplingParams, model: LoadedModel | RemoteModel, prompt: str,
               explicit_max: bool, sent_as: dict[str, str] | None = None) -> SamplingParams:
    """Check `params` against the model (token ids in its vocabulary, prompt in its
    context) before anything is queued, so errors come as a 400, not mid-stream.  A refusal
    names the field as the caller sent it (`sent_as`: our field -> the request's name).

    Without an explicit length (`explicit_max`) the reply may use the rest of the
    context (as OpenAI's API does).  Shared with the Ollama routes (webui/api/ollama.py).
    """
    # A sampler this model's backend would not honour is refused, never dropped silently.
    remote = isinstance(model, RemoteModel)
    ignored = capabilities_of(model).ignores(changed_fields(params) - {"max_new_tokens", "seed"})
    if ignored:
        backend = f"remote engine {model.engine.name}, {model.engine.config.kind}" if remote else model.loader
        field = (sent_as or {}).get(ignored[0], ignored[0])
        raise APIError(400, f"{field} is not supported by this model's backend ({backend})",
                       param=field, code="unsupported_parameter")
    if remote:
        return params  # the engine knows its context and tokenizer; it refuses what does not fit
    token_ids(params, model.tokenizer, model.backend.vocab_size(), model.backend.eos_ids())
    if params.grammar_string or params.json_schema:
        reason = unsupported_reason(model.tokenizer, model.backend.eos_ids())
        if reason:
            field = "grammar_string" if params.grammar_string else "json_schema"
            raise APIError(400, f"{field}: {reason}", param=field, code="unsupported_parameter")
    # truncation_length shortens the context the engine uses; the prompt must fit it.
    context = min(params.truncation_length or model.context_length, model.context_length)
    limit = "truncation_length" if context < model.context_length else "messages"
    # Far too long to fit whatever it tokenizes to (normalizers may drop characters: a
    # factor of 4 to spare): refused before the tokenizer builds a million tokens.
    if len(prompt) > 4 * context * most_chars_per_token(model.tokenizer):
        raise APIError(400, f"the context is {context} tokens; the prompt's {len(prompt):,} characters cannot fit it",
                       param=limit, code="context_length_exceeded")
    prompt_tokens = len(model.tokenizer(prompt)["input_ids"])
    room = context - prompt_tokens
    if not explicit_max and room > 0:
        return make_params({"max_new_tokens": min(room, SamplingParams().max_new_tokens)}, base=params)
    if params.max_new_tokens > room:
        raise APIError(
            400, f"the context is {context} tokens; the prompt has {prompt_tokens} and "
            f"max_tokens asks for {params.max_new_tokens} more", param=limit, code="context_length_exceeded",
        )
    return params


def modified_input(runtime: Runtime, text: str, params: SamplingParams, chat: bool) -> str:
    extensions = runtime.extensions
    if not extensions.has("input_modifier"):
        return text
    return extensions.input(text, runtime.extension_state(params, "api"), chat)


def modified_output(runtime: Runtime, text: str, params: SamplingParams, chat: bool) -> str:
    # Whole replies only: a streamed reply goes out piece by piece, before any end.
    extensions = runtime.extensions
    if not extensions.has("output_modifier"):
        return text
    return extensions.output(text, runtime.extension_state(params, "api"), chat)


def usage(prompt_tokens: int, completion_tokens: int, thinking_tokens: int | None = None) -> dict[str, Any]:
    """OpenAI's usage object; a thinking model's thinking tokens as its reasoning_tokens."""
    figures: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                               "total_tokens": prompt_tokens + completion_tokens}
    if thinking_tokens is not None:
        figures["completion_tokens_details"] = {"reasoning_tokens": thinking_tokens}
    return figures


def choice_params(params: SamplingParams, n: int) -> list[SamplingParams]:
    """The values for each of `n` choices: a fixed seed counts up, so each choice differs
    and the request is still reproducible.  All are validated before the first choice
    runs, so a seed that would pass the maximum is a 400, not a 500 after work was done."""
    if params.seed < 0:
        return [params] * n
    try:
        return [make_params({"seed": params.seed + index}, base=params) for index in range(n)]
    except ParamsError as exc:
        raise APIError(400, f"seed: with n={n} the seeds count up from seed, and {exc}", param="seed",
                       code="invalid_value") from exc


async def admitted(runtime: Runtime, owner: str, who: str, name: str, prompt: Any, choices: list[SamplingParams],
                   logprobs: int | None, model: LoadedModel | RemoteModel,
                   name_of: Callable[[str], str] | None = None) -> list[OwnedStream]:
    """Queue one request per choice, together (the engine admits them at the same step
    and decodes them as one batch), and wait until the engine has admitted each: a
    refusal on the model thread (a grammar this tokenizer cannot drive, a prompt the
    model cannot read) is raised here as its own AppError, a 4xx naming its field,
    before a streamed reply sends its first byte.  `owner` is this request alone (its
    Stop); `who` the party the scheduler is fair between (webui/api/usage.py: api_party).
    `name_of`: our field -> the request's name for it, for the refusal.  QueueFull (503)
    and ModelNotServed (404) carry their status."""
    streams = runtime.stream_many(owner, prompt, choices, logprobs, who=who, model=name)
    try:
        for stream in streams:
            await run_in_threadpool(stream.admitted)
    except BaseException as exc:
        for stream in streams:
            stream.cancel()
        if isinstance(exc, GenerationError):
            raise upstream_failure(exc, model) from exc
        if isinstance(exc, AppError) and exc.param and name_of is not None and name_of(exc.param) != exc.param:
            raise exc.as_field(name_of(exc.param)) from exc
        raise
    return streams


async def respond(runtime: Runtime, request: Request, body: CompletionBase, prompt: Any, params: SamplingParams,
                  chat: bool, model: LoadedModel | RemoteModel, tools: frozenset[str] | None = None):
    """`tools`: the function names a chat reply may call (None: the reply is only text).
    The `n` choices run together, one batch (`admitted`), streamed or whole."""
    count = body.logprob_count()  # a bad logprobs request is refused before any stream starts
    if count is not None and not capabilities_of(model).logprobs:
        raise APIError(400, "this model's backend cannot report log-probabilities", param="logprobs",
                       code="unsupported_parameter")
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    created = int(time.time())
    seeded = choice_params(params, body.n)  # every choice's values are checked first
    owner = f"api-{uuid.uuid4().hex}"
    async with on_disconnect(request.receive, lambda: runtime.stop(owner)) as gone:
        try:
            sent_as = {"json_schema": "response_format"} if body.response_format else {}
            streams = await admitted(runtime, owner, api_party(request), body.model, prompt, seeded, count, model,
                                     lambda field: sent_as.get(field, field))
            if body.stream:
                if gone.is_set():
                    raise APIError(499, "the client closed the request", code="client_closed")
                events = stream_events(runtime, request, body, streams, seeded, count, chat, rid, created, model,
                                       tools, owner)
                return StreamingResponse(events, media_type="text/event-stream", headers={"cache-control": "no-cache"})
            results = await asyncio.gather(*(read_to_end(stream, model) for stream in streams), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        finally:
            if not body.stream:
                runtime.stop(owner)  # a no-op when all finished; frees the model when the client left
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for index, (choice_values, done) in enumerate(zip(seeded, results, strict=True)):
        stats, text = done.stats, done.text
        prompt_tokens = stats.prompt_tokens
        completion_tokens += stats.new_tokens
        finish = "length" if stats.finish_reason == "length" else "stop"
        logprobs = format_logprobs(getattr(model, "tokenizer", None), done.logprobs, chat) if count is not None else None
        if chat:
            # The answer, not the thinking, is what extensions rewrite and tool calls are read from.
            reasoning, text = reply_parts(text, done.thinking)
            text = modified_output(runtime, text, choice_values, chat)
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if tools is not None:
                content, calls = parse_reply(text, tools)
                if calls:
                    message = {"role": "assistant", "content": content.strip() or None,
                               "tool_calls": [call.openai() for call in calls]}
                    finish = "tool_calls"
            if done.thinking is not None:
                message["reasoning_content"] = reasoning
            choices.append({"index": index, "message": message, "finish_reason": finish, "logprobs": logprobs})
        else:
            text = modified_output(runtime, text, choice_values, chat)
            shown = (prompt + text) if getattr(body, "echo", False) else text
            choices.append({"index": index, "text": shown, "finish_reason": finish, "logprobs": logprobs})
    runtime.usage.add(key_label(request.headers), prompt_tokens * body.n, completion_tokens)
    thinks = chat and any(done.thinking is not None for done in results)
    thinking_tokens = sum(done.stats.thinking_tokens for done in results) if thinks else None
    return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
            "model": body.model, "choices": choices, "usage": usage(prompt_tokens, completion_tokens, thinking_tokens)}


def upstream_failure(exc: GenerationError, model: LoadedModel | RemoteModel) -> AppError:
    """A remote engine's failure is a 502 (the engine behind us, not this server)."""
    if isinstance(model, RemoteModel) and not isinstance(exc, RemoteError):
        return RemoteError(str(exc))
    return exc


def failure_of(exc: AppError, model: LoadedModel | RemoteModel) -> AppError:
    """What the client hears for an error a reply ended with: a user error as it is (its
    status and field), a server error as upstream_failure says."""
    return upstream_failure(exc, model) if isinstance(exc, GenerationError) else exc


async def read_to_end(stream: OwnedStream, model: LoadedModel | RemoteModel) -> Finished:
    """A started stream read whole (off the event loop)."""
    pieces = []
    try:
        async for piece in iterate_in_threadpool(iter(stream)):
            pieces.append(piece)
    except AppError as exc:
        raise failure_of(exc, model) from exc
    if stream.stats is None:
        raise APIError(499, "the client closed the request", code="client_closed")
    return Finished("".join(pieces), stream.stats, stream.logprobs, stream.thinking)


async def start_streamed(runtime: Runtime, request: Request, name: str, prompt: Any, params: SamplingParams,
                         model: LoadedModel | RemoteModel,
                         name_of: Callable[[str], str] | None = None) -> tuple[str, OwnedStream]:
    """A reply to stream, admitted (`admitted`): (its owner, for Stop; the stream).  A
    refusal is raised before the response starts, in the route's own error shape."""
    owner = f"api-{uuid.uuid4().hex}"
    async with on_disconnect(request.receive, lambda: runtime.stop(owner)) as gone:
        (stream,) = await admitted(runtime, owner, api_party(request), name, prompt, [params], None, model, name_of)
    if gone.is_set():
        stream.cancel()
        raise APIError(499, "the client closed the request", code="client_closed")
    return owner, stream


async def run_to_end(runtime: Runtime, owner: str, who: str, name: str, prompt: Any, params: SamplingParams,
                     logprobs: int | None, model: LoadedModel | RemoteModel,
                     name_of: Callable[[str], str] | None = None) -> Finished:
    """One reply, whole: for the routes without `n` (webui/api/ollama.py, anthropic.py)."""
    try:
        (stream,) = await admitted(runtime, owner, who, name, prompt, [params], logprobs, model, name_of)
        return await read_to_end(stream, model)
    finally:
        runtime.stop(owner)  # a no-op when it finished; frees the model when the client left


@dataclass(frozen=True)
class Finished:
    """A whole reply: its text (thinking markers and all), figures, log-probabilities,
    and the thinking markers to split it by (None: the model does not think)."""

    text: str
    stats: GenerationStats
    logprobs: list
    thinking: ThinkingFormat | None


def error_event(exc: AppError) -> str:
    return f"data: {json.dumps(error_body(exc))}\n\n"


class StreamedChoice:
    """One choice of a streamed reply: its chunks, split into thinking and answer and read
    for tool calls as the pieces come, each chunk carrying the choice's index."""

    def __init__(self, index: int, stream: OwnedStream, chat: bool, count: int | None, model,
                 tools: frozenset[str] | None):
        self.index, self.stream, self.chat, self.count, self.model = index, stream, chat, count, model
        self.sent = 0  # log-probability entries already sent
        self.parser = ToolCallParser(tools) if tools is not None else None
        # A thinking model's reply is split as it streams: thinking as reasoning_content
        # deltas, the answer as content (and read for tool calls).  Set up at the first
        # piece: the engine knows the reply's thinking markers once the prompt is read.
        self.splitter: ReasoningParser | None = None

    def choice(self, text: str | None, finish: str | None) -> dict:
        logprobs = None
        if self.count is not None:
            entries = self.stream.logprobs
            logprobs = format_logprobs(getattr(self.model, "tokenizer", None), entries[self.sent:], self.chat)
            self.sent = len(entries)
        if self.chat:
            delta = {} if text is None else {"content": text}
            return {"index": self.index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
        return {"index": self.index, "text": text or "", "finish_reason": finish, "logprobs": logprobs}

    def _thought(self, text: str) -> dict:
        data = self.choice(None, None)
        data["delta"] = {"reasoning_content": text}
        return data

    def _answer(self, text: str) -> list[dict]:
        if self.parser is None:
            return [self.choice(text, None)]
        return [data for found in self.parser.feed(text) for data in call_deltas(found, self.choice, self.index)]

    def _events_for(self, pieces: list[Piece]) -> list[dict]:
        return [data for p in pieces for data in ([self._thought(p.text)] if p.part == "thinking" else self._answer(p.text))]

    def feed(self, piece: str) -> list[dict]:
        if self.chat and self.splitter is None and self.stream.thinking is not None:
            self.splitter = ReasoningParser(self.stream.thinking)
        return self._events_for(self.splitter.feed(piece) if self.splitter is not None else [Piece("answer", piece)])

    def finish(self) -> list[dict]:
        out = self._events_for(self.splitter.finish() if self.splitter is not None else [])
        for found in self.parser.finish() if self.parser is not None else ():
            out += call_deltas(found, self.choice, self.index)
        finish = "length" if self.stream.stats.finish_reason == "length" else "stop"
        if self.parser is not None and self.parser.calls:
            finish = "tool_calls"
        return [*out, self.choice(None if self.chat else "", finish)]


async def stream_events(runtime: Runtime, request: Request, body: CompletionBase, streams: list[OwnedStream],
                        choices: list[SamplingParams], count: int | None, chat: bool, rid: str, created: int,
                        model: LoadedModel | RemoteModel, tools: frozenset[str] | None, owner: str) -> AsyncIterator[str]:
    """The `n` admitted choices as server-sent events, each chunk one choice's piece with its
    index, in the order the pieces come (as vLLM streams `n`); usage adds the choices up."""
    key = key_label(request.headers)
    chunk_kind = "chat.completion.chunk" if chat else "text_completion"

    def event(data: list, **extra) -> str:
        head = {"id": rid, "object": chunk_kind, "created": created, "model": body.model, "choices": data}
        return f"data: {json.dumps({**head, **extra})}\n\n"

    states = [StreamedChoice(index, stream, chat, count, model, tools) for index, stream in enumerate(streams)]
    # Each choice is read on a worker thread of its own; its pieces meet here in arrival order.
    arrived: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, stream: OwnedStream) -> None:
        try:
            async for piece in iterate_in_threadpool(iter(stream)):
                await arrived.put((index, piece, None))
            await arrived.put((index, None, None))
        except AppError as exc:
            await arrived.put((index, None, exc))

    pumps: list[asyncio.Task] = []
    try:
        if chat:
            for state in states:
                yield event([{"index": state.index, "delta": {"role": "assistant", "content": ""},
                              "finish_reason": None, "logprobs": None}])
        # A reply may hold text back for a while (a stop string forming); the watcher
        # cancels within a step even when nothing is being sent.
        async with on_disconnect(request.receive, lambda: runtime.stop(owner)) as gone:
            pumps = [asyncio.create_task(pump(state.index, state.stream)) for state in states]
            running = len(states)
            while running:
                index, piece, failed = await arrived.get()
                if failed is not None:
                    yield error_event(failure_of(failed, model))
                    return
                if piece is None:
                    running -= 1
                    if not gone.is_set() and states[index].stream.stats is not None:
                        for data in states[index].finish():
                            yield event([data])
                    continue
                for data in states[index].feed(piece):
                    yield event([data])
        if gone.is_set() or any(state.stream.stats is None for state in states):
            return
        if body.stream_options and body.stream_options.include_usage:
            done = [state.stream.stats for state in states]
            thinks = chat and any(state.stream.thinking is not None for state in states)
            thinking = sum(stats.thinking_tokens for stats in done) if thinks else None
            yield event([], usage=usage(done[0].prompt_tokens, sum(stats.new_tokens for stats in done), thinking))
        yield "data: [DONE]\n\n"
    finally:
        # Runs when the client disconnects too (even while a piece is being sent): the
        # generation stops within a step, and what was made counts for the key.
        runtime.stop(owner)
        for task in pumps:
            task.cancel()
        for state in states:
            stats = state.stream.stats
            runtime.usage.add(key, stats.prompt_tokens if stats else state.stream.prompt_tokens,
                              stats.new_tokens if stats else state.stream.new_tokens)


def call_deltas(found: Event, choice, index: int = 0) -> list[dict]:
    """A streamed chat reply's chunks for one parser event: text as content; a call as
    OpenAI sends one, its id, type and name first, then its arguments in pieces as the
    model writes them (or at once, for a form read whole: webui/chat/tool_parser.py)."""
    if isinstance(found, Text):
        return [choice(found.text, None)]
    if isinstance(found, CallStart):
        parts = [{"index": found.index, "id": found.id, "type": "function",
                  "function": {"name": found.name, "arguments": ""}}]
    elif isinstance(found, CallArguments):
        parts = [{"index": found.index, "function": {"arguments": found.text}}]
    elif found.streamed:
        return []  # its head and arguments went out already
    else:
        call = found.call
        parts = [{"index": found.index, "id": call.id, "type": "function",
                  "function": {"name": call.name, "arguments": ""}},
                 {"index": found.index, "function": {"arguments": call.arguments}}]
    return [{"index": index, "delta": {"tool_calls": [part]}, "finish_reason": None, "logprobs": None}
            for part in parts]
