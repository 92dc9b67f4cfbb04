"""OpenAI-compatible /v1 API served beside the UI, through the same Runtime and queue.

Requests are validated by the same SamplingParams as the UI: OpenAI's fields are
mapped onto it, and our extra samplers (min_p, DRY, XTC, ...) may be sent as extra
fields by their Text Generation WebUI names.  Errors use OpenAI's shape.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from webui.api.disconnect import on_disconnect
from webui.api.docs_page import docs_html
from webui.api.security import GuardMiddleware, KeyMiddleware
from webui.api.usage import key_label
from webui.chat.prompt import PromptError, render_chat_prompt
from webui.generation.chain import token_ids
from webui.generation.engine import GenerationError, QueueFull
from webui.loaders.base import LoadError, ModelRefused
from webui.model_manager import ModelBusy
from webui.model_settings import ModelSettings
from webui.paths import NameRefused
from webui.generation.params import ParamsError, SamplingParams, changed_fields, make_params
from webui.remote.engine import ChatMessages, RemoteModel
from webui.runtime import Runtime
from webui.text_check import InvalidText, check_text


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


class CheckedText(BaseModel):
    """A request body whose every string is checked (webui/text_check.py) before the
    fields are: a lone surrogate is a 400 here, not a failure inside a tokenizer."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        try:
            check_text(data, "the request")
        except InvalidText as exc:
            raise ValueError(str(exc)) from None
        return data


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None  # a string or nothing: a number here is refused, not joined


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[ContentPart] | None = ""

    def text(self) -> str:
        if isinstance(self.content, list):  # OpenAI content parts: keep the text ones
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class CompletionBase(CheckedText):
    """OpenAI's common fields; anything else must be one of our sampling parameters."""

    model_config = ConfigDict(extra="allow")
    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=8)
    user: str | None = None
    logprobs: Any = None
    top_logprobs: int | None = None

    def logprob_count(self) -> int | None:
        """None: no log-probabilities; n: each token's, with n alternatives."""
        if isinstance(self, ChatCompletionRequest):
            if self.top_logprobs is not None and not self.logprobs:
                raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
            if self.logprobs not in (None, True, False):
                raise APIError(400, "logprobs must be true or false", param="logprobs")
            count = (self.top_logprobs or 0) if self.logprobs else None
            limit = 20
        else:
            if self.logprobs is not None and (isinstance(self.logprobs, bool) or not isinstance(self.logprobs, int)):
                raise APIError(400, "logprobs must be an integer from 0 to 5", param="logprobs")
            count, limit = self.logprobs, 5
        if count is not None and not 0 <= count <= limit:
            raise APIError(400, f"at most {limit} alternatives per token", param="logprobs")
        return count

    def sampling(self) -> SamplingParams:
        values: dict[str, Any] = dict(self.model_extra or {})
        mapped = {
            "max_new_tokens": self.max_completion_tokens or self.max_tokens, "temperature": self.temperature,
            "top_p": self.top_p, "seed": self.seed, "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty, "logit_bias": self.logit_bias,
            "stop": [self.stop] if isinstance(self.stop, str) else self.stop,
        }
        values.update({k: v for k, v in mapped.items() if v is not None})
        for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
            if isinstance(values.get(name), int):
                values[name] = float(values[name])
        if "logit_bias" in values:
            values["logit_bias"] = {k: float(v) for k, v in values["logit_bias"].items()}
        try:
            return make_params(values)
        except ParamsError as exc:
            field = str(exc).split(":")[0]
            raise APIError(400, str(exc), param=field, code="invalid_value") from exc


class ChatCompletionRequest(CompletionBase):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(CompletionBase):
    prompt: str | list[str]
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value: str | list[str]) -> str | list[str]:
        # An empty prompt gives the model nothing to continue (not even a BOS token
        # when the tokenizer adds none): refuse it rather than fail inside generation.
        if not value or (isinstance(value, list) and not all(value)):
            raise ValueError("must not be empty")
        return value


class LoadRequest(ModelSettings, CheckedText):
    """A model name plus the per-model settings a request may set.  ModelSettings forbids
    unknown keys, so trust_remote_code, pickle or raw flags are refused (docs/SECURITY.md)."""

    model: str

    def choice(self) -> ModelSettings:
        return ModelSettings(**self.model_dump(exclude={"model"}, exclude_none=True))


