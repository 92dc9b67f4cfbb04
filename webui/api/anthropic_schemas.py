"""Request bodies of Anthropic's Messages API (/v1/messages, webui/api/anthropic.py), and
how they map onto what the OpenAI chat route already uses: a conversation of OpenAI-shaped
message dicts (webui/chat/tools.py renders them), Tools and a ToolChoice, and our
SamplingParams.

Anthropic's content blocks map one to one: `text` is text; an assistant's `tool_use` is
an OpenAI `tool_calls` entry; a user's `tool_result` is a `role: tool` message answering
that call.  A user's `image` block (a base64 source) is read under the same checks as every
image (webui/images.py) and goes with its message, as OpenAI's image parts do; `document`
blocks and image URLs are refused with the field named.  An assistant's `thinking` block goes back as that turn's
reasoning_content (the chat template keeps or drops it, as for /v1).  `thinking` in the
request turns a thinking model's thinking on or off, its budget_tokens the most it may
think (webui/chat/thinking.py).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from webui.images import MAX_IMAGES_PER_MESSAGE, ImageInput, ImageRefused, check_image, decode_base64

from webui.api.errors import APIError
from webui.api.schemas import CheckedText
from webui.chat.thinking import ThinkingAsk
from webui.chat.tools import NAME, Tool, ToolChoice, ToolError, read_tools
from webui.generation.params import ParamsError, SamplingParams, make_params

MAX_STOP_SEQUENCES = 16
# Our SamplingParams field -> Anthropic's name for it, where they differ.
ANTHROPIC_NAMES = {"max_new_tokens": "max_tokens", "stop": "stop_sequences", "json_schema": "output_config.format",
                   "thinking_budget": "thinking.budget_tokens"}


def field_name(field: str) -> str:
    """A refused field named as a Messages request names it."""
    return ANTHROPIC_NAMES.get(field, field)


class TextBlock(BaseModel):
    model_config = ConfigDict(extra="ignore")  # cache_control, citations: nothing to do here
    type: Literal["text"]
    text: str


class ToolUseBlock(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["tool_use"]
    id: str = Field(min_length=1, max_length=200)
    name: str = Field(pattern=NAME.pattern)
    input: dict[str, Any]


class ToolResultBlock(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1, max_length=200)
    content: str | list[TextBlock] = ""
    is_error: bool = False

    def text(self) -> str:
        text = self.content if isinstance(self.content, str) else "".join(b.text for b in self.content)
        return f"Error: {text}" if self.is_error else text


class ThinkingBlock(BaseModel):
    """An earlier turn's thinking, sent back by clients as Anthropic asks."""

    model_config = ConfigDict(extra="ignore")  # signature: ours are empty, nothing to check
    type: Literal["thinking", "redacted_thinking"]
    thinking: str = ""


class OtherBlock(BaseModel):
    """Any other block type: refused by `conversation` with its name, never dropped."""

    model_config = ConfigDict(extra="allow")
    type: str


Block = TextBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | OtherBlock


class AnthropicMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str | list[Block]


class AnthropicTool(BaseModel):
    model_config = ConfigDict(extra="ignore")  # cache_control
    name: str
    description: str = ""
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None  # Anthropic's server tools (web search...) are not offered here


class AnthropicToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class ThinkingConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")  # display and other presentation hints
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=0)

    def ask(self) -> ThinkingAsk:
        return ThinkingAsk(enable={"enabled": True, "disabled": False}.get(self.type))


class OutputFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    effort: str | None = None  # how hard a model thinks: nothing to tune here
    format: OutputFormat | None = None  # structured output: our json_schema


