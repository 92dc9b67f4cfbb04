"""Tools in the chat: which tools a reply is offered, the calls a reply makes, and their
results going back to the model.

A chat chooses its tools (ChatTools, kept with the conversation): the tools it may use,
those of them that run without asking, and `choice` as the API's tool_choice (auto,
none, required, or one tool's name).  Required and named constrain the reply after the
user's message to one call with a grammar; the reply after its result is then written
without tools (the user asked for that call, and the model answers from its result).
With auto the model may call again, up to MAX_STEPS rounds.  A tool not chosen is off:
never offered.

After a reply, its calls are recorded (webui/chat/history.py: the reply's
`tool_calls`, then one `tool` message per call, pending).  Each is then run, or
denied: a denial goes back to the model as that call's result, so the model hears
that the user said no.  Calls go through the tool registry (webui/tools/registry.py),
which checks the user's access, and bounds each call's time and output.  A chat takes
at most MAX_STEPS rounds of calls after one user message; then tools are no longer
offered and the model must answer in words.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence

from webui.chat.history import MAX_TOOL_CALLS, ChatError, ChatTools, Conversation, Message, ToolCallRecord
from webui.chat.tool_parser import parse_reply
from webui.chat.tools import Tool, ToolChoice, call_schema
from webui.generation.params import ParamsError, SamplingParams, make_params

MAX_STEPS = 5
DENIED = "The user denied this call; it was not run."
STOPPED = "The call was stopped before it finished."


def steps_since_user(conversation: Conversation) -> int:
    """Rounds of tool calls since the user last wrote."""
    steps = 0
    for message in reversed(conversation.path()):
        if message.role == "user":
            break
        steps += bool(message.tool_calls)
    return steps


def offered(available: Sequence[Tool], chat: ChatTools | None, conversation: Conversation) -> tuple[Tool, ...]:
    """The tools the next reply is offered: those the chat allows, of those the user may
    use (`available`), unless tool_choice is none or the step limit is reached."""
    steps = steps_since_user(conversation)
    if chat is None or chat.choice == "none" or steps >= MAX_STEPS or (chat.choice != "auto" and steps > 0):
        return ()
    by_name = {tool.name: tool for tool in available}
    return tuple(by_name[name] for name in chat.allowed if name in by_name)


def forced(params: SamplingParams, tools: Sequence[Tool], chat: ChatTools | None,
           conversation: Conversation) -> SamplingParams:
    """`params` with the call grammar when tool_choice asks for a call (first step only)."""
    if not tools or chat is None or chat.choice == "auto" or steps_since_user(conversation) > 0:
        return params
    if chat.choice == "required":
        choice = ToolChoice("required")
    elif any(tool.name == chat.choice for tool in tools):
        choice = ToolChoice("named", chat.choice)
    else:
        raise ChatError(f"tool_choice names {chat.choice!r}, which this chat is not using")
    if params.json_schema or params.grammar_string:
        raise ChatError("tool_choice: a required or named call cannot be combined with a grammar or JSON schema")
    schema = call_schema(tools, choice, parallel=False)
    try:
        return make_params({"json_schema": json.dumps(schema)}, base=params)
    except ParamsError as exc:
        raise ChatError(f"tool_choice: a tool's parameters cannot constrain a call: {exc}") from exc


def record_calls(conversation: Conversation, reply: Message, text: str, tools: Sequence[Tool]) -> list[Message]:
    """The calls in a finished reply, recorded (pending); [] when it made none."""
    content, calls = parse_reply(text, [tool.name for tool in tools])
    if not calls:
        return []
    records = [ToolCallRecord(id=call.id, name=call.name, arguments=call.arguments) for call in calls]
    conversation.set_tool_calls(reply.id, content.strip(), records[:MAX_TOOL_CALLS])
    return [conversation.append("tool", "", tool_call_id=r.id, tool_name=r.name, tool_status="pending")
            for r in records[:MAX_TOOL_CALLS]]


def pending(conversation: Conversation) -> list[Message]:
    """The calls at the end of the chat still waiting to run or to be approved."""
    waiting = []
    for message in reversed(conversation.path()):
        if message.role != "tool":
            break
        if message.tool_status == "pending":
            waiting.append(message)
    return waiting[::-1]


def needs_approval(calls: Sequence[Message], chat: ChatTools | None) -> list[Message]:
    always = set(chat.always) if chat else set()
    return [call for call in calls if call.tool_name not in always]


def arguments_of(conversation: Conversation, call: Message) -> str:
    for message in conversation.path():
        for record in message.tool_calls or ():
            if record.id == call.tool_call_id:
                return record.arguments
    raise ChatError("that call is no longer in the conversation")


def resolve(registry, user: str | None, conversation: Conversation, call: Message, approve: bool,
            cancel: threading.Event | None = None) -> Message:
    """Run `call` (approve) or deny it; its outcome goes into the conversation."""
    if not approve:
        conversation.set_tool_result(call.id, DENIED, "denied", None)
    elif registry is None:
        conversation.set_tool_result(call.id, "tools are not available on this server", "error", None)
    else:
        outcome = registry.call(user, call.tool_name, arguments_of(conversation, call), cancel=cancel)
        if cancel is not None and cancel.is_set():
            conversation.set_tool_result(call.id, STOPPED, "stopped", outcome.seconds)
        else:
            conversation.set_tool_result(call.id, outcome.text, "error" if outcome.is_error else "done",
                                         outcome.seconds)
    return next(m for m in conversation.messages if m.id == call.id)
