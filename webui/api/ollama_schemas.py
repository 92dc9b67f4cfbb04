"""Request bodies of the Ollama-compatible routes (webui/api/ollama.py), and how
Ollama's `options` map onto our SamplingParams.

Top-level fields we do not know are ignored, as Ollama itself does (its clients send
fields newer than this server).  `options` is stricter than Ollama, which only logs an
option it does not know: here an unknown option is a 400 naming it, so that a typo
("temprature") is not silently lost (docs/SECURITY.md).  Options that tune how
Ollama's runner loads and runs a model (threads, GPU layers, mmap, batch size...) are
accepted and ignored: on this server the command-line flags decide those.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, StrictInt, model_validator

from webui.api.errors import APIError
from webui.chat.thinking import ThinkingAsk
from webui.api.schemas import MAX_EMBEDDING_INPUTS, CheckedText, ResponseFormat
from webui.generation.params import ParamsError, SamplingParams, make_params

# Ollama's option -> our SamplingParams field, where the names differ.
RENAMED = {
    "num_predict": "max_new_tokens", "repeat_penalty": "repetition_penalty",
    "repeat_last_n": "repetition_penalty_range", "tfs_z": "tfs", "mirostat": "mirostat_mode",
    "num_ctx": "truncation_length",
}
# Ollama's options that are our fields under the same name.
SAME = frozenset({
    "temperature", "top_k", "top_p", "min_p", "typical_p", "presence_penalty", "frequency_penalty", "seed",
    "stop", "mirostat_tau", "mirostat_eta",
})
# Ollama's runner and loading options: how its server runs the model, decided here by
# our own flags; accepted so that programs written for Ollama run unchanged.
RUNNER = frozenset({
    "numa", "num_batch", "num_gpu", "main_gpu", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mmap",
    "use_mlock", "embedding_only", "num_thread", "num_keep", "penalize_newline",
})
OURS = {ours: theirs for theirs, ours in RENAMED.items()}
FLOAT_FIELDS = frozenset(name for name, info in SamplingParams.model_fields.items() if info.annotation is float)


def ollama_sampling(options: dict[str, Any] | None) -> tuple[SamplingParams, bool]:
    """SamplingParams for Ollama's `options` (neutral values for those not given, as
    on /v1), and whether the reply's length was given (num_predict > 0)."""
    options = options or {}
    values: dict[str, Any] = {}
    for name, value in options.items():
        field = RENAMED.get(name, name)
        if name in RUNNER:
            continue
        if name not in SAME and name not in RENAMED and field not in SamplingParams.model_fields:
            raise APIError(400, f"options.{name}: unknown option", param=f"options.{name}", code="invalid_value")
        if field in FLOAT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        values[field] = value
    # num_predict -1 (no limit) and -2 (fill the context): the rest of the context.
    explicit = values.get("max_new_tokens") not in (None, -1, -2)
    if not explicit:
        values.pop("max_new_tokens", None)
    if options.get("repeat_last_n") == 0:  # Ollama: 0 turns the repetition penalty off
        values.pop("repetition_penalty_range")
        values["repetition_penalty"] = 1.0
    elif options.get("repeat_last_n") == -1:  # the whole context (ours: 0 = all)
        values["repetition_penalty_range"] = 0
    try:
        return make_params(values), explicit
    except ParamsError as exc:
        if not exc.param:
            raise APIError(400, f"options: {exc}", param="options", code="invalid_value") from exc
        name = OURS.get(exc.param, exc.param)  # named as the request named it
        raise APIError(400, f"options.{name}: {exc.reason}", param=f"options.{name}", code="invalid_value") from exc


def response_format_of(value: Any) -> dict[str, Any] | None:
    """Ollama's `format` as the OpenAI routes' `response_format`: "json" is
    {"type": "json_object"}, a JSON schema is {"type": "json_schema", ...}."""
    if value is None or value == "":
        return None
    if value == "json":
        return {"type": "json_object"}
    if isinstance(value, dict):
        return {"type": "json_schema", "json_schema": {"name": "format", "schema": value}}
    raise APIError(400, 'format: "json" or a JSON schema object', param="format", code="invalid_value")


class OllamaBase(CheckedText):
    model_config = ConfigDict(extra="ignore")
    model: str = ""
    # Ollama's older name for `model`, still read by its /api/show and /api/embeddings.
    name: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _model_named(self) -> OllamaBase:
        if self.name and self.model and self.name != self.model:
            raise ValueError("model and name name different models; send one of them")
        if not self.model and self.name:
            self.model = self.name
        if not self.model:
            raise ValueError("model: a model name is required")
        return self


class OllamaFunctionCall(CheckedText):
    model_config = ConfigDict(extra="ignore")  # index: the call's place, which the list already gives
    name: str = Field(min_length=1, max_length=64)
    arguments: dict[str, Any] = Field(default_factory=dict)  # an object, as Ollama sends it (not JSON text)