class TextRequest(CheckedText):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(max_length=200_000)


class TokensRequest(CheckedText):
    model_config = ConfigDict(extra="forbid")
    tokens: list[int] = Field(max_length=200_000)


def build_api(runtime: Runtime) -> FastAPI:
    settings = runtime.settings
    # FastAPI's docs pages load their scripts from a CDN; /v1/docs is our own page.
    api = FastAPI(title="webui OpenAI-compatible API", version="1", docs_url=None,
                  openapi_url="/v1/openapi.json", redoc_url=None)

    @api.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return exc.response()

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        return APIError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param,
                        code="invalid_value").response()

    # Middleware added later wraps the earlier: Host and size checks first, then CORS
    # (so a browser's preflight, which carries no key, is answered), then the keys.
    api.add_middleware(KeyMiddleware, api_key=settings.api_key, admin_key=settings.admin_key)
    if settings.api_cors_origins:
        # An explicit allowlist only; never "*" (docs/SECURITY.md).
        api.add_middleware(CORSMiddleware, allow_origins=list(settings.api_cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["authorization", "content-type", "x-api-key"])
    api.add_middleware(GuardMiddleware, loopback_only=settings.is_loopback)

    @api.get("/v1/docs", include_in_schema=False)
    async def docs_page():
        return HTMLResponse(docs_html(api.openapi()))

    def model_card(name: str, owner: str = "local") -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": owner}

    async def all_cards() -> list[dict[str, Any]]:
        """The loaded model, then every remote engine's (a name the local model has is its)."""
        loaded = runtime.models.current
        cards = [model_card(loaded.name)] if loaded else []
        if runtime.remotes:
            remote = await run_in_threadpool(runtime.remotes.models)
            cards += [model_card(name, engine.name) for name, engine in remote.items()
                      if not loaded or name != loaded.name]
        return cards

    async def target(requested: str) -> Any:
        """The loaded model, or the remote model of that name (no load step for those)."""
        loaded = runtime.models.current
        if loaded is not None and requested == loaded.name:
            return loaded
        remote = await run_in_threadpool(runtime.remotes.model, requested) if runtime.remotes else None
        if remote is not None:
            return remote
        if loaded is None and not runtime.remotes:
            raise APIError(503, "no model is loaded", "server_error", code="model_not_loaded")
        here = f"the loaded model is '{loaded.name}'" if loaded else "no local model is loaded"
        here += "".join(f"; {problem}" for problem in runtime.remotes.problems.values())
        raise APIError(404, f"the model '{requested}' is not loaded; {here}", param="model", code="model_not_found")

    @api.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": await all_cards()}

    @api.get("/v1/models/{model_id}")
    async def get_model(model_id: str):
        card = next((c for c in await all_cards() if c["id"] == model_id), None)
        if card is None:
            raise APIError(404, f"the model '{model_id}' does not exist or is not loaded", param="model",
                           code="model_not_found")
        return card

    def fit(body: CompletionBase, params: SamplingParams, loaded, prompt: str) -> SamplingParams:
        """Check `params` against the loaded model (token ids in its vocabulary, prompt in
        its context) before anything is queued, so errors come as a 400, not mid-stream.

        Without max_tokens the reply may use the rest of the context (as OpenAI's API does).
        """
        # A sampler this model's backend would not honour is refused, never dropped silently.
        remote = isinstance(loaded, RemoteModel)
        capabilities = loaded.capabilities if remote else loaded.backend.capabilities
        ignored = capabilities.ignores(changed_fields(params) - {"max_new_tokens", "seed"})
        if ignored:
            backend = f"remote engine {loaded.engine.name}, {loaded.engine.config.kind}" if remote else loaded.loader
            raise APIError(400, f"{ignored[0]} is not supported by this model's backend ({backend})",
                           param=ignored[0], code="unsupported_parameter")
        if remote:
            return params  # the engine knows its context and tokenizer; it refuses what does not fit
        try:
            token_ids(params, loaded.tokenizer, loaded.backend.vocab_size(), loaded.backend.eos_ids())
        except ParamsError as exc:
            raise APIError(400, str(exc), param=str(exc).split(":")[0], code="invalid_value") from exc
        prompt_tokens = len(loaded.tokenizer(prompt)["input_ids"])
        # truncation_length shortens the context the engine uses; the prompt must fit it.
        context = min(params.truncation_length or loaded.context_length, loaded.context_length)
        limit = "truncation_length" if context < loaded.context_length else "messages"
        room = context - prompt_tokens
        if body.max_tokens is None and body.max_completion_tokens is None and room > 0:
            return make_params({"max_new_tokens": min(room, SamplingParams().max_new_tokens)}, base=params)
        if params.max_new_tokens > room:
            raise APIError(
                400, f"the context is {context} tokens; the prompt has {prompt_tokens} and "
                f"max_tokens asks for {params.max_new_tokens} more", param=limit, code="context_length_exceeded",
            )
        return params

    @api.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        loaded = await target(body.model)
        params = body.sampling()  # refuse bad values before rendering anything
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]
        last_user = next((m for m in reversed(messages) if m["role"] == "user"), None)
        if last_user is not None:  # extensions' input_modifier sees the new message, as in the chat
            last_user["content"] = modified_input(last_user["content"], params, True)
        if isinstance(loaded, RemoteModel):  # the engine applies its own chat template
            prompt: Any = ChatMessages(tuple(messages))
            return await respond(request, body, prompt, fit(body, params, loaded, ""), chat=True, target=loaded)
        try:
            prompt = render_chat_prompt(loaded.tokenizer, messages)
        except PromptError as exc:
            raise APIError(400, str(exc), param="messages") from exc
        return await respond(request, body, prompt, fit(body, params, loaded, prompt), chat=True, target=loaded)

    @api.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        loaded = await target(body.model)
        if isinstance(body.prompt, list):
            if len(body.prompt) != 1:
                raise APIError(400, "send one prompt per request", param="prompt")
            body.prompt = body.prompt[0]
        params = body.sampling()
        prompt = modified_input(body.prompt, params, False)
        return await respond(request, body, prompt, fit(body, params, loaded, prompt), chat=False, target=loaded)

    def modified_input(text: str, params: SamplingParams, chat: bool) -> str:
        extensions = runtime.extensions
        if not extensions.has("input_modifier"):
            return text
        return extensions.input(text, runtime.extension_state(params, "api"), chat)

    def modified_output(text: str, params: SamplingParams, chat: bool) -> str:
        # Whole replies only: a streamed reply goes out piece by piece, before any end.
        extensions = runtime.extensions
        if not extensions.has("output_modifier"):
            return text
        return extensions.output(text, runtime.extension_state(params, "api"), chat)

    async def respond(request: Request, body: CompletionBase, prompt: Any, params: SamplingParams, chat: bool,
                      target: Any):
        count = body.logprob_count()  # a bad logprobs request is refused before any stream starts
        remote = isinstance(target, RemoteModel)
        capabilities = target.capabilities if remote else target.backend.capabilities
        if count is not None and not capabilities.logprobs:
            raise APIError(400, "this model's backend cannot report log-probabilities", param="logprobs",
                           code="unsupported_parameter")
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        if body.stream:
            return StreamingResponse(
                stream_events(request, body, prompt, params, count, chat, rid, created, key_label(request.headers)),
                media_type="text/event-stream", headers={"cache-control": "no-cache"},
            )
        choices, prompt_tokens, completion_tokens = [], 0, 0
        owner = f"api-{uuid.uuid4().hex}"
        async with on_disconnect(request.receive, lambda: runtime.stop(owner)) as gone:
            results = []
            for seeded in choice_params(params, body.n):  # every choice's values are checked first
                if gone.is_set():
                    raise APIError(499, "the client closed the request", code="client_closed")
                results.append((seeded, await run_to_end(owner, body.model, prompt, seeded, count, remote)))
        for index, (seeded, (text, stats, entries)) in enumerate(results):
            text = modified_output(text, seeded, chat)
            prompt_tokens = stats.prompt_tokens
            completion_tokens += stats.new_tokens
            finish = "length" if stats.finish_reason == "length" else "stop"
            logprobs = format_logprobs(entries, chat) if count is not None else None
            if chat:
                choices.append({"index": index, "message": {"role": "assistant", "content": text},
                                "finish_reason": finish, "logprobs": logprobs})
            else:
                shown = (prompt + text) if getattr(body, "echo", False) else text
                choices.append({"index": index, "text": shown, "finish_reason": finish, "logprobs": logprobs})
        runtime.usage.add(key_label(request.headers), prompt_tokens * body.n, completion_tokens)
        return {"id": rid, "object": kind, "created": created, "model": body.model, "choices": choices,
                "usage": usage(prompt_tokens, completion_tokens)}

    def start(owner: str, model: str, prompt: Any, params: SamplingParams, logprobs: int | None = None):
        try:
            # The API is one party to the scheduler, however many requests it sends at once.
            return runtime.stream(owner, prompt, params, logprobs, who="api", model=model)
        except QueueFull as exc:
            raise APIError(503, str(exc), "server_error", code="server_busy") from exc
        except GenerationError as exc:  # the model went away between the check and the start
            raise APIError(404, str(exc), param="model", code="model_not_found") from exc

    def choice_params(params: SamplingParams, n: int) -> list[SamplingParams]:
        """The values for each of `n` choices: a fixed seed counts up, so each choice
        differs and the request is still reproducible.  All are validated before the
        first choice runs, so a seed that would pass the maximum is a 400, not a 500
        after work was done."""
        if params.seed < 0:
            return [params] * n
        try:
            return [make_params({"seed": params.seed + index}, base=params) for index in range(n)]
        except ParamsError as exc:
            raise APIError(400, f"seed: with n={n} the seeds count up from seed, and {exc}", param="seed",
                           code="invalid_value") from exc

    async def run_to_end(owner: str, model: str, prompt: Any, params: SamplingParams, logprobs: int | None,
                         remote: bool):
        stream = start(owner, model, prompt, params, logprobs)
        pieces = []
        try:
            async for piece in iterate_in_threadpool(iter(stream)):
                pieces.append(piece)
        except GenerationError as exc:
            if remote:  # the engine behind us failed (down, slow, nonsense), not this server
                raise APIError(502, str(exc), "server_error", code="remote_engine_error") from exc
            raise APIError(500, str(exc), "server_error") from exc
        finally:
            runtime.stop(owner)  # a no-op when it finished; frees the model when the client left
        if stream.stats is None:
            raise APIError(499, "the client closed the request", code="client_closed")
        return "".join(pieces), stream.stats, stream.logprobs

    async def stream_events(request, body, prompt, params, count, chat, rid, created, key) -> AsyncIterator[str]:
        owner = f"api-{uuid.uuid4().hex}"
        chunk_kind = "chat.completion.chunk" if chat else "text_completion"

        def event(choices: list, **extra) -> str:
            data = {"id": rid, "object": chunk_kind, "created": created, "model": body.model, "choices": choices}
            return f"data: {json.dumps({**data, **extra})}\n\n"

        sent = 0  # log-probability entries already sent

        def choice(text: str | None, finish: str | None) -> dict:
            nonlocal sent
            logprobs = None
            if count is not None:
                entries = stream.logprobs
                logprobs, sent = format_logprobs(entries[sent:], chat), len(entries)
            if chat:
                delta = {} if text is None else {"content": text}
                return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
            return {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": logprobs}

        try:
            stream = start(owner, body.model, prompt, params, count)
        except APIError as exc:
            yield f"data: {json.dumps({'error': {'message': exc.message, 'type': exc.kind, 'code': exc.code}})}\n\n"
            return
        try:
            if chat:
                yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None,
                              "logprobs": None}])
            # A reply may hold text back for a while (a stop string forming); the
            # watcher cancels within a step even when nothing is being sent.
            async with on_disconnect(request.receive, lambda: runtime.stop(owner)) as gone:
                async for piece in iterate_in_threadpool(iter(stream)):
                    yield event([choice(piece, None)])
            if gone.is_set():
                return
            stats = stream.stats
            runtime.usage.add(key, stats.prompt_tokens, stats.new_tokens)
            yield event([choice(None if chat else "", "length" if stats.finish_reason == "length" else "stop")])
            if body.stream_options and body.stream_options.include_usage:
                yield event([], usage=usage(stats.prompt_tokens, stats.new_tokens))
            yield "data: [DONE]\n\n"
        except GenerationError as exc:
            yield f"data: {json.dumps({'error': {'message': str(exc), 'type': 'server_error'}})}\n\n"
        finally:
            # Runs when the client disconnects too: the generation stops within a step.
            runtime.stop(owner)

    # -- management (admin key) --------------------------------------------------------
    @api.get("/v1/internal/models")
    async def available_models():
        loaded = runtime.models.current
        return {"models": runtime.models.names(), "loaded": loaded.name if loaded else None}

    @api.post("/v1/internal/models/load")
    async def load_model(body: LoadRequest):
        try:
            await run_in_threadpool(lambda: runtime.load_model(body.model, body.choice(), timeout=30))
        except NameRefused as exc:
            raise APIError(404, str(exc), param="model", code="model_not_found") from exc
        except ModelBusy as exc:
            raise APIError(503, str(exc), "server_error", code="server_busy") from exc
        except ModelRefused as exc:  # broken files or an impossible size: the request's fault
            raise APIError(400, str(exc), param="model", code="model_refused") from exc
        except LoadError as exc:
            raise APIError(500, str(exc), "server_error", code="load_failed") from exc
        return {"loaded": runtime.models.current.describe()}

    @api.get("/v1/internal/usage")
    async def usage_by_key():
        """Tokens in and out per API key (named by a digest's prefix, never the key itself)."""
        return {"usage": runtime.usage.snapshot()}

    @api.post("/v1/internal/models/unload")
    async def unload_model():
        try:
            await run_in_threadpool(lambda: runtime.models.unload(timeout=30))
        except ModelBusy as exc:
            raise APIError(503, str(exc), "server_error", code="server_busy") from exc
        return {"loaded": None}

    def token_text(token_id: int) -> str:
        return runtime.models.current.tokenizer.decode([token_id]) if runtime.models.current else ""

    def format_logprobs(entries, chat: bool) -> dict[str, Any]:
        """OpenAI's two layouts: chat's per-token objects, and the legacy parallel lists."""
        if chat:
            return {"content": [
                {"token": token_text(e.token_id), "logprob": e.logprob,
                 "bytes": list(token_text(e.token_id).encode()),
                 "top_logprobs": [{"token": token_text(i), "logprob": lp, "bytes": list(token_text(i).encode())}
                                  for i, lp in e.top]}
                for e in entries
            ]}
        texts = [token_text(e.token_id) for e in entries]
        offsets, position = [], 0
        for text in texts:
            offsets.append(position)
            position += len(text)
        return {"tokens": texts, "token_logprobs": [e.logprob for e in entries],
                "top_logprobs": [{token_text(i): lp for i, lp in e.top} for e in entries],
                "text_offset": offsets}

    def tokenizer():
        loaded = runtime.models.current
        if loaded is None:
            raise APIError(503, "no model is loaded", "server_error", code="model_not_loaded")
        return loaded

    @api.post("/v1/internal/tokenize")
    async def tokenize(body: TextRequest):
        ids = tokenizer().tokenizer(body.text, add_special_tokens=False)["input_ids"]
        return {"tokens": ids, "length": len(ids)}

    @api.post("/v1/internal/token-count")
    async def token_count(body: TextRequest):
        return {"length": len(tokenizer().tokenizer(body.text, add_special_tokens=False)["input_ids"])}

    @api.post("/v1/internal/detokenize")
    async def detokenize(body: TokensRequest):
        loaded = tokenizer()
        size = loaded.backend.vocab_size()
        bad = next((t for t in body.tokens if not 0 <= t < size), None)
        if bad is not None:
            raise APIError(400, f"token id {bad} is outside the vocabulary (0..{size - 1})", param="tokens")
        return {"text": loaded.tokenizer.decode(body.tokens)}

    # Extensions' routes, under /v1/extensions/<name>/, behind the same key checks.
    runtime.extensions.register_api_routes(api)
    return api


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class APIServer:
    """uvicorn in a background thread, so the UI and the API share one process and Runtime."""

    def __init__(self, runtime: Runtime, port: int | None = None):
        config = uvicorn.Config(build_api(runtime), host=runtime.settings.host,
                                port=port or runtime.settings.api_port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="api")
        self.url = f"http://{runtime.settings.host}:{config.port}/v1"

    def start(self, timeout: float = 30.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.05)
        if not self.server.started:
            raise RuntimeError("the API server did not start")
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
