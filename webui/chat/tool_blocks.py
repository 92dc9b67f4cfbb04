"""Tool calls as the chat shows them: each call a collapsible block (Gradio's Chatbot
message with metadata: a title, and a spinner while it waits or runs) holding the
arguments, the result and the time it took.

One block per tool message (webui/chat/display.py places them and maps the Chatbot's
indices back to the path).  What a tool returned is shown as code, in a fence longer
than any run of backticks in it: it stays text, never markup (and the Chatbot
sanitizes what it renders regardless).
"""

from __future__ import annotations

import json
import re

from webui.chat.history import Conversation, Message

TITLES = {
    "pending": "🛠️ {name}: waiting for your approval",
    "done": "🛠️ {name}",
    "error": "⚠️ {name} failed",
    "denied": "🚫 {name}: denied",
    "stopped": "⏹️ {name}: stopped",
}


def fenced(text: str, language: str = "") -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def arguments_for(conversation: Conversation, call: Message) -> str:
    for message in conversation.path():
        for record in message.tool_calls or ():
            if record.id == call.tool_call_id:
                try:
                    return json.dumps(json.loads(record.arguments), indent=2, ensure_ascii=False)
                except ValueError:
                    return record.arguments
    return ""


def block(conversation: Conversation, call: Message) -> dict:
    """A tool message as a Chatbot message: a collapsible block."""
    status = call.tool_status or "pending"
    title = TITLES[status].format(name=call.tool_name)
    if call.seconds is not None:
        title += f" ({call.seconds:.2f} s)"
    body = f"**Arguments**\n\n{fenced(arguments_for(conversation, call), 'json')}"
    if status != "pending":
        body += f"\n\n**Result**\n\n{fenced(call.content)}"
    metadata = {"title": title, "status": "pending" if status == "pending" else "done"}
    if call.seconds is not None:
        metadata["duration"] = round(call.seconds, 3)
    return {"role": "assistant", "content": body, "metadata": metadata}


def calls_note(message: Message) -> str:
    """A reply that only called tools, as its bubble says it."""
    return "*Calling " + ", ".join(record.name for record in message.tool_calls or ()) + "*"
