"""Ollama's API on the API port, so that `ollama.Client(host=...)` and programs written
for Ollama work unchanged: /api/version, /api/tags, /api/show, /api/ps, /api/generate,
/api/chat (NDJSON streams, Ollama's default), /api/embed and the older /api/embeddings.

/api/chat takes `tools` and answers calls in `message.tool_calls` as Ollama does (the
arguments an object; streamed, each call whole once read), with the conversation's
earlier calls and `role: tool` results rendered as on /v1 (prepare_conversation).

Everything goes the way the OpenAI routes go (webui/api/completions.py): the same model
check (a name must be the loaded model or a remote engine's), the same sampling values
(Ollama's `options`, mapped in webui/api/ollama_schemas.py), the same context check,
queue, keys, usage count and extension hooks.  Errors are AppErrors like everywhere;
webui/api/errors.py writes them in Ollama's `{"error": "..."}` shape on these paths.

Models load as in Ollama: a request naming a listed model loads it (when the server
loads on demand, webui/resident.py), and `keep_alive` says how long it stays after its
last reply (0: unloaded as soon as the reply ends; negative: until unloaded).  What
Ollama does that this server does not: models are not pulled, created, copied or
deleted here (the Model tab and /v1/internal do that, with the admin key).  A thinking model's thinking comes apart
from its answer, in `thinking`, as Ollama gives it; `think` turns it on or off.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from webui.api.completions import (
    capabilities_of,
    fit_params,
    modified_input,
    modified_output,
    prepare_conversation,
    render_chat,
    reply_parts,
    failure_of,
    run_to_end,
    start_streamed,
)
from webui.api.disconnect import on_disconnect
from webui.api.embeddings import checked_dimensions, embed_inputs
from webui.api.errors import APIError, ollama_error_body
from webui.api.models import all_cards, sees, target
from webui.api.ollama_schemas import (
    keep_alive_seconds,
    OllamaChatRequest,
    OllamaEmbeddingsRequest,
    OllamaEmbedRequest,
    OllamaGenerateRequest,
    OllamaGenerating,
    OllamaShowRequest,
    ollama_sampling,
)
from webui.api.state import RuntimeDep
from webui.api.usage import api_party, key_label
from webui.api.image_inputs import ollama_images, require_vision
from webui.chat.thinking import thinking_format
from webui.chat.tool_parser import Call, Event, Text, ToolCall, ToolCallParser, parse_reply
from webui.chat.tools import ToolChoice, read_tools
from webui.errors import AppError
from webui.generation.embedding import normalize
from webui.generation.params import SamplingParams
from webui.loaders.base import LoadedModel
from webui.generation.reasoning import Piece, ReasoningParser
from webui.generation.request import EnginePrompt, RenderedPrompt
from webui.remote.engine import RemoteModel
from webui.runtime import OwnedStream, Runtime

router = APIRouter(tags=["Ollama"])

# The Ollama API level these routes follow: clients compare it to decide what they may
# send (/api/embed and `dimensions` are newer than 0.3; `format` schemas than 0.5).
OLLAMA_VERSION = "0.6.0"


@router.get("/", include_in_schema=False)
@router.head("/", include_in_schema=False)
async def root():
    # What Ollama answers at its root: programs probe it to find a server.
    return PlainTextResponse("Ollama is running")


@router.get("/api/version")
async def version():
    return {"version": OLLAMA_VERSION}


@router.get("/api/tags")
async def tags(runtime: RuntimeDep):
    """Every model a request may name: the loaded one and the remote engines'."""
    return {"models": [await run_in_threadpool(entry, runtime, card["id"]) for card in await all_cards(runtime)]}


@router.get("/api/ps")
async def running(runtime: RuntimeDep):
    """Every resident model: since when (`loaded_at`, ours) and until when (`expires_at`:
    its keep_alive or the idle timeout after its last use; far ahead when never)."""
    models = []
    for resident in runtime.resident.entries():
        loaded = resident.loaded
        if loaded is None:
            continue
        info = await run_in_threadpool(entry, runtime, resident.name, loaded)
        expires = resident.expires_at(runtime.resident.idle_seconds, runtime.resident.clock)
        info.update(size_vram=info["size"] if loaded.device.startswith("cuda") else 0,
                    context_length=loaded.context_length, expires_at=expires or NEVER,
                    loaded_at=stamp_of(resident.since))
        models.append(info)
    return {"models": models}


NEVER = "2318-11-26T00:00:00Z"  # what a model kept forever shows as expires_at (Ollama shows a far date too)


def stamp_of(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).isoformat().replace("+00:00", "Z")


