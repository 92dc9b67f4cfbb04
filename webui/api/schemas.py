"""The API's request bodies: OpenAI's fields, mapped onto our own SamplingParams, and
the management requests.  Every string is checked for valid Unicode before any field."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from webui.api.errors import APIError
from webui.chat.thinking import ThinkingAsk
from webui.generation.params import ParamsError, SamplingParams, make_params
from webui.model_settings import ModelSettings
from webui.text_check import InvalidText, check_text


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


class FunctionCall(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(max_length=100_000)  # JSON text, as OpenAI sends it


class ToolCallMessage(BaseModel):
    """An earlier call, in an assistant message of the history."""

    id: str = Field("", max_length=200)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = ""
    tool_calls: list[ToolCallMessage] | None = None  # assistant: the calls it made
    tool_call_id: str | None = Field(None, max_length=200)  # tool: the call this answers
    name: str | None = Field(None, max_length=200)
    # assistant: its thinking, sent back as our replies give it (the template keeps or drops it)
    reasoning_content: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # OpenAI content parts: keep the text ones
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""

    def as_dict(self) -> dict[str, Any]:
        """The message for a chat template: role and text, plus its tool-call fields."""
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": self.text()}
        if self.tool_calls:
            message["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        if self.name:
            message["name"] = self.name
        if self.reasoning_content and self.role == "assistant":
            message["reasoning_content"] = self.reasoning_content
        return message


class JSONSchemaFormat(BaseModel):
    name: str = Field("response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | bool = Field({"type": "object"}, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's response_format: free text, any JSON object, or JSON valid against a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    def schema_text(self) -> str:
        """The json_schema SamplingParams value for this format ("" = unconstrained)."""
        if self.type == "text":
            return ""
        if self.type == "json_object":
            return '{"type": "object"}'
        if self.json_schema is None:
            raise APIError(400, "response_format: type json_schema needs a json_schema object",
                           param="response_format", code="invalid_value")
        return json.dumps(self.json_schema.schema_)


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
    response_format: ResponseFormat | None = None

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
        schema = self.response_format.schema_text() if self.response_format else ""
        if not schema:
            return make_params(values)  # a ParamsError names its field (webui/errors.py)
        if values.get("grammar_string") or values.get("json_schema"):
            given = "grammar_string" if values.get("grammar_string") else "json_schema"
            raise APIError(400, f"response_format: set response_format or {given}, not both",
                           param="response_format", code="invalid_value")
        try:
            return make_params({**values, "json_schema": schema})
        except ParamsError as exc:
            if exc.param != "json_schema":
                raise
            # The caller sent a response_format, not our json_schema field: name theirs.
            raise APIError(400, f"response_format: the JSON schema cannot be used: {exc.reason}",
                           param="response_format", code="invalid_value") from exc


def _template_kwargs(value: dict[str, Any]) -> dict[str, Any]:
    """Small JSON values under plain names: they reach the chat template's sandbox."""
    if len(value) > 16:
        raise ValueError("at most 16 variables")
    for name, item in value.items():
        if not name.isidentifier() or name.startswith("_") or len(name) > 64:
            raise ValueError(f"'{name[:64]}' is not a template variable name")
        if len(json.dumps(item)) > 4096:
            raise ValueError(f"'{name}': at most 4,096 characters of JSON")
    return value


TemplateKwargs = Annotated[dict[str, Any], AfterValidator(_template_kwargs)]


class ChatCompletionRequest(CompletionBase):
    messages: list[ChatMessage] = Field(min_length=1)
    # Read by webui/chat/tools.py (read_tools, read_tool_choice), which names what it refuses.
    tools: list[Any] | None = None
    tool_choice: Any = None
    # None (not sent) counts as false for tool_choice "required": one call, then the
    # reply ends, rather than a small model adding calls to max_tokens (issue 31).
    parallel_tool_calls: bool | None = None
    # A thinking model's effort ("none": no thinking), and values for the chat template's
    # own variables (e.g. {"enable_thinking": false}), as vLLM and llama.cpp's server take them.
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    chat_template_kwargs: TemplateKwargs | None = None
    # Text Generation WebUI's chat fields (webui/api/chat_fields.py): with any of them the
    # prompt is the chat tab's, for that mode and character.  Its aliases are accepted too.
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    mode: Literal["instruct", "chat", "chat-instruct"] | None = None
    character: str | None = Field(None, min_length=1, max_length=128)
    user_name: str | None = Field(None, alias="name1", min_length=1, max_length=128)
    bot_name: str | None = Field(None, alias="name2", min_length=1, max_length=128)
    context: str | None = Field(None, max_length=200_000)
    greeting: str | None = Field(None, max_length=50_000)
    user_bio: str | None = Field(None, max_length=50_000)
    chat_instruct_command: str | None = Field(None, max_length=50_000)
    instruction_template: str | None = Field(None, max_length=200)
    continue_: bool = Field(False, alias="continue")

    def chat_fields(self) -> bool:
        """Whether the request asks for the chat tab's prompt (any of those fields sent)."""
        return bool(self.model_fields_set & CHAT_FIELDS)

    def thinking(self) -> ThinkingAsk:
        effort = self.reasoning_effort
        return ThinkingAsk(enable=None if effort is None else effort != "none",
                           effort={"minimal": "low", "none": None}.get(effort, effort) if effort else None,
                           template_kwargs=self.chat_template_kwargs)


CHAT_FIELDS = frozenset({"mode", "character", "user_name", "bot_name", "context", "greeting", "user_bio",
                         "chat_instruct_command", "instruction_template", "continue_"})


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


# OpenAI's limit on inputs per embeddings request.
MAX_EMBEDDING_INPUTS = 2048


class EmbeddingRequest(CheckedText):
    """POST /v1/embeddings: text, a list of texts, or token ids (one list or several)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    input: str | list[str] | list[StrictInt] | list[list[StrictInt]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _inputs(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else value
        if not items or len(items) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"send 1 to {MAX_EMBEDDING_INPUTS} inputs")
        if isinstance(items[0], int):
            return value
        if any(not item for item in items):
            raise ValueError("an input must not be empty")
        return value

    def inputs(self) -> list[str | list[int]]:
        """One entry per input: a text, or a list of token ids."""
        if isinstance(self.input, str):
            return [self.input]
        if self.input and isinstance(self.input[0], int):
            return [list(self.input)]
        return list(self.input)
