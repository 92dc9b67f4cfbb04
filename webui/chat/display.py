"""A conversation as the chat shows it, with a thinking model's thinking folded above each
answer.

Gradio's Chatbot shows a message with `metadata={"title": ...}` as a collapsible block
(open with a spinner while its status is "pending", closed once "done"), grouped into the
same bubble as the answer after it.  So a reply that thought is shown as two messages:
the thinking block, then the answer.  The Chatbot's own indices (what its select and edit
events send) then no longer equal positions on the conversation's path; `Shown.where`
turns one into the other, and `Shown.times` gives each shown message its time (page.js
puts them on hover, one per message element).

Thinking is shown as inert text: its HTML is escaped (outside code, which Markdown shows
as written), so a model that thinks in tags shows the tags rather than running them.
What the user typed is shown as typed (`as_typed`): `<b>` or `<script>` shows as text
rather than turning bold or vanishing, and Markdown still renders.  Only what HTML would
read as a tag or an entity is escaped there ("a < b" and "Tom & Jerry" stay as they are,
also for the Chatbot's copy button, which copies the text it was given).  The Chatbot's
editor starts from that text too: page.js turns it back (`typed`, the exact inverse)
before the user sees it.

A reply that could not be written shows its error in the chat, where the reply would
be (`failed`): shown once and never saved, so no half turn is kept.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Literal

from webui.chat import tool_blocks
from webui.chat.history import ChatError, Conversation, Message, Thought

# Shown at the end of a message while it streams; page.js finds the bubble to copy the
# live text into by it (webui/ui/static/page.js).
CURSOR = "▍"
THINKING_TITLE = "Thinking…"
Part = Literal["message", "thinking"]
# While a reply streams: the phase it is in (None: nothing streams).
Phase = Literal["answer", "thinking"]

# Code that Markdown shows as written: fenced blocks (closed, or open to the end) and
# inline spans.  Escaping inside them would show "&lt;" instead of "<".
_CODE = re.compile(r"(^|\n)(```|~~~)[^\n]*\n.*?(\n\2[^\n]*(?=\n|$)|$)|(`+)[^`\n].*?\4", re.S)


def inert(text: str) -> str:
    """Markdown `text` with its HTML made plain text: `<` and `&` escaped outside code."""
    out, last = [], 0
    for match in _CODE.finditer(text):
        out.append(_escape(text[last:match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(_escape(text[last:]))
    return "".join(out)


def _outside_code(text: str, change) -> str:
    out, last = [], 0
    for match in _CODE.finditer(text):
        out.append(change(text[last:match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(change(text[last:]))
    return "".join(out)


# What HTML reads as markup: "<" opening a tag, comment or declaration, and "&" opening an
# entity.  Each is escaped in one pass, and `typed` undoes exactly that (page.js has a copy).
_MARKUP = re.compile(r"<(?=[A-Za-z/!?])|&(?=#?[A-Za-z0-9]+;)")
_ESCAPED = re.compile(r"&lt;(?=[A-Za-z/!?])|&amp;(?=#?[A-Za-z0-9]+;)")


def as_typed(text: str) -> str:
    """The user's Markdown `text`, shown as typed: what HTML would read as a tag or an
    entity is escaped, outside code."""
    return _outside_code(text, lambda part: _MARKUP.sub(lambda m: "&lt;" if m[0] == "<" else "&amp;", part))


def typed(text: str) -> str:
    """The text `as_typed` was given."""
    return _outside_code(text, lambda part: _ESCAPED.sub(lambda m: "<" if m[0] == "&lt;" else "&", part))


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;")


ERROR_TITLE = "⚠️ **Error:**"
NOT_SENT = "Your message was not sent: it is still in the message box, to send again."


def failed(error: str, unsent: str | None = None) -> list[dict]:
    """The Chatbot's messages to add after the conversation when a reply could not be
    written: the user's message that was not sent (when it was withdrawn: `unsent`) and
    the error in the reply's place.  Display only, never saved."""
    shown = [{"role": "user", "content": as_typed(unsent)}] if unsent is not None else []
    note = f" {NOT_SENT}" if unsent is not None else ""
    return [*shown, {"role": "assistant", "content": f"{ERROR_TITLE} {inert(error)}{note}"}]


def thought_title(tokens: int, seconds: float) -> str:
    """The folded block's title: how long the model thought, and how many tokens."""
    title = f"Thought for {seconds:.1f} s"
    return title + (f" · {tokens} token{'s' if tokens != 1 else ''}" if tokens else "")


def thought_of(message: Message) -> Thought | None:
    if message.role != "assistant" or not message.reasoning:
        return None
    return Thought(message.reasoning, message.reasoning_tokens, message.reasoning_seconds)


def thinking_block(thought: Thought | None) -> dict:
    """The Chatbot message that shows a reply's thinking (None: still thinking; its text
    is the cursor, replaced by the live copy in the page)."""
    if thought is None:
        return {"role": "assistant", "content": CURSOR, "metadata": {"title": THINKING_TITLE, "status": "pending"}}
    return {"role": "assistant", "content": inert(thought.text),
            "metadata": {"title": thought_title(thought.tokens, thought.seconds), "status": "done"}}


@dataclass
class Shown:
    """The Chatbot's messages, and for each one where it came from on the path."""

    messages: list[dict] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # 0-based path position per shown message
    parts: list[Part] = field(default_factory=list)
    created: list[float] = field(default_factory=list)

    def add(self, message: dict, position: int, part: Part, created: float) -> None:
        self.messages.append(message)
        self.positions.append(position)
        self.parts.append(part)
        self.created.append(created)

    def where(self, index: int) -> tuple[int, Part]:
        """(path position, part) of the Chatbot's message `index`."""
        if not isinstance(index, int) or not 0 <= index < len(self.positions):
            raise ChatError(f"no message at position {index}")
        return self.positions[index], self.parts[index]

    def times(self) -> str:
        """When each shown message was written (seconds since the epoch), as JSON."""
        return json.dumps([round(t) for t in self.created])


def shown(conversation: Conversation, streaming: Phase | None = None, thought: Thought | None = None) -> Shown:
    """The active path as the chat shows it.

    While a reply streams (`streaming`), its last message is the reply being written:
    "thinking" shows its thinking block open, with the cursor (and no answer yet);
    "answer" shows `thought` (the thinking so far, if any) folded, and the answer with
    the cursor."""
    view = Shown()
    path = conversation.path()
    for position, message in enumerate(path):
        if message.role == "tool":  # a tool call's result: a block of its own (webui/chat/tool_blocks.py)
            view.add(tool_blocks.block(conversation, message), position, "message", message.created)
            continue
        text = message.content if message.visible is None else message.visible
        if message.role == "user":
            text = as_typed(text)
        last = streaming is not None and position == len(path) - 1
        if message.tool_calls and not text.strip() and not last:
            text = tool_blocks.calls_note(message)
        if last and streaming == "thinking":
            view.add(thinking_block(None), position, "thinking", message.created)
            continue
        done = thought if last and thought is not None else thought_of(message)
        if done is not None and done.text:
            view.add(thinking_block(done), position, "thinking", message.created)
        if last:
            text += CURSOR
        elif done is not None and done.text and not text:
            continue  # stopped while thinking: the block alone
        view.add({"role": message.role, "content": text}, position, "message", message.created)
    return view