@router.post("/api/show")
async def show(body: OllamaShowRequest, runtime: RuntimeDep):
    model = await target(runtime, body.model)
    info = await run_in_threadpool(entry, runtime, body.model)
    capabilities = ["completion"]
    template = ""
    model_info: dict[str, Any] = {}
    if isinstance(model, LoadedModel):
        template = getattr(model.tokenizer, "chat_template", None) or ""
        family = info["details"]["family"]
        model_info = {"general.architecture": family, "general.parameter_count": model.parameters,
                      f"{family}.context_length": model.context_length}
        width = hidden_size(model)
        if width:
            model_info[f"{family}.embedding_length"] = width
        if model.backend.capabilities.embeddings:
            capabilities.append("embedding")
        if thinking_format(template, model.tokenizer) is not None:
            capabilities.append("thinking")  # as Ollama marks a model that takes `think`
    if isinstance(model, LoadedModel) and sees(model):  # a remote engine's model: its engine knows
        capabilities.append("vision")
    return {"modelfile": f"# served by webui from {info['details']['format']} files; no Modelfile",
            "parameters": "", "template": template, "details": info["details"], "model_info": model_info,
            "capabilities": capabilities, "modified_at": info["modified_at"]}


async def checked(runtime: Runtime, body: OllamaGenerating,
                  request: Request) -> tuple[LoadedModel | RemoteModel, SamplingParams, bool]:
    """The model the request names (loaded now if it may be), and its sampling values
    (options and format), with everything this server cannot honour refused before
    anything is queued; the request's keep_alive is recorded for the model."""
    keep = keep_alive_seconds(body.keep_alive)
    model = await target(runtime, body.model, request)
    if keep is not None and isinstance(model, LoadedModel):
        runtime.resident.keep_alive(model.name, keep)
    # The format's compile (a grammar) is CPU work: off the event loop (as on /v1).
    params, explicit = await run_in_threadpool(checked_values, body)
    return model, params, explicit


def checked_values(body: OllamaGenerating) -> tuple[SamplingParams, bool]:
    body.refuse_unsupported()
    params, explicit = ollama_sampling(body.options)
    return body.structured(params), explicit


@router.post("/api/generate")
async def generate(body: OllamaGenerateRequest, request: Request, runtime: RuntimeDep):
    model, params, explicit = await checked(runtime, body, request)
    if not body.prompt:  # Ollama: an empty prompt only loads the model (or, with keep_alive 0, unloads it)
        return await loaded_reply(runtime, body, chat=False)
    images = await run_in_threadpool(ollama_images, body.images, "images")  # decoded and checked: CPU work
    require_vision(model, len(images), capabilities_of(model))
    if body.raw:  # the prompt as it is, no template (Ollama's raw mode)
        if images:
            raise APIError(400, "images: raw mode has no template to place images in; send it without raw",
                           param="images", code="unsupported_parameter")
        prompt: Any = await run_in_threadpool(modified_input, runtime, body.prompt, params, False)
        fitted = await run_in_threadpool(fit_params, params, model, prompt, explicit, body.sent_as())
        return await reply(runtime, request, body, model, prompt, fitted, False)
    # Not raw: Ollama puts the prompt (and system) through the model's chat template.
    messages = [{"role": "system", "content": body.system}] if body.system else []
    messages.append({"role": "user", "content": modified_input(runtime, body.prompt, params, True),
                     **({"images": images} if images else {})})
    return await chat_reply(runtime, request, body, model, messages, params, explicit, chat=False)


@router.post("/api/chat")
async def chat(body: OllamaChatRequest, request: Request, runtime: RuntimeDep):
    model, params, explicit = await checked(runtime, body, request)
    if not body.messages:  # Ollama: no messages only loads the model (or, with keep_alive 0, unloads it)
        return await loaded_reply(runtime, body, chat=True)
    messages = await run_in_threadpool(ollama_messages, body)
    require_vision(model, sum(len(m.get("images", ())) for m in messages), capabilities_of(model))
    if body.tools or any(m["role"] == "tool" or m.get("tool_calls") for m in messages):
        # With tools, as /v1/chat/completions renders and reads them (always "auto": Ollama has no tool_choice).
        prompt, fitted, names = await run_in_threadpool(with_tools, runtime, body, model, messages, params, explicit)
        return await reply(runtime, request, body, model, prompt, fitted, True, names)
    last_user = next((m for m in reversed(messages) if m["role"] == "user"), None)
    if last_user is not None:  # extensions' input_modifier sees the new message, as on /v1
        last_user["content"] = modified_input(runtime, last_user["content"], params, True)
    return await chat_reply(runtime, request, body, model, messages, params, explicit, chat=True)