class OllamaToolCall(CheckedText):
    model_config = ConfigDict(extra="ignore")
    function: OllamaFunctionCall


class OllamaMessage(CheckedText):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[OllamaToolCall] | None = None  # assistant: the calls it made
    tool_name: str | None = Field(None, max_length=200)  # tool: the function whose result this is
    thinking: str | None = None  # an assistant turn's thinking, as Ollama returns it

    def as_dict(self) -> dict[str, Any]:
        """The message in the OpenAI shape the chat templates read (webui/chat/tools.py)."""
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.thinking and self.role == "assistant":
            message["reasoning_content"] = self.thinking
        if self.tool_calls:
            message["tool_calls"] = [{"id": "", "type": "function", "function": {
                "name": c.function.name, "arguments": json.dumps(c.function.arguments, ensure_ascii=False)}}
                for c in self.tool_calls]
        if self.tool_name:
            message["name"] = self.tool_name
        return message


class OllamaGenerating(OllamaBase):
    """What /api/generate and /api/chat share."""

    stream: bool = True  # Ollama streams unless told not to
    format: Any = None
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None  # how long the model stays after the reply (keep_alive_seconds)
    # true/false, or gpt-oss's effort: "low", "medium", "high" (None: the template's default)
    think: bool | Literal["low", "medium", "high"] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    def thinking(self) -> ThinkingAsk:
        if isinstance(self.think, str):
            return ThinkingAsk(enable=True, effort=self.think)
        return ThinkingAsk(enable=self.think)

    def structured(self, params: SamplingParams) -> SamplingParams:
        """`params` with `format` enforced: "json" or a schema becomes the same json_schema
        value the OpenAI routes' response_format does (webui/api/schemas.py)."""
        shape = response_format_of(self.format)
        if shape is None:
            return params
        schema = ResponseFormat(**shape).schema_text()
        try:
            return make_params({"json_schema": schema}, base=params)
        except ParamsError as exc:
            raise APIError(400, f"format: the JSON schema cannot be used: {exc.reason}", param="format",
                           code="invalid_value") from exc

    def field_name(self, field: str) -> str:
        """A field the engine refused, named as this request named it: options.NAME for
        a sampling value, `format` for the schema it gave."""
        if field in self.sent_as():
            return self.sent_as()[field]
        return f"options.{OURS.get(field, field)}" if field in SamplingParams.model_fields else field

    def sent_as(self) -> dict[str, str]:
        """Our field -> the name this request used, for refusals (webui/api/completions.py)."""
        return {"json_schema": "format"} if response_format_of(self.format) is not None else {}

    def refuse_unsupported(self) -> None:
        """What this server cannot do yet is a 400 naming the field, never dropped."""
        if self.logprobs or self.top_logprobs:
            raise APIError(400, "logprobs: use /v1/chat/completions or /v1/completions for log-probabilities",
                           param="logprobs", code="unsupported_parameter")


class OllamaGenerateRequest(OllamaGenerating):
    prompt: str = ""
    suffix: str = ""
    system: str = ""
    template: str = ""
    context: list[StrictInt] | None = None
    raw: bool = False
    images: list[str] | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        for field, what in (("suffix", "fill-in-the-middle (suffix)"), ("template", "a per-request template"),
                            ("context", "context token ids (send the conversation to /api/chat)")):
            if getattr(self, field):
                raise APIError(400, f"{field}: {what} is not supported by this server", param=field,
                               code="unsupported_parameter")


class OllamaChatRequest(OllamaGenerating):
    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[Any] | None = None

class OllamaEmbedRequest(OllamaBase):
    input: str | list[str] = ""
    truncate: bool = True
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None
    dimensions: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _count(self) -> OllamaEmbedRequest:
        if isinstance(self.input, list) and len(self.input) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"input: at most {MAX_EMBEDDING_INPUTS} inputs")
        return self


class OllamaEmbeddingsRequest(OllamaBase):
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None


class OllamaShowRequest(OllamaBase):
    verbose: bool = False


_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: float | str | None) -> float | None:
    """Ollama's keep_alive in seconds: a number of seconds, or a Go duration ("5m",
    "1h30m", "-1"); None when not sent.  Negative: keep the model until it is unloaded."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or abs(value) > 1e12:  # NaN or absurd
            raise APIError(400, "keep_alive: not a usable number of seconds", param="keep_alive")
        return float(value)
    text = str(value).strip()
    if len(text) > 32:
        raise APIError(400, "keep_alive: too long for a duration", param="keep_alive")
    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    parts = _DURATION.findall(body)
    if not parts or "".join(number + unit for number, unit in parts) != body:
        raise APIError(400, f"keep_alive: {text!r} is not a duration (e.g. 5m, 1h30m, 0, -1)", param="keep_alive")
    return sign * sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
