"""Tool calling: the tools a request offers, rendered into the prompt, and the grammar
that forces a call when the caller requires one.

Tools are rendered by the model's own chat template (its `tools` variable, in the
budgeted Jinja sandbox of webui/chat/template_sandbox.py), with the conversation's
earlier calls (assistant messages with `tool_calls`) and their results (`role: tool`
messages) in the shapes Hugging Face templates read.  A template that knows nothing
of tools gets them as a system message instead, and earlier calls and results as
plain text, in the Hermes `<tool_call>` form that webui/chat/tool_parser.py reads
back.  Parsing the reply is webui/chat/tool_parser.py's job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jinja2.exceptions import SecurityError, TemplateError

from webui.chat.prompt import apply_template, content_parts
from webui.chat.template_sandbox import render_chat_template, special_tokens
from webui.errors import AppError
from webui.generation.request import PromptError

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
MAX_TOOLS = 128
# A forced list of parallel calls ends after this many, so a small model that keeps
# adding calls still ends in valid JSON.
MAX_PARALLEL_CALLS = 8


class ToolError(AppError, ValueError):
    """A tool definition or tool_choice that cannot be used; the message names the field."""

    code = "invalid_value"


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: str  # the JSON schema of the arguments, as JSON text (frozen)

    def schema(self) -> dict[str, Any]:
        return json.loads(self.parameters)

    def openai(self) -> dict[str, Any]:
        """The OpenAI shape, which is also what Hugging Face chat templates read."""
        function = {"name": self.name, "description": self.description, "parameters": self.schema()}
        return {"type": "function", "function": function}


def read_tools(tools: Sequence[Any]) -> tuple[Tool, ...]:
    """OpenAI `tools` -> Tools; ToolError naming the bad entry."""
    if len(tools) > MAX_TOOLS:
        raise ToolError(f"tools: at most {MAX_TOOLS} tools", param="tools")
    read: list[Tool] = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise ToolError(f"{where}: only {{'type': 'function', 'function': {{...}}}} tools are supported", param="tools")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise ToolError(f"{where}.function: must be an object with a name", param="tools")
        name = function.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise ToolError(f"{where}.function.name: 1 to 64 letters, digits, '_' or '-'", param="tools")
        if any(t.name == name for t in read):
            raise ToolError(f"{where}.function.name: '{name}' is defined twice", param="tools")
        description = function.get("description") or ""
        if not isinstance(description, str):
            raise ToolError(f"{where}.function.description: must be text", param="tools")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            raise ToolError(f"{where}.function.parameters: must be a JSON schema of type object", param="tools")
        read.append(Tool(name, description, json.dumps(parameters)))
    return tuple(read)


# -- tool_choice -----------------------------------------------------------------------
@dataclass(frozen=True)
class ToolChoice:
    mode: str  # "none", "auto", "required" or "named"
    name: str = ""


def read_tool_choice(choice: Any, tools: Sequence[Tool]) -> ToolChoice:
    """OpenAI's tool_choice: "none" | "auto" | "required" | {"type": "function", "function": {"name": ...}}."""
    if choice is None:
        return ToolChoice("auto" if tools else "none")
    if choice in ("none", "auto", "required"):
        if choice != "none" and not tools:
            raise ToolError(f"tool_choice: '{choice}' needs tools", param="tool_choice")
        return ToolChoice(choice)
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if not any(t.name == name for t in tools):
            raise ToolError(f"tool_choice: no tool named {name!r} among tools", param="tool_choice")
        return ToolChoice("named", name)
    raise ToolError("tool_choice: 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}", param="tool_choice")


def call_schema(tools: Sequence[Tool], choice: ToolChoice, parallel: bool) -> dict[str, Any] | None:
    """The JSON schema a forced reply must follow (None: the model may answer freely).

    A call is `{"name": ..., "arguments": {...}}` with the arguments valid against that
    function's schema; `required` with parallel calls allowed is a list of them.  The
    generic JSON reading of webui/chat/tool_parser.py reads it back.
    """
    if choice.mode in ("none", "auto"):
        return None
    chosen = [t for t in tools if choice.mode == "required" or t.name == choice.name]
    calls = [{
        "type": "object",
        "properties": {"name": {"const": t.name}, "arguments": closed(t.schema())},
        "required": ["name", "arguments"], "additionalProperties": False,
    } for t in chosen]
    one = calls[0] if len(calls) == 1 else {"anyOf": calls}
    if choice.mode == "required" and parallel:
        return {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_PARALLEL_CALLS}
    return one


def closed(schema: Any) -> Any:
    """`schema` with every object that lists its properties closed to others
    (additionalProperties: false) unless it says otherwise, as OpenAI's strict function
    calling requires.  A forced call is written by the model under this grammar, and
    with objects left open a small model invents key after key until the token budget
    runs out, ending in invalid JSON; a function has no use for keys it does not list."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: closed(value) for key, value in schema.items()}
    if "properties" in out and not {"additionalProperties", "patternProperties", "unevaluatedProperties"} & set(out):
        out["additionalProperties"] = False
    return out


# -- rendering ---------------------------------------------------------------------------
def template_takes_tools(template: str | None) -> bool:
    """Whether a chat template renders a `tools` list (Qwen 2.5, Llama 3.1, Mistral v3, Hermes...)."""
    return bool(template) and re.search(r"\btools\b", template) is not None


def _arguments(text: str) -> Any:
    """A call's arguments as the template expects them: an object where the JSON parses."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _for_template(message: dict[str, Any], calls_as_text: bool = False, marker: str | None = None) -> dict[str, Any]:
    """One OpenAI message in the shape Hugging Face templates read.  `calls_as_text`: for
    a template that reads no `tool_calls` (Phi-4-mini's), earlier calls go into the
    content in the plain form, or they would vanish from the prompt.  A message with
    images gets content parts, as without tools (webui/chat/prompt.py; `marker`: a GGUF
    model's image marker)."""
    if calls_as_text and message.get("tool_calls"):
        return _as_text(message)
    content = content_parts(message, marker) if message.get("images") else message.get("content") or ""
    out: dict[str, Any] = {"role": message["role"], "content": content}
    if message.get("tool_calls"):
        out["tool_calls"] = [{
            "id": call.get("id", ""), "type": "function",
            "function": {"name": call["function"]["name"], "arguments": _arguments(call["function"]["arguments"])},
        } for call in message["tool_calls"]]
    for key in ("tool_call_id", "name", "reasoning_content"):
        if message.get(key):
            out[key] = message[key]
    return out


