"""Reading tool calls out of a model's reply, whole or as it streams.

Each family writes calls its own way:

- Qwen 2.5 / Hermes: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one block a call;
- Llama 3.1+: `<|python_tag|>` (a special token, usually not shown) and/or a bare
  `{"name": ..., "parameters": {...}}`, several separated by ";";
- Mistral: `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]` (older) or
  `[TOOL_CALLS]name[ARGS]{...}` (newer); `[TOOL_CALLS]` is a special token too;
- anything else: a reply that is only JSON, an object with a name and arguments (or
  parameters) or a list of them, perhaps in a ```json fence.  That is also the form a
  forced call takes (webui/chat/tools.py, call_schema).

Only functions the request offered count as calls; anything else stays text.  The same
`ToolCallParser` serves the whole reply (feed it, then finish) and the stream (feed
each piece as it comes), so streamed deltas assemble to exactly the whole reply's calls.
Text that may begin a call is held back, as a stop string's start is
(webui/generation/stops.py): a call is sent once complete, never half as text.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

MARKERS = ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>")
HERMES_END = "</tool_call>"
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it

    def openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Text:
    """Reply text that is not a call."""

    text: str


@dataclass(frozen=True)
class Call:
    """A complete call, the `index`-th of the reply."""

    index: int
    call: ToolCall


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _arguments_text(arguments: object) -> str | None:
    if isinstance(arguments, dict):
        return json.dumps(arguments, ensure_ascii=False)
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            return arguments if isinstance(json.loads(arguments), dict) else None
        except ValueError:
            return None
    return None


def _as_call(value: object, names: frozenset[str]) -> tuple[str, str] | None:
    """(name, arguments) from one decoded call object, or None if it is not one."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict):  # {"type": "function", "function": {...}}
        value = value["function"]
    name = value.get("name")
    arguments = _arguments_text(value.get("arguments", value.get("parameters")))
    if not isinstance(name, str) or arguments is None or (names and name not in names):
        return None
    return name, arguments


def _json_values(text: str, separators: str = ";,") -> list[object] | None:
    """Every JSON value in `text`, one after another (separators and spaces between);
    None if anything else is there."""
    values, position = [], 0
    while True:
        while position < len(text) and (text[position].isspace() or text[position] in separators):
            position += 1
        if position == len(text):
            return values
        try:
            value, position = _DECODER.raw_decode(text, position)
        except ValueError:
            return None
        values.append(value)


def parse_json_calls(text: str, names: frozenset[str]) -> list[tuple[str, str]] | None:
    """Calls from a reply that is only JSON (generic form, Llama 3.1, old Mistral)."""
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    values = _json_values(text)
    if not values:
        return None
    if len(values) == 1 and isinstance(values[0], list):
        values = values[0]
    if len(values) == 1 and isinstance(values[0], dict) and isinstance(values[0].get("tool_calls"), list):
        values = values[0]["tool_calls"]
    calls = [_as_call(v, names) for v in values]
    if not calls or any(c is None for c in calls):
        return None
    return calls  # type: ignore[return-value]


def _mistral_named(text: str, names: frozenset[str]) -> list[tuple[str, str]] | None:
    """Newer Mistral: name[ARGS]{...} after each [TOOL_CALLS]."""
    calls = []
    for part in text.split("[TOOL_CALLS]"):
        part = part.strip()
        if not part:
            continue
        name, sep, rest = part.partition("[ARGS]")
        values = _json_values(rest) if sep else None
        if not values or len(values) != 1:
            return None
        call = _as_call({"name": name.strip(), "arguments": values[0]}, names)
        if call is None:
            return None
        calls.append(call)
    return calls or None


def _partial_marker(text: str) -> int:
    """Length of the longest end of `text` that could begin a marker."""
    for n in range(min(len(text), max(map(len, MARKERS)) - 1), 0, -1):
        if any(marker.startswith(text[-n:]) for marker in MARKERS):
            return n
    return 0


class ToolCallParser:
    """Feed reply text in; get back Text and Call events in order."""

    def __init__(self, names: Iterable[str] = ()):
        self.names = frozenset(names)
        self.calls: list[ToolCall] = []
        self._mode = "start"  # start -> text | json | calls
        self._held = ""

    def feed(self, piece: str) -> list[Text | Call]:
        self._held += piece
        events: list[Text | Call] = []
        if self._mode == "start":
            head = self._held.lstrip()
            if not head:
                return events
            if any(m.startswith(head) and m != head for m in MARKERS):
                return events  # could still be a marker ("[" may be "[TOOL_CALLS]" or JSON)
            if any(head.startswith(m) for m in MARKERS):
                self._mode = "text"  # finds the marker at once
            elif head[0] in "{[`":
                self._mode = "json"  # a reply that is only JSON: read once it is complete
            else:
                self._mode = "text"
        if self._mode == "text":
            found = [(i, m) for m in MARKERS if (i := self._held.find(m)) >= 0]
            if found:
                cut = min(found)[0]
                events += self._text(self._held[:cut])
                self._held = self._held[cut:]
                self._mode = "calls"
            else:
                keep = _partial_marker(self._held)
                events += self._text(self._held[: len(self._held) - keep])
                self._held = self._held[len(self._held) - keep:]
        if self._mode == "calls":
            events += self._complete_hermes_blocks()
        return events

    def finish(self) -> list[Text | Call]:
        held, self._held = self._held, ""
        if self._mode == "json":
            calls = parse_json_calls(held, self.names)
            return self._calls(calls) if calls else self._text(held)
        if self._mode != "calls":
            return self._text(held)
        body = held.strip()
        if body.startswith("<tool_call>"):  # the last block was never closed
            calls = parse_json_calls(body[len("<tool_call>"):], self.names)
        elif body.startswith("[TOOL_CALLS]"):
            rest = body[len("[TOOL_CALLS]"):]
            calls = parse_json_calls(rest, self.names) or _mistral_named(body, self.names)
        elif body.startswith("<|python_tag|>"):
            calls = parse_json_calls(body[len("<|python_tag|>"):], self.names)
        else:
            calls = None
        return self._calls(calls) if calls else self._text(held)

    def _complete_hermes_blocks(self) -> list[Text | Call]:
        events: list[Text | Call] = []
        while True:
            body = self._held.lstrip()
            if not body.startswith("<tool_call>"):
                return events
            end = body.find(HERMES_END)
            if end < 0:
                return events
            calls = parse_json_calls(body[len("<tool_call>"):end], self.names)
            block = body[: end + len(HERMES_END)]
            self._held = body[end + len(HERMES_END):]
            events += self._calls(calls) if calls else self._text(block)

    def _calls(self, calls: list[tuple[str, str]]) -> list[Text | Call]:
        events: list[Text | Call] = []
        for name, arguments in calls:
            call = ToolCall(new_call_id(), name, arguments)
            events.append(Call(len(self.calls), call))
            self.calls.append(call)
        return events

    @staticmethod
    def _text(text: str) -> list[Text | Call]:
        return [Text(text)] if text else []


def parse_reply(text: str, names: Iterable[str]) -> tuple[str, list[ToolCall]]:
    """A whole reply -> (its text without the calls, the calls)."""
    parser = ToolCallParser(names)
    events = parser.feed(text) + parser.finish()
    content = "".join(e.text for e in events if isinstance(e, Text))
    return content, parser.calls
