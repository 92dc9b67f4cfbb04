"""A conversation as a tree of messages, so nothing the user or the model wrote is lost.

Regenerating a reply or editing a message adds a sibling instead of overwriting: the
old text stays as an alternative the user can flip back to.  What the user sees (and
what the prompt is built from) is the *active path*: from the first message down,
following each message's selected child.

Messages keep their creation order in one list; ids only grow, and a parent always
has a smaller id than its children, which makes cycles impossible by construction
and easy to check when a file is loaded.

Tool use (webui/chat/tool_turns.py) is kept as messages too, in the shape chat
templates read: a reply that calls tools carries them in `tool_calls`, and each call's
result follows as a `role: tool` message (its call's id and name, how it went, how
long it took), then the reply goes on in the next assistant message.  The same model
checks these fields when a conversation changes and when a file is read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from webui.chat.chat_lore import ChatLore
from webui.errors import AppError
from webui.images import MAX_IMAGES_PER_MESSAGE

Role = Literal["user", "assistant", "tool"]
ToolStatus = Literal["pending", "done", "error", "denied", "stopped"]
ROOT = -1  # the parent id of first messages
# What a conversation file may hold.  Checked when a file is read AND whenever the
# conversation changes, so nothing is ever saved that could not be read back.
MAX_MESSAGE_CHARS = 1_000_000
MAX_MESSAGES = 100_000
# Images one message may carry (ids of the user's stored images, webui/images.py):
# the same limit as on the way in, so what is saved is what can be read back.
MAX_MESSAGE_IMAGES = MAX_IMAGES_PER_MESSAGE
IMAGE_ID = r"^[0-9a-f]{32}$"
MAX_SOURCES = 50  # passages (and attachments) one message may carry
MAX_SOURCE_CHARS = 20_000
TOOL_NAME = r"^[A-Za-z0-9_-]{1,64}$"  # OpenAI's function names (webui/chat/tools.py)
MAX_TOOL_CALLS = 16  # calls one reply may make
MAX_TOOL_ARGUMENTS = 100_000  # characters of one call's arguments (as the API's FunctionCall)
MAX_MEMBERS = 16  # characters one group chat may hold


class ChatError(AppError, ValueError):
    """An action that does not apply to this conversation (e.g. nothing to regenerate)."""


class Source(BaseModel):
    """A document passage that was put into the prompt with a user message, kept with
    it so the chat can cite it and show it (webui/documents/context.py)."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(ge=1, le=MAX_SOURCES)  # the number the prompt and the citation use: [n]
    file: str = Field(max_length=200)  # the file's name as uploaded
    file_id: str = Field("", max_length=100)
    page: int | None = Field(None, ge=1)
    start: int = Field(0, ge=0)  # character offsets in that page's text
    end: int = Field(0, ge=0)
    text: str = Field(max_length=MAX_SOURCE_CHARS)
    whole: bool = False  # the whole document went in (it fit), not a retrieved passage


class ToolCallRecord(BaseModel):
    """One call a reply made: its id, the function, and the arguments as the model wrote them."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=64)
    name: str = Field(pattern=TOOL_NAME)
    arguments: str = Field(max_length=MAX_TOOL_ARGUMENTS)

    def openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


class ChatTools(BaseModel):
    """A chat's tool choices (webui/chat/tool_turns.py): the tools it may use (a tool not
    listed is off), those that run without asking, and tool_choice as the API has it."""

    model_config = ConfigDict(extra="forbid")
    allowed: list[Annotated[str, Field(pattern=TOOL_NAME)]] = Field(default_factory=list, max_length=128)
    always: list[Annotated[str, Field(pattern=TOOL_NAME)]] = Field(default_factory=list, max_length=128)
    choice: str = Field("auto", pattern=r"^(auto|none|required|[A-Za-z0-9_-]{1,64})$")


class ChatSettings(BaseModel):
    """How a conversation is prompted, kept with it so that reopening it (or reloading the
    page) brings back the same prompt format (webui/chat/settings.py): the mode, the
    instruction template's name, and the template's thinking switches.  A file written
    before these were kept has none (None): the chat then uses the controls as they are."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["instruct", "chat", "chat-instruct"] = "instruct"
    template: str = Field("", max_length=200)  # a name in the template library ("" : the model's own)
    enable_thinking: bool = True
    effort: Literal["low", "medium", "high"] = "medium"