# Model management Ollama clients try (ollama pull, ollama rm...): refused in Ollama's own
# error shape, saying where this server does it, rather than a bare 404.
@router.post("/api/pull")
@router.post("/api/push")
@router.post("/api/create")
@router.post("/api/copy")
@router.delete("/api/delete")
@router.post("/api/blobs/{digest}")
@router.head("/api/blobs/{digest}")
async def not_managed(request: Request):
    what = request.url.path.rsplit("/api/", 1)[-1].split("/")[0]
    raise APIError(400, f"{what}: models are not {MANAGED[what]} through the Ollama API here; use the Model tab "
                   "(its hub panel downloads models) or the admin routes under /v1/internal", code="not_supported")


MANAGED = {"pull": "pulled", "push": "pushed", "create": "created", "copy": "copied", "delete": "deleted",
           "blobs": "uploaded"}


@router.post("/api/embed")
async def embed(body: OllamaEmbedRequest, request: Request, runtime: RuntimeDep):
    started = time.perf_counter()
    inputs = [body.input] if isinstance(body.input, str) else list(body.input)
    inputs = [text for text in inputs if text]
    params, _ = ollama_sampling(body.options)
    if not inputs:  # Ollama: nothing to embed only loads the model
        await target(runtime, body.model, request)
        return {"model": body.model, "embeddings": []}
    vectors, tokens = await embed_inputs(runtime, request, body.model, inputs, truncate=body.truncate,
                                         context=params.truncation_length or None)
    vectors = normalize(vectors, checked_dimensions(body.dimensions, vectors.shape[1]))
    return {"model": body.model, "embeddings": vectors.tolist(), "total_duration": nanoseconds(started),
            "load_duration": 0, "prompt_eval_count": tokens}


@router.post("/api/embeddings")
async def embeddings_legacy(body: OllamaEmbeddingsRequest, request: Request, runtime: RuntimeDep):
    """Ollama's older route: one prompt, and (as Ollama's) the vector not normalised."""
    ollama_sampling(body.options)
    if not body.prompt:
        await target(runtime, body.model, request)
        return {"embedding": []}
    vectors, _ = await embed_inputs(runtime, request, body.model, [body.prompt], truncate=True, param="prompt")
    return {"embedding": vectors[0].tolist()}


def with_tools(runtime: Runtime, body: OllamaChatRequest, model: LoadedModel | RemoteModel,
               messages: list[dict[str, Any]], params: SamplingParams, explicit: bool):
    tools = read_tools(body.tools or [])
    choice = ToolChoice("auto" if tools else "none")
    return prepare_conversation(runtime, model, messages, tools, choice, True, params, explicit, body.sent_as(),
                                body.thinking())


def ollama_call(call: ToolCall, index: int) -> dict[str, Any]:
    """A call as Ollama writes it: the arguments an object, not JSON text."""
    try:
        arguments = json.loads(call.arguments)
    except ValueError:  # a reply cut short inside its arguments: kept as text, not lost
        arguments = {"_unparsed": call.arguments}
    return {"function": {"index": index, "name": call.name, "arguments": arguments}}


# -- replies -----------------------------------------------------------------------------

async def chat_reply(runtime: Runtime, request: Request, body: OllamaGenerating, model: LoadedModel | RemoteModel,
                     messages: list[dict[str, str]], params: SamplingParams, explicit: bool, chat: bool):
    # The chat template and the tokenizer are CPU work of unbounded size: off the event loop.
    prompt, fitted = await run_in_threadpool(templated, body, model, messages, params, explicit, chat)
    return await reply(runtime, request, body, model, prompt, fitted, chat)


def templated(body: OllamaGenerating, model: LoadedModel | RemoteModel, messages: list[dict[str, str]],
              params: SamplingParams, explicit: bool, chat: bool) -> tuple[Any, SamplingParams]:
    if isinstance(model, RemoteModel):  # the engine applies its own chat template
        return EnginePrompt(messages=tuple(messages)), fit_params(params, model, "", explicit, body.sent_as())
    if body.think not in (None, False) and thinking_format(model.tokenizer.chat_template, model.tokenizer) is None:
        raise APIError(400, f"think: the model '{body.model}' does not think (its chat template has no thinking)",
                       param="think", code="unsupported_parameter")  # as Ollama refuses it
    prompt, params = render_chat(model, messages, (), body.thinking(), params, "messages" if chat else "prompt")
    return prompt, fit_params(params, model, prompt.text, explicit, body.sent_as())