class MessagesRequest(CheckedText):
    """POST /v1/messages.  Unknown fields are refused with their name (a typo is not lost),
    except our own sampling parameters by their Text Generation WebUI names, as on /v1."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[AnthropicMessage] = Field(min_length=1)
    max_tokens: int = Field(ge=1)  # required, as Anthropic's API has it
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = Field(None, max_length=MAX_STOP_SEQUENCES)
    stream: bool = False
    temperature: float | None = Field(None, ge=0.0, le=1.0)  # Anthropic's range
    top_p: float | None = None
    top_k: int | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None
    # Accepted and without effect here: hints for Anthropic's own service (caching,
    # region, tiers, accounting) that a local server has no use for.
    metadata: dict[str, Any] | None = None
    service_tier: Any = None
    cache_control: Any = None
    inference_geo: Any = None
    speed: Any = None
    user_profile_id: Any = None
    workspace_id: Any = None
    diagnostics: Any = None

    def sampling(self) -> SamplingParams:
        """Our values: the fields Anthropic names, plus any of ours sent as extra fields."""
        values: dict[str, Any] = dict(self.model_extra or {})
        if self.thinking is not None and self.thinking.type == "enabled" and self.thinking.budget_tokens is not None:
            values["thinking_budget"] = self.thinking.budget_tokens
        mapped = {"max_new_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                  "top_k": self.top_k, "stop": self.stop_sequences}
        values.update({k: v for k, v in mapped.items() if v is not None})
        if self.output_config and self.output_config.format:
            values["json_schema"] = json.dumps(self.output_config.format.schema_)
        for name in ("temperature", "top_p"):
            if isinstance(values.get(name), int):
                values[name] = float(values[name])
        unknown = sorted(set(values) - set(SamplingParams.model_fields))
        if unknown:
            raise APIError(400, f"{unknown[0]}: unknown field", param=unknown[0], code="invalid_value")
        try:
            return make_params(values)
        except ParamsError as exc:
            field = field_name(exc.param) if exc.param else exc.param
            raise APIError(400, f"{field}: {exc.reason}", param=field, code="invalid_value") from exc

    def offered_tools(self) -> tuple[Tool, ...]:
        if not self.tools:
            return ()
        try:
            return read_tools([{"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.input_schema}} for t in self.tools])
        except ToolError as exc:  # named as Anthropic's fields are: tools[i].input_schema
            message = str(exc).replace(".function.parameters", ".input_schema").replace(".function.", ".")
            raise APIError(400, message, param="tools", code="invalid_value") from exc

    def choice(self, tools: tuple[Tool, ...]) -> tuple[ToolChoice, bool]:
        """(the ToolChoice, whether several calls may come at once)."""
        choice = self.tool_choice or AnthropicToolChoice(type="auto")
        parallel = not choice.disable_parallel_tool_use
        if choice.type == "none" or not tools:
            if choice.type in ("any", "tool"):
                raise APIError(400, f"tool_choice: type '{choice.type}' needs tools", param="tool_choice",
                               code="invalid_value")
            return ToolChoice("none"), parallel
        if choice.type == "auto":
            return ToolChoice("auto"), parallel
        if choice.type == "any":
            return ToolChoice("required"), parallel
        if not any(t.name == choice.name for t in tools):
            raise APIError(400, f"tool_choice.name: no tool named {choice.name!r} among tools",
                           param="tool_choice", code="invalid_value")
        return ToolChoice("named", choice.name or ""), False

    def conversation(self) -> list[dict[str, Any]]:
        """The messages in OpenAI's shape (system first), as webui/chat/tools.py renders them."""
        out: list[dict[str, Any]] = []
        if self.system:
            system = self.system if isinstance(self.system, str) else "\n\n".join(b.text for b in self.system)
            out.append({"role": "system", "content": system})
        names: dict[str, str] = {}  # tool_use id -> the function it called
        for index, message in enumerate(self.messages):
            where = f"messages[{index}].content"
            blocks = [TextBlock(type="text", text=message.content)] if isinstance(message.content, str) \
                else message.content
            text, calls, results, thought, images = [], [], [], [], []
            for number, block in enumerate(blocks):
                if isinstance(block, TextBlock):
                    text.append(block.text)
                elif block.type == "image" and message.role == "user":
                    images.append(image_of(block, f"{where}[{number}]"))
                elif isinstance(block, ThinkingBlock):
                    if message.role == "assistant" and block.thinking:
                        thought.append(block.thinking)
                elif isinstance(block, ToolUseBlock) and message.role == "assistant":
                    names[block.id] = block.name
                    calls.append({"id": block.id, "type": "function", "function": {
                        "name": block.name, "arguments": json.dumps(block.input, ensure_ascii=False)}})
                elif isinstance(block, ToolResultBlock) and message.role == "user":
                    if block.tool_use_id not in names:
                        raise APIError(400, f"{where}[{number}].tool_use_id: no earlier tool_use has the id "
                                       f"{block.tool_use_id!r}", param=f"{where}[{number}].tool_use_id",
                                       code="invalid_value")
                    results.append({"role": "tool", "tool_call_id": block.tool_use_id,
                                    "name": names[block.tool_use_id], "content": block.text()})
                else:
                    kind = block.type
                    raise APIError(400, f"{where}[{number}]: a {kind!r} block is not supported here"
                                   + (" in a " + message.role + " message" if kind in ("tool_use", "tool_result")
                                      else ""), param=f"{where}[{number}].type", code="unsupported_parameter")
            out.extend(results)  # the results answer the previous turn's calls: they come first
            if text or calls or not results:
                entry: dict[str, Any] = {"role": message.role, "content": "".join(text)}
                if thought:
                    entry["reasoning_content"] = "\n\n".join(thought)
                if calls:
                    entry["tool_calls"] = calls
                if images:
                    if len(images) > MAX_IMAGES_PER_MESSAGE:
                        raise APIError(400, f"{where}: at most {MAX_IMAGES_PER_MESSAGE} images per message",
                                       param=where, code="too_many_images")
                    entry["images"] = tuple(images)
                out.append(entry)
        return out


def image_of(block: OtherBlock, where: str) -> ImageInput:
    """A user's image block, checked (decoding is CPU work: conversation() runs off the event loop)."""
    source = (block.model_extra or {}).get("source")
    if not isinstance(source, dict) or source.get("type") != "base64" or not isinstance(source.get("data"), str):
        raise APIError(400, f"{where}.source: send the image as a base64 source ({{\"type\": \"base64\", "
                       "\"media_type\": ..., \"data\": ...}}); URLs are not fetched here",
                       param=f"{where}.source", code="invalid_value")
    param = f"{where}.source.data"
    try:
        return check_image(decode_base64(source["data"], param), param)
    except ImageRefused as exc:  # Anthropic's error body has no field: the message names it
        raise ImageRefused(f"{param}: {exc}", param=param, code=exc.code, status=exc.status) from None


class CountTokensRequest(MessagesRequest):
    """POST /v1/messages/count_tokens: a Messages request without max_tokens."""

    max_tokens: int = Field(1, ge=1)
