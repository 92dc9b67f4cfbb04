"""Chat actions that do not run the model: open, list, manage, edit the tree.

Each takes the user's UserSpace and returns a ChatView (what the chat should show
next), so the UI turns one named result into its components in one place
(webui/ui/chat_tab.py) and a test can call an action without a browser.  Errors the
user can fix are raised as ChatError (or NameRefused / CharacterError from the
stores), never as UI errors: the UI decides how to show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from webui.chat import display
from webui.chat.characters import Character, substitute
from webui.chat.history import ChatError, Conversation
from webui.chat.prompt import DEFAULT_COMMAND, ChatSetup
from webui.chat.store import MAX_CHAT_BYTES, ChatSummary, new_chat_id
from webui.paths import NameRefused
from webui.userdata import UserSpace

MODES = ("instruct", "chat", "chat-instruct")


@dataclass
class ChatView:
    """What the chat shows after an action.

    `focus` is the 0-based message the branch note and the Message number refer to
    (None: the last message, shown as number 0).
    """

    conversation: Conversation
    note: str = ""
    query: str = ""
    focus: int | None = None

    @property
    def picked(self) -> int:
        return 0 if self.focus is None else self.focus + 1

    @property
    def branch(self) -> str:
        return branch_note(self.conversation, self.focus)


@dataclass
class PickedMessage:
    """A message clicked in the chat: its number, versions and text (for editing)."""

    number: int
    branch: str
    text: str


# -- reading ------------------------------------------------------------------------------
def open_chat(space: UserSpace, chat: str | None, who: str, character: Character | None = None) -> Conversation:
    """The stored conversation `chat` of character `who`, or a fresh one (with the
    greeting) under that id.  `character` is `who`'s, when the caller loaded it already."""
    character = character or space.characters.load(who)  # also refuses names the user does not have
    if chat:
        try:
            conversation = space.chats.load(chat)
            if conversation.character == who:
                return conversation
        except NameRefused:
            pass
    conversation = Conversation(id=chat or new_chat_id(), character=who,
                                tools=character.tools.model_copy(deep=True) if character.tools else None)
    user = space.persona().name
    for i, greeting in enumerate(character.greetings()):
        text = substitute(greeting, who, user)
        conversation.append("assistant", text) if i == 0 else conversation.add_alternative(0, text)
    if conversation.messages:
        conversation.flip(0, 1)  # back to the main greeting
    return conversation


def listing(space: UserSpace, who: str, query: str = "") -> list[ChatSummary]:
    return space.chats.list(who, query or "")


def position_of(conversation: Conversation, number) -> int:
    """0-based index of the message numbered `number` (1 = first; 0 or blank = last)."""
    path = conversation.path()
    if not path:
        raise ChatError("the conversation is empty")
    if not number:
        return len(path) - 1
    if not isinstance(number, (int, float)) or not 1 <= number <= len(path):
        raise ChatError(f"there is no message {number}: this conversation has {len(path)}")
    return int(number) - 1


def branch_note(conversation: Conversation, index: int | None) -> str:
    path = conversation.path()
    if not path:
        return ""
    index = len(path) - 1 if index is None or index >= len(path) else index
    position, count = conversation.alternatives(index)
    which = "last message" if index == len(path) - 1 else f"message {index + 1}"
    return f"{which}: version {position} of {count}"


def chat_setup(space: UserSpace, templates, mode: str, who: str, template_name, system: str,
               command: str) -> ChatSetup:
    """How to prompt, from the chat's settings column (every name checked)."""
    if mode not in MODES:
        raise ChatError(f"unknown mode: choose one of {', '.join(MODES)}")
    return ChatSetup(
        mode=mode, character=space.characters.load(who), persona=space.persona(),
        system=system or "", template=templates.load(template_name), command=command or DEFAULT_COMMAND,
    )


# -- opening and managing -----------------------------------------------------------------
def page_load(space: UserSpace) -> ChatView:
    """The user's last conversation with their last character; notes about set-aside files."""
    who = space.recent_character()
    return ChatView(open_chat(space, space.recent_chat(who), who), note="; ".join(space.chats.warnings[-3:]))


def switch_character(space: UserSpace, who: str) -> ChatView:
    return ChatView(open_chat(space, space.recent_chat(who), who))


def pick(space: UserSpace, chat: str, query: str = "") -> ChatView:
    conversation = space.chats.load(chat)
    space.remember_chat(conversation.character, conversation.id)
    return ChatView(conversation, query=query)


def new(space: UserSpace, who: str) -> ChatView:
    return ChatView(open_chat(space, None, who))