def ollama_messages(body: OllamaChatRequest) -> list[dict[str, Any]]:
    """The chat's messages, each with its checked images (refusals name messages[i].images[j])."""
    messages: list[dict[str, Any]] = []
    for index, m in enumerate(body.messages):
        images = ollama_images(m.images, f"messages[{index}].images")
        if images and m.role != "user":
            raise APIError(400, "images are read in user messages only", param=f"messages[{index}].images",
                           code="invalid_value")
        messages.append({**m.as_dict(), **({"images": images} if images else {})})
    return messages


async def reply(runtime: Runtime, request: Request, body: OllamaGenerating, model: LoadedModel | RemoteModel,
                prompt: Any, params: SamplingParams, chat: bool, names: frozenset[str] | None = None):
    """The whole reply as one JSON object, or (Ollama's default) NDJSON lines.  `names`:
    the functions a chat reply may call (None: the reply is only text)."""
    if body.stream:
        started = time.perf_counter()
        owner, stream = await start_streamed(runtime, request, body.model, prompt, params, model, body.field_name)
        lines = stream_lines(runtime, request, body.model, owner, stream, started, prompt, model, chat, names)
        return StreamingResponse(lines, media_type="application/x-ndjson")
    started = time.perf_counter()
    owner = f"api-{uuid.uuid4().hex}"
    async with on_disconnect(request.receive, lambda: runtime.stop(owner)):
        done = await run_to_end(runtime, owner, api_party(request), body.model, prompt, params, None, model,
                                body.field_name)
    stats = done.stats
    runtime.usage.add(key_label(request.headers), stats.prompt_tokens, stats.new_tokens)
    # A raw /api/generate prompt is the caller's own: its reply is not split.
    thinking = done.thinking if isinstance(prompt, RenderedPrompt) else None
    reasoning, text = reply_parts(done.text, thinking)
    text = modified_output(runtime, text, params, chat)
    calls: list[ToolCall] = []
    if names is not None:
        content, calls = parse_reply(text, names)
        text = content.strip() if calls else text
    answer = piece(body.model, text, chat, thinking=reasoning)
    if calls:
        answer["message"]["tool_calls"] = [ollama_call(call, index) for index, call in enumerate(calls)]
    return {**answer, **final(stats, started)}


async def stream_lines(runtime: Runtime, request: Request, name: str, owner: str, stream: OwnedStream,
                       started: float, prompt: Any, model: LoadedModel | RemoteModel, chat: bool,
                       names: frozenset[str] | None = None) -> AsyncIterator[str]:
    """An admitted reply (webui/api/completions.py start_streamed) as Ollama's NDJSON lines."""
    failed = False
    parser = ToolCallParser(names) if names is not None else None

    def lines_for(part: Piece) -> list[dict[str, Any]]:
        if parser is None or part.part == "thinking":
            return [split_piece(name, part, chat)]
        return tool_lines(name, parser.feed(part.text))

    try:
        splitter: ReasoningParser | None = None  # a thinking model's reply, split as it streams
        async with on_disconnect(request.receive, lambda: runtime.stop(owner)) as gone:
            async for text in iterate_in_threadpool(iter(stream)):
                if splitter is None and stream.thinking is not None and isinstance(prompt, RenderedPrompt):
                    splitter = ReasoningParser(stream.thinking)
                for part in splitter.feed(text) if splitter is not None else [Piece("answer", text)]:
                    for out in lines_for(part):
                        yield line(out)
        if not gone.is_set():
            for part in splitter.finish() if splitter is not None else []:
                for out in lines_for(part):
                    yield line(out)
            for out in tool_lines(name, parser.finish()) if parser is not None else ():
                yield line(out)
            yield line({**piece(name, "", chat), **final(stream.stats, started)})
    except AppError as exc:
        failed = True
        yield line(ollama_error_body(failure_of(exc, model)))
    finally:
        runtime.stop(owner)  # the client left mid-stream: the generation stops within a step
        if not failed:
            # Counted here, once, however the stream ended: a client that leaves may close
            # this generator at a yield, and the tokens made until then were work for its key.
            stats = stream.stats
            made = (stats.prompt_tokens, stats.new_tokens) if stats else (stream.prompt_tokens, stream.new_tokens)
            runtime.usage.add(key_label(request.headers), *made)


def tool_lines(name: str, events: list[Event]) -> list[dict[str, Any]]:
    """Stream lines for parser events: text as it comes, each call whole once read (as Ollama
    streams calls: not in pieces)."""
    out = []
    for event in events:
        if isinstance(event, Text):
            out.append(piece(name, event.text, True, done=False))
        elif isinstance(event, Call):
            chunk = piece(name, "", True, done=False)
            chunk["message"]["tool_calls"] = [ollama_call(event.call, event.index)]
            out.append(chunk)
    return out


