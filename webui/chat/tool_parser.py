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
(webui/generation/stops.py): a call is never sent half as text.

A call written as `{"name": "<offered>", "arguments": {` (the generic and forced form,
and inside a Hermes block) streams: once that head is read, `CallStart` names it and its
arguments follow as `CallArguments` pieces while the model writes them, as OpenAI streams
them; the call's `arguments` are then exactly the model's text of that object.  Other
forms (arguments before the name, arguments as a string, Llama's and Mistral's markers)
come whole, as one `Call`, once they have been read.  Every decision depends only on the
text so far, never on how it was cut into pieces.
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
    """A complete call, the `index`-th of the reply.  `streamed`: its CallStart and
    CallArguments went out already (its arguments are their concatenation)."""

    index: int
    call: ToolCall
    streamed: bool = False


@dataclass(frozen=True)
class CallStart:
    """A call whose arguments are about to stream: its id and name."""

    index: int
    id: str
    name: str


@dataclass(frozen=True)
class CallArguments:
    """The next piece of the `index`-th call's arguments (JSON text as the model writes it)."""

    index: int
    text: str


Event = Text | CallStart | CallArguments | Call


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


# -- reading a call's head and arguments as they stream ------------------------------------
WAIT = None  # the text so far could still become what is looked for
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _literal(text: str, pos: int, literal: str) -> int | bool | None:
    """The position after `literal` at `pos`; WAIT if the text ends inside it; False if not there."""
    end = pos + len(literal)
    if text.startswith(literal, pos):
        return end
    return WAIT if len(text) < end and literal.startswith(text[pos:]) else False


def _head(text: str, pos: int, names: frozenset[str]) -> tuple[int, str] | bool | None:
    """At `pos`, `{"name": "<offered name>", "arguments": ` (or "parameters") up to the
    arguments' `{`: (its position, the name); WAIT; or False if it is not that."""
    steps: list[object] = ["{", '"name"', ":", None, ",", ('"arguments"', '"parameters"'), ":"]
    name = ""
    for step in steps:
        pos = _skip_space(text, pos)
        if step is None:  # the name, a JSON string of OpenAI's name characters
            if pos == len(text):
                return WAIT
            if text[pos] != '"':
                return False
            end = pos + 1
            while end < len(text) and text[end] in _NAME_CHARS and end - pos <= 64:
                end += 1
            if end == len(text):
                return WAIT
            if text[end] != '"':
                return False
            name, pos = text[pos + 1:end], end + 1
            if not name or (names and name not in names):
                return False
            continue
        options = step if isinstance(step, tuple) else (step,)
        found = [_literal(text, pos, option) for option in options]
        ends = [f for f in found if f is not False and f is not WAIT]
        if ends:
            pos = ends[0]
        elif any(f is WAIT for f in found):
            return WAIT
        else:
            return False
    pos = _skip_space(text, pos)
    if pos == len(text):
        return WAIT
    return (pos, name) if text[pos] == "{" else False


class _Scan:
    """Where a JSON value ends: depth of brackets outside strings, as text arrives."""

    def __init__(self, depth: int = 0):
        self.depth, self.in_string, self.escaped = depth, False, False

    def until_closed(self, text: str) -> int | None:
        """Consume `text`; the position just after the value closes (depth 0), or None."""
        for pos, char in enumerate(text):
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth == 0:
                    return pos + 1
        return None


@dataclass
class _Live:
    """A call being streamed: its arguments so far, and what is left of its object."""

    index: int
    id: str
    name: str
    arguments: str = ""
    stage: str = "arguments"  # arguments -> object (rest of the call object) -> done
    scan: _Scan | None = None


