"""A tool's definition and a call's outcome, and the limits every call obeys."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from webui.chat.tools import Tool
from webui.errors import AppError

DEFAULT_TIMEOUT = 30.0  # seconds a call may take before it is abandoned
MAX_OUTPUT_CHARS = 16_000  # a result longer than this is cut (it goes back into the model's context)
MAX_ARGUMENT_CHARS = 100_000  # as the API's FunctionCall.arguments


class ToolFailure(AppError):
    """A call that could not be made or did not finish; the message names the tool."""

    code = "tool_failed"


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the model is offered it, and where it comes from (`source`: a label
    such as "file weather.py" or "mcp server files")."""

    name: str
    description: str
    parameters: str  # JSON schema of the arguments, as JSON text
    source: str

    def tool(self) -> Tool:
        return Tool(self.name, self.description, self.parameters)


@dataclass(frozen=True)
class ToolOutcome:
    """What a call gave back: its text (clipped), whether it failed, how long it took."""

    text: str
    is_error: bool
    seconds: float


def clip(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit:,} more characters cut]"


def as_text(value: Any) -> str:
    """A tool's return value as the text the model reads: strings as they are, anything
    else as JSON (what Text Generation WebUI's tool files return)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def parse_arguments(arguments: str) -> dict[str, Any]:
    """A call's arguments (JSON text from the model) as an object; ToolFailure otherwise."""
    if len(arguments) > MAX_ARGUMENT_CHARS:
        raise ToolFailure(f"the arguments are over {MAX_ARGUMENT_CHARS:,} characters")
    try:
        value = json.loads(arguments or "{}")
    except ValueError as exc:
        raise ToolFailure(f"the arguments are not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ToolFailure("the arguments must be a JSON object")
    return value