class ChatGroup(BaseModel):
    """A group chat's cast (webui/chat/group.py): the characters in it (names in the user's
    character library), those muted (never chosen to speak), how the next speaker is
    chosen, and who the user chose to speak next (None: the order decides)."""

    model_config = ConfigDict(extra="forbid")
    members: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(min_length=1, max_length=MAX_MEMBERS)
    muted: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default_factory=list,
                                                                            max_length=MAX_MEMBERS)
    order: Literal["natural", "list", "manual"] = "natural"
    next: str | None = Field(None, max_length=128)

    @model_validator(mode="after")
    def _consistent(self) -> ChatGroup:
        if len(set(self.members)) != len(self.members):
            raise ValueError("a group lists each member once")
        if not set(self.muted) <= set(self.members) or (self.next is not None and self.next not in self.members):
            raise ValueError("only a member of the group can be muted or chosen to speak next")
        return self


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=0)
    parent: int = Field(ge=ROOT)
    role: Role
    content: str = Field(max_length=MAX_MESSAGE_CHARS)
    # What the chat shows, when an extension made it differ from what the model sees.
    visible: str | None = Field(None, max_length=MAX_MESSAGE_CHARS)
    created: float = 0.0
    # Generation facts shown next to a reply (tokens, seed, finish reason).
    note: str = ""
    # Images sent with the message: ids in the user's image store, in the order shown.
    images: list[Annotated[str, StringConstraints(pattern=IMAGE_ID)]] = Field(
        default_factory=list, max_length=MAX_MESSAGE_IMAGES)
    # A thinking model's reply: its thinking (shown folded above the answer, which is
    # `content`), how many tokens and seconds it took.
    reasoning: str = Field("", max_length=MAX_MESSAGE_CHARS)
    reasoning_tokens: int = Field(0, ge=0)
    reasoning_seconds: float = Field(0.0, ge=0.0)
    # Documents (webui/documents/): files attached with this message (ids in the user's
    # store), and the passages of them that went into the prompt with it.
    attachments: list[str] = Field(default_factory=list, max_length=MAX_SOURCES)
    sources: list[Source] = Field(default_factory=list, max_length=MAX_SOURCES)
    # Tool use (see the module's docstring): an assistant message's calls; a tool
    # message's call id, function name, state and duration.
    tool_calls: list[ToolCallRecord] | None = Field(None, max_length=MAX_TOOL_CALLS)
    tool_call_id: str | None = Field(None, min_length=1, max_length=64)
    tool_name: str | None = Field(None, pattern=TOOL_NAME)
    tool_status: ToolStatus | None = None
    seconds: float | None = Field(None, ge=0)
    # A group chat's reply: the character who wrote it (None: the chat's own character).
    speaker: str | None = Field(None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _tool_fields(self) -> Message:
        if self.role == "tool" and not (self.tool_call_id and self.tool_name and self.tool_status):
            raise ValueError("a tool message needs its call's id, the tool's name and a status")
        if self.role != "tool" and (self.tool_call_id or self.tool_name or self.tool_status):
            raise ValueError("only a tool message carries a tool call's id, name or status")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only a reply makes tool calls")
        if self.speaker and self.role != "assistant":
            raise ValueError("only a reply has a speaker")
        return self

    def turn(self) -> dict:
        """This message as a chat template reads it: its thinking as "reasoning_content"
        (the template keeps or drops it), tool calls and results in OpenAI's shape, "images"
        (a list of image ids) where it carries any."""
        turn: dict = {"role": self.role, "content": self.content}
        if self.images:
            turn["images"] = list(self.images)
        if self.reasoning:
            turn["reasoning_content"] = self.reasoning
        if self.tool_calls:
            turn["tool_calls"] = [call.openai() for call in self.tool_calls]
        if self.role == "tool":
            turn["tool_call_id"], turn["name"] = self.tool_call_id, self.tool_name
        if self.speaker:  # a group chat's reply: who said it (webui/chat/group.py)
            turn["name"] = self.speaker
        return turn


@dataclass(frozen=True)
class Thought:
    """A reply's thinking as it is saved with the reply."""

    text: str
    tokens: int = 0
    seconds: float = 0.0


class Conversation(BaseModel):
    """One conversation: its messages, which branch is shown, and a few labels."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    format: Literal["webui-chat"] = "webui-chat"
    version: Literal[1] = 1
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    title: str = Field("New chat", max_length=200)
    character: str = Field("Assistant", max_length=128)
    created: float = Field(default_factory=time.time)
    updated: float = Field(default_factory=time.time)
    messages: list[Message] = Field(default_factory=list, max_length=MAX_MESSAGES)
    # parent id (as a string: JSON keys) -> the child shown on the active path
    selected: dict[str, int] = Field(default_factory=dict)
    tools: ChatTools | None = None  # the tools this chat uses (None: none)
    settings: ChatSettings | None = None  # how it is prompted (None: not kept yet)
    group: ChatGroup | None = None  # a group chat's cast and reply order (None: one character)
    lore: ChatLore | None = None  # its lorebooks, author's note, sticky entries (webui/chat/chat_lore.py)

    @model_validator(mode="after")
    def _well_formed(self) -> Conversation:
        seen: set[int] = set()
        for message in self.messages:
            if message.id in seen:
                raise ValueError(f"message id {message.id} appears twice")
            if message.parent != ROOT and message.parent not in seen:
                raise ValueError(f"message {message.id} has an unknown or later parent")
            seen.add(message.id)
        return self

    # -- reading -----------------------------------------------------------------
    def children(self, parent: int) -> list[Message]:
        return [m for m in self.messages if m.parent == parent]

    def path(self) -> list[Message]:
        """The active path: the messages shown, oldest first."""
        by_parent: dict[int, list[Message]] = {}
        for message in self.messages:
            by_parent.setdefault(message.parent, []).append(message)
        path: list[Message] = []
        parent = ROOT
        while kids := by_parent.get(parent):
            chosen = self.selected.get(str(parent))
            message = next((m for m in kids if m.id == chosen), kids[-1])
            path.append(message)
            parent = message.id
        return path

    def turns(self) -> list[dict[str, str]]:
        """The active path as {"role", "content"} dicts: what the model sees (Message.turn)."""
        return [m.turn() for m in self.path()]

    def shown(self) -> list[dict[str, str]]:
        """The active path as the chat shows it."""
        return [{"role": m.role, "content": m.content if m.visible is None else m.visible} for m in self.path()]

    def alternatives(self, index: int) -> tuple[int, int]:
        """(1-based position, count) of the message at `index` among its alternatives."""
        message = self._at(index)
        siblings = self.children(message.parent)
        return [m.id for m in siblings].index(message.id) + 1, len(siblings)

    # -- changing ----------------------------------------------------------------
    def append(self, role: Role, content: str, visible: str | None = None, images: list[str] | None = None,
               **tool_fields) -> Message:
        """Add a message at the end of the active path (with its image ids; `tool_fields`:
        Message's tool fields)."""
        path = self.path()
        return self._add(path[-1].id if path else ROOT, role, content, visible, images, **tool_fields)

    def set_tool_result(self, message_id: int, content: str, status: ToolStatus, seconds: float | None) -> None:
        """A tool message's outcome, checked as when it was added."""
        self._replace(message_id, content=content, tool_status=status, seconds=seconds)

    def set_tool_calls(self, message_id: int, content: str, calls: list[ToolCallRecord]) -> None:
        """A reply found to call tools: its text without the calls, and the calls."""
        self._replace(message_id, content=content, visible=None, tool_calls=calls or None)

    def _replace(self, message_id: int, **update) -> None:
        for i, message in enumerate(self.messages):
            if message.id == message_id:
                self.messages[i] = Message(**{**message.model_dump(), **update})  # validated, unlike model_copy
                self.touch()
                return
        raise ChatError("that message no longer exists")

    def add_alternative(self, index: int, content: str) -> Message:
        """A new sibling of the message at `index`, shown instead of it (regenerate, edit);
        an edited message keeps its images, a regenerated or edited reply its speaker."""
        message = self._at(index)
        images = message.images if message.role == "user" else None
        speaker = {"speaker": message.speaker} if message.speaker else {}
        return self._add(message.parent, message.role, content, images=images, **speaker)

    def edit(self, index: int, content: str) -> Message:
        """Editing starts a new branch: the old message and everything after it stay."""
        old = self._at(index)
        if old.role == "tool":
            raise ChatError("a tool's result is what the tool returned; it cannot be edited")
        if content == old.content:
            return old
        new = self.add_alternative(index, content)
        if not old.reasoning:
            return new
        # An edited reply is the same reply, corrected: its thinking stays with it.
        new = new.model_copy(update={"reasoning": old.reasoning, "reasoning_tokens": old.reasoning_tokens,
                                     "reasoning_seconds": old.reasoning_seconds})
        self.messages[-1] = new
        return new

    def flip(self, index: int, step: int) -> Message:
        """Show the previous (-1) or next (+1) alternative of the message at `index`."""
        message = self._at(index)
        siblings = self.children(message.parent)
        position = [m.id for m in siblings].index(message.id)
        chosen = siblings[(position + step) % len(siblings)]
        self._select(chosen)
        return chosen

    def set_content(self, message_id: int, content: str, note: str | None = None, visible: str | None = None,
                    thinking: Thought | None = None) -> None:
        """Replace a message's text in place (a reply being written, or continued), and
        its thinking when given."""
        for i, message in enumerate(self.messages):
            if message.id == message_id:
                check_length(content)
                check_length(visible)
                update = {"content": content, "visible": None if visible == content else visible}
                if note is not None:
                    update["note"] = note
                if thinking is not None:
                    check_length(thinking.text)
                    update.update(reasoning=thinking.text, reasoning_tokens=thinking.tokens,
                                  reasoning_seconds=round(thinking.seconds, 2))
                self.messages[i] = message.model_copy(update=update)
                self.touch()
                return
        raise ChatError("that message no longer exists")

    def set_documents(self, message_id: int, attachments: list[str], sources: list[Source]) -> None:
        """Record what documents a message carried into the prompt (webui/documents/context.py)."""
        for i, message in enumerate(self.messages):
            if message.id == message_id:
                self.messages[i] = Message.model_validate(
                    {**message.model_dump(), "attachments": attachments, "sources": [s.model_dump() for s in sources]})
                return
        raise ChatError("that message no longer exists")

    def remove_last(self) -> None:
        """Delete the last exchange: the last user message and the replies after it
        (or a lone reply with nothing before it, such as a greeting)."""
        path = self.path()
        if not path:
            raise ChatError("the conversation is empty")
        users = [i for i, m in enumerate(path) if m.role == "user"]
        start = users[-1] if users else len(path) - 1
        doomed = {m.id for m in path[start:]}
        # Alternatives further down the removed branch go with it.
        for message in self.messages:
            if message.parent in doomed:
                doomed.add(message.id)
        self.messages = [m for m in self.messages if m.id not in doomed]
        self.selected = {k: v for k, v in self.selected.items() if v not in doomed and int(k) not in doomed}
        self.touch()

    def fork(self, index: int, new_id: str) -> Conversation:
        """A new conversation holding the active path up to and including `index`."""
        self._at(index)
        copy = Conversation(id=new_id, title=f"{self.title} (fork)"[:200], character=self.character,
                            settings=self.settings,
                            group=self.group.model_copy(deep=True) if self.group else None)
        # Built in one pass (append walks the path each time: quadratic on a long chat).
        now = time.time()
        copy.messages = [m.model_copy(update={"id": i, "parent": i - 1 if i else ROOT, "created": now})
                         for i, m in enumerate(self.path()[: index + 1])]
        return copy

    def touch(self) -> None:
        self.updated = time.time()

    # -- internals -----------------------------------------------------------------
    def _at(self, index: int) -> Message:
        path = self.path()
        if not isinstance(index, int) or not 0 <= index < len(path):
            raise ChatError(f"no message at position {index}")
        return path[index]

    def _add(self, parent: int, role: Role, content: str, visible: str | None = None,
             images: list[str] | None = None, **tool_fields) -> Message:
        if len(self.messages) >= MAX_MESSAGES:
            raise ChatError(f"this conversation holds the most messages one can ({MAX_MESSAGES:,}): "
                            "fork it from a later message, or start a new one")
        check_length(content)
        check_length(visible)
        next_id = max((m.id for m in self.messages), default=-1) + 1
        if images and len(images) > MAX_MESSAGE_IMAGES:
            raise ChatError(f"a message carries at most {MAX_MESSAGE_IMAGES} images; this one has {len(images)}")
        message = Message(id=next_id, parent=parent, role=role, content=content, created=time.time(),
                          visible=None if visible == content else visible, images=list(images or ()),
                          **tool_fields)
        self.messages.append(message)
        self._select(message)
        return message

    def _select(self, message: Message) -> None:
        self.selected = {**self.selected, str(message.parent): message.id}
        self.touch()


def check_length(text: str | None) -> None:
    if text is not None and len(text) > MAX_MESSAGE_CHARS:
        raise ChatError(f"a message holds at most {MAX_MESSAGE_CHARS:,} characters; this one has {len(text):,}")