class ToolCallParser:
    """Feed reply text in; get back Text, CallStart, CallArguments and Call events in order."""

    def __init__(self, names: Iterable[str] = ()):
        self.names = frozenset(names)
        self.calls: list[ToolCall] = []
        self._mode = "start"  # start -> text | json | calls
        self._held = ""
        self._live: _Live | None = None  # a call whose arguments are streaming
        # json mode, once its first call streams: lead -> between (calls) -> end | rest
        self._json_stage = "lead"
        self._json_open = ""  # the brackets and fence opened before the calls ("```", "[")
        self._hermes_close = False  # a streamed call's Hermes block is still to be closed

    def feed(self, piece: str) -> list[Event]:
        self._held += piece
        events: list[Event] = []
        if self._mode == "start":
            head = self._held.lstrip()
            if not head:
                return events
            if any(m.startswith(head) and m != head for m in MARKERS):
                return events  # could still be a marker ("[" may be "[TOOL_CALLS]" or JSON)
            if any(head.startswith(m) for m in MARKERS):
                self._mode = "text"  # finds the marker at once
            elif head[0] in "{[`":
                self._mode = "json"  # a reply that is only JSON
            else:
                self._mode = "text"
        if self._mode == "json":
            return self._stream_json()
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

    def finish(self) -> list[Event]:
        events = self._end_live()
        held, self._held = self._held, ""
        if self._mode == "json":
            if self._json_stage in ("lead", "whole"):  # nothing streamed: read the reply whole
                calls = parse_json_calls(held, self.names)
                return self._calls(calls) if calls else self._text(held)
            left = held.strip() if self._json_stage == "rest" else held.strip().strip(",;")
            return events + (self._text(left) if self._json_stage != "end" else [])
        if self._mode != "calls":
            return events + self._text(held)
        body = held.strip()
        if not body or self._hermes_close:  # nothing, or the unclosed end of a streamed call's block
            return events
        if body.startswith("<tool_call>"):  # the last block was never closed
            calls = parse_json_calls(body[len("<tool_call>"):], self.names)
        elif body.startswith("[TOOL_CALLS]"):
            rest = body[len("[TOOL_CALLS]"):]
            calls = parse_json_calls(rest, self.names) or _mistral_named(body, self.names)
        elif body.startswith("<|python_tag|>"):
            calls = parse_json_calls(body[len("<|python_tag|>"):], self.names)
        else:
            calls = None
        return events + (self._calls(calls) if calls else self._text(held))

    # -- streaming calls ---------------------------------------------------------------
    def _start_live(self, at: int, name: str) -> list[Event]:
        """A call's head was read up to its arguments (at `at` in the held text)."""
        self._live = _Live(len(self.calls), new_call_id(), name, scan=_Scan())
        self._held = self._held[at:]
        return [CallStart(self._live.index, self._live.id, name)]  # the caller's loop streams the rest

    def _advance_live(self) -> list[Event]:
        """Stream the held text into the live call; [] until there is something to send."""
        live, events = self._live, []
        if live is None:
            return events
        if live.stage == "arguments":
            end = live.scan.until_closed(self._held)
            piece = self._held if end is None else self._held[:end]
            self._held = "" if end is None else self._held[end:]
            if piece:
                live.arguments += piece
                events.append(CallArguments(live.index, piece))
            if end is None:
                return events
            live.stage, live.scan = "object", _Scan(depth=1)  # the rest of the call object: other keys, `}`
        if live.stage == "object":
            end = live.scan.until_closed(self._held)
            self._held = "" if end is None else self._held[end:]
            if end is None:
                return events
            events += self._end_live()
        return events

    def _end_live(self) -> list[Event]:
        """The live call is complete (or the reply ended inside it: its text so far stands)."""
        live, self._live = self._live, None
        if live is None:
            return []
        call = ToolCall(live.id, live.name, live.arguments)
        self.calls.append(call)
        return [Call(live.index, call, streamed=True)]

    def _json_lead(self, text: str) -> tuple[int, str] | bool | None:
        """Before the first call of a JSON reply: an optional fence and list bracket, then
        the call's head.  (where its arguments start, the name); WAIT; or False."""
        opened, pos = "", _skip_space(text, 0)
        if text.startswith("`", pos):
            fence = _literal(text, pos, "```")
            if fence is WAIT or fence is False:
                return fence
            tag = _literal(text, fence, "json")
            if tag is WAIT:
                return WAIT
            pos, opened = _skip_space(text, fence if tag is False else tag), "```"
        if text.startswith("[", pos):
            pos, opened = _skip_space(text, pos + 1), opened + "["
        if pos == len(text):
            return WAIT
        head = _head(text, pos, self.names)
        if head is WAIT or head is False:
            return head
        self._json_open = opened
        return head

    def _stream_json(self) -> list[Event]:
        """A reply that is only JSON: a call, or a list of them, perhaps in a fence."""
        events: list[Event] = []
        while True:
            if self._live is not None:
                events += self._advance_live()
                if self._live is not None:
                    return events
                self._json_stage = "between"
            text = self._held
            if self._json_stage == "lead":
                head = self._json_lead(text)
                if head is WAIT:
                    return events
                if head is False:  # not the streaming form: read whole at the end, as before
                    self._json_stage = "whole"
                    return events
                events += self._start_live(*head)
                self._json_stage = "between"
                continue
            pos = _skip_space(text, 0)
            if self._json_stage == "between":
                while pos < len(text) and (text[pos].isspace() or text[pos] in ",;"):
                    pos += 1
                if pos == len(text):
                    return events
                if text[pos] == "{":
                    head = _head(text, pos, self.names)
                    if head is WAIT:
                        return events
                    if head is not False:
                        events += self._start_live(*head)
                        continue
                elif text[pos] == "]" and "[" in self._json_open:
                    self._held, self._json_stage = text[pos + 1:], "end"
                    continue
                elif text[pos] == "`" and self._json_open == "```":
                    self._held, self._json_stage = text[pos:], "end"
                    continue
                self._json_stage, self._held = "rest", text[pos:]  # not a call: text, at the end
                return events
            if self._json_stage == "end":  # only the fence's close may follow
                rest = text[pos:]
                closing = _literal(rest, 0, "```") if "```" in self._json_open else False
                if not rest or closing is WAIT or (closing is not False and not rest[closing:].strip()):
                    return events  # held; dropped at the end unless text follows
                self._json_stage, self._held = "rest", rest
            return events  # whole or rest: held until the end

    def _complete_hermes_blocks(self) -> list[Event]:
        events: list[Event] = []
        while True:
            if self._live is not None:
                events += self._advance_live()
                if self._live is not None:
                    return events
                self._hermes_close = True
            if self._hermes_close:  # a streamed call's block: drop what is left of it
                end = self._held.find(HERMES_END)
                if end < 0:
                    return events
                self._held = self._held[end + len(HERMES_END):]
                self._hermes_close = False
            body = self._held.lstrip()
            if not body.startswith("<tool_call>"):
                return events
            head = _head(body, len("<tool_call>"), self.names)
            if head is WAIT:
                return events
            if head is not False:
                self._held = body
                events += self._start_live(*head)
                continue
            end = body.find(HERMES_END)
            if end < 0:
                return events
            calls = parse_json_calls(body[len("<tool_call>"):end], self.names)
            block = body[: end + len(HERMES_END)]
            self._held = body[end + len(HERMES_END):]
            events += self._calls(calls) if calls else self._text(block)

    def _calls(self, calls: list[tuple[str, str]]) -> list[Event]:
        events: list[Event] = []
        for name, arguments in calls:
            call = ToolCall(new_call_id(), name, arguments)
            events.append(Call(len(self.calls), call))
            self.calls.append(call)
        return events

    @staticmethod
    def _text(text: str) -> list[Event]:
        return [Text(text)] if text else []


def parse_reply(text: str, names: Iterable[str]) -> tuple[str, list[ToolCall]]:
    """A whole reply -> (its text without the calls, the calls)."""
    parser = ToolCallParser(names)
    events = parser.feed(text) + parser.finish()
    content = "".join(e.text for e in events if isinstance(e, Text))
    return content, parser.calls