def line(data: dict[str, Any]) -> str:
    return json.dumps(data) + "\n"


def piece(name: str, text: str, chat: bool, done: bool = True, thinking: str | None = None) -> dict[str, Any]:
    """One reply object or stream line; `thinking` as Ollama gives a thinking model's."""
    if chat:
        message = {"role": "assistant", "content": text, **({"thinking": thinking} if thinking else {})}
        return {"model": name, "created_at": now(), "message": message, "done": done}
    extra = {"thinking": thinking} if thinking else {}
    return {"model": name, "created_at": now(), "response": text, **extra, "done": done}


def split_piece(name: str, part: Piece, chat: bool) -> dict[str, Any]:
    if part.part == "thinking":
        return piece(name, "", chat, done=False, thinking=part.text)
    return piece(name, part.text, chat, done=False)


def final(stats, started: float) -> dict[str, Any]:
    """Ollama's closing figures, in nanoseconds.  Prefill and decoding are not timed
    apart here: eval_duration covers both, prompt_eval_duration is 0."""
    return {"done": True, "done_reason": "length" if stats.finish_reason == "length" else "stop",
            "total_duration": nanoseconds(started), "load_duration": 0,
            "prompt_eval_count": stats.prompt_tokens, "prompt_eval_duration": 0,
            "eval_count": stats.new_tokens, "eval_duration": int(stats.seconds * 1e9)}


async def loaded_reply(runtime: Runtime, body: OllamaGenerating, chat: bool) -> dict[str, Any]:
    if keep_alive_seconds(body.keep_alive) == 0:
        await run_in_threadpool(runtime.resident.unload, body.model)
        return {**piece(body.model, "", chat), "done_reason": "unload"}
    return {**piece(body.model, "", chat), "done_reason": "load"}


def now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def nanoseconds(started: float) -> int:
    return int((time.perf_counter() - started) * 1e9)


# -- model listings -----------------------------------------------------------------------

def entry(runtime: Runtime, name: str, loaded: LoadedModel | None = None) -> dict[str, Any]:
    """A model as /api/tags lists it (`loaded`: the resident model of that name, if not
    the Runtime's own).  `digest` identifies the files' version (name, size and time),
    not their contents: hashing gigabytes per listing would be absurd."""
    loaded = loaded or runtime.models.current
    if loaded is not None and loaded.name == name:
        size, modified = folder_size(loaded.folder)
        details = {"parent_model": "", "format": "gguf" if loaded.loader == "llama.cpp" else "safetensors",
                   "family": family_of(loaded), "families": [family_of(loaded)],
                   "parameter_size": parameter_size(loaded.parameters),
                   "quantization_level": loaded.options.summary() or loaded.dtype}
    elif name in (listed := runtime.models.available()):  # on disk, loaded when a request names it
        size, modified = folder_size(listed[name])
        kind = runtime.models.registry.for_folder(listed[name]).name
        details = {"parent_model": "", "format": "gguf" if kind == "llama.cpp" else "safetensors", "family": "",
                   "families": [], "parameter_size": "", "quantization_level": ""}
    else:  # a remote engine's model: nothing here to measure
        size, modified = 0, 0.0
        details = {"parent_model": "", "format": "remote", "family": "", "families": [], "parameter_size": "",
                   "quantization_level": ""}
    digest = hashlib.sha256(f"{name}\0{size}\0{modified}".encode()).hexdigest()
    stamp = datetime.fromtimestamp(modified, timezone.utc).isoformat().replace("+00:00", "Z")
    seeing = loaded is not None and loaded.name == name and sees(loaded)
    return {"name": name, "model": name, "modified_at": stamp, "size": size, "digest": digest, "details": details,
            "capabilities": ["completion", "vision"] if seeing else ["completion"]}


def folder_size(folder: Path) -> tuple[int, float]:
    """Bytes of a model's files and the newest file's time (a GGUF model may be one file)."""
    files = [folder] if folder.is_file() else [p for p in folder.rglob("*") if p.is_file()]
    stats = [p.stat() for p in files]
    return sum(s.st_size for s in stats), max((s.st_mtime for s in stats), default=0.0)


def family_of(loaded: LoadedModel) -> str:
    config = getattr(loaded.model, "config", None)
    return getattr(config, "model_type", None) or loaded.loader


def hidden_size(loaded: LoadedModel) -> int | None:
    config = getattr(loaded.model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "hidden_size", None)


def parameter_size(count: int) -> str:
    return f"{count / 1e9:.1f}B" if count >= 1e9 else f"{count / 1e6:.1f}M"