def rename(space: UserSpace, chat: str, title: str, query: str = "") -> ChatView:
    try:
        conversation = space.chats.rename(chat, title or "")
    except NameRefused as exc:
        raise ChatError("save the conversation (send a message) before renaming it") from exc
    return ChatView(conversation, query=query)


def delete(space: UserSpace, chat: str, who: str) -> ChatView:
    space.chats.delete(chat)
    remaining = space.chats.list(who)
    return ChatView(open_chat(space, remaining[0].id if remaining else None, who), note="Deleted.")


def export(space: UserSpace, chat: str) -> tuple[str, str]:
    """(file name, JSON text) of the conversation, for the UI to offer as a download."""
    try:
        conversation = space.chats.load(chat)
    except NameRefused as exc:
        raise ChatError("nothing to export yet: this conversation has no messages") from exc
    return f"chat-{conversation.id}.json", conversation.model_dump_json(indent=1)


def recover(space: UserSpace, label: str, query: str = "") -> ChatView:
    """What an unreadable conversation file held, as a new conversation (webui/chat/store.py)."""
    conversation = space.chats.recover(label)
    space.remember_chat(conversation.character, conversation.id)
    return ChatView(conversation, note="Recovered what the file held, as a new conversation.", query=query)


def import_file(space: UserSpace, path: Path | None, who: str) -> ChatView:
    space.characters.load(who)  # the character it is filed under must be the user's own
    if path is None:
        raise ChatError("import failed: choose a conversation file (JSON) first")
    try:
        if path.stat().st_size > MAX_CHAT_BYTES:
            raise ValueError("that file is too large for a conversation")
        conversation = space.chats.import_json(path.read_bytes(), character=who)
    except (OSError, ValueError) as exc:
        raise ChatError(f"import failed: {exc}") from exc
    space.remember_chat(who, conversation.id)
    return ChatView(conversation, note="Imported.")


# -- changing the tree ------------------------------------------------------------------------
def _saved(space: UserSpace, conversation: Conversation, note: str = "", focus: int | None = None) -> ChatView:
    space.chats.save(conversation)
    space.remember_chat(conversation.character, conversation.id)
    return ChatView(conversation, note=note, focus=focus)


def edit(space: UserSpace, chat: str, who: str, number, text: str) -> ChatView:
    """A new version of message `number`: a new branch; the old one is kept."""
    conversation = open_chat(space, chat, who)
    conversation.edit(position_of(conversation, number), text or "")
    return _saved(space, conversation, note="Edited: the earlier version is kept (◀ ▶).")


def edit_shown(space: UserSpace, chat: str, who: str, index: int, text: str) -> ChatView:
    """An edit made in the chat itself, to the Chatbot's message `index` (a thinking block
    shown above a reply counts as one of its messages: display.Shown.where)."""
    conversation = open_chat(space, chat, who)
    position, part = display.shown(conversation).where(index)
    if part == "thinking":
        raise ChatError("a reply's thinking is kept as the model wrote it: edit its answer instead")
    conversation.edit(position, text or "")
    return _saved(space, conversation, note="Edited: the earlier version is kept (◀ ▶).")


def awaits_reply(conversation: Conversation) -> bool:
    """An edit left the user's message last on its branch: it is sent again (a new reply)."""
    path = conversation.path()
    return bool(path) and path[-1].role == "user"


def flip(space: UserSpace, chat: str, who: str, number, step: int) -> ChatView:
    """Show the previous (-1) or next (+1) version of message `number`; keep it picked."""
    conversation = open_chat(space, chat, who)
    index = position_of(conversation, number)
    conversation.flip(index, step)
    return _saved(space, conversation, focus=index if number else None)


def fork(space: UserSpace, chat: str, who: str, number) -> ChatView:
    conversation = open_chat(space, chat, who)
    copy = conversation.fork(position_of(conversation, number), new_chat_id())
    return _saved(space, copy, note="Forked into a new conversation.")


def remove_last(space: UserSpace, chat: str, who: str) -> ChatView:
    conversation = open_chat(space, chat, who)
    conversation.remove_last()
    return _saved(space, conversation)


def pick_message(space: UserSpace, chat: str, who: str, index: int) -> PickedMessage:
    """The message the Chatbot's message `index` belongs to (its thinking block picks the
    reply it is part of)."""
    conversation = open_chat(space, chat, who)
    path = conversation.path()
    try:
        index = display.shown(conversation).where(index)[0]
    except ChatError:
        index = len(path)  # as before: no text, the branch note of the last message
    text = path[index].content if 0 <= index < len(path) else ""
    return PickedMessage(index + 1, branch_note(conversation, index), text)