def _reads_message_tools(template: str) -> bool:
    """Whether the template takes the tool list from a message (Phi-4-mini: the system
    message's "tools", a JSON string) rather than from the `tools` variable."""
    return re.search(r"""message\s*(\[\s*['"]tools['"]\s*\]|\.tools\b)|['"]tools['"]\s+in\s+message""",
                     template) is not None


def _placements(chat: list[dict[str, Any]], tools: Sequence[Tool], template: str):
    """(messages, tools variable) to try, in order: the `tools` variable, then (for a
    template that reads it there) the tool list in the system message."""
    yield chat, [t.openai() for t in tools] or None
    if tools and _reads_message_tools(template):
        listing = json.dumps([t.openai()["function"] for t in tools], ensure_ascii=False)
        if chat and chat[0]["role"] == "system":
            yield [{**chat[0], "tools": listing}, *chat[1:]], None
        else:
            yield [{"role": "system", "content": "", "tools": listing}, *chat], None


def _as_text(message: dict[str, Any]) -> dict[str, str]:
    """One OpenAI message as plain text, for a template that has no tool roles."""
    content = message.get("content") or ""
    if message["role"] == "tool":
        label = message.get("name") or message.get("tool_call_id") or "tool"
        return {"role": "user", "content": f"<tool_response name=\"{label}\">\n{content}\n</tool_response>"}
    if message.get("tool_calls"):
        calls = "".join(
            "<tool_call>\n" + json.dumps({"name": c["function"]["name"], "arguments": _arguments(c["function"]["arguments"])},
                                          ensure_ascii=False) + "\n</tool_call>"
            for c in message["tool_calls"])
        content = f"{content}\n{calls}" if content else calls
    out = {"role": message["role"], "content": content}
    if message.get("reasoning_content"):
        out["reasoning_content"] = message["reasoning_content"]
    if message.get("images"):  # placed by apply_template, as in a chat without tools
        out["images"] = message["images"]
    return out


def as_plain_turns(messages: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Messages with tool calls and results written as plain text (the Hermes form), for
    a prompt rendered without tool roles."""
    return [_as_text(m) if m["role"] == "tool" or m.get("tool_calls") else m for m in messages]


def fallback_system(tools: Sequence[Tool]) -> str:
    """The tool list as a system message, for templates without tool support."""
    listing = "\n".join(json.dumps(t.openai(), separators=(",", ":"), ensure_ascii=False) for t in tools)
    return (
        "You may call one or more functions to answer. The functions, as JSON:\n"
        f"<tools>\n{listing}\n</tools>\n"
        "To call one, reply with a JSON object inside tags, one per call:\n"
        '<tool_call>\n{"name": "function name", "arguments": {...}}\n</tool_call>'
    )


def render_with_tools(tokenizer, messages: Sequence[dict[str, Any]], tools: Sequence[Tool],
                      template: str | None = None, variables: dict[str, Any] | None = None) -> str:
    """The prompt for the next assistant turn, offering `tools` (none: a plain chat prompt)
    and showing earlier calls and results.  PromptError when the template fails.
    `variables`: the template's thinking switches (webui/chat/thinking.py)."""
    template = template or getattr(tokenizer, "chat_template", None)
    has_tool_turns = any(m["role"] == "tool" or m.get("tool_calls") for m in messages)
    if template_takes_tools(template) and (tools or has_tool_turns):
        calls_as_text = re.search(r"\btool_calls\b", template) is None
        marker = getattr(tokenizer, "image_marker", None)
        chat = [_for_template(m, calls_as_text, marker) for m in messages]
        try:
            without = None
            for attempt, offered in _placements(chat, tools, template):
                text = render_chat_template(template, attempt, tokens=special_tokens(tokenizer), tools=offered,
                                            variables=variables)
                if not tools:
                    return text
                # A template that took the tools but rendered nothing of them dropped them.
                if without is None:
                    without = render_chat_template(template, chat, tokens=special_tokens(tokenizer), variables=variables)
                if text != without:
                    return text
        except SecurityError as exc:
            raise PromptError("unsafe chat template: it tried to reach Python internals") from exc
        except PromptError:
            raise  # stopped by its budget: the plain form would only run it again
        except (TemplateError, TypeError, ValueError, KeyError):
            pass  # a template that mentions tools yet cannot render these turns: the plain form
    turns = [_as_text(m) for m in messages]
    system = ""
    if tools:
        system = fallback_system(tools)
        if turns and turns[0]["role"] == "system":
            system = f"{turns[0]['content']}\n\n{system}"
            turns = turns[1:]
    return apply_template(tokenizer, turns, system, template, variables=variables)
