"""Conversations on disk: one JSON file per conversation, written atomically.

Ids are random and unguessable (they also name the files), and every id that arrives
from a request is looked up in this store's own listing before it becomes a path.
A file that cannot be read (truncated, wrong schema) is renamed aside with a warning,
so one bad file never hides the others (docs/SECURITY.md); it stays listed for its owner
(`unreadable`) and `recover` turns it back into a conversation, keeping what can be
kept.  A save is checked against the same schema and the same size limit first
(MAX_CHAT_BYTES, the one constant the reader uses too), so nothing is written that
could not be read back: a save that would outgrow it is refused and the previous file
stays as it was (docs/SECURITY.md, "Conversations").
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from webui.chat.history import MAX_MESSAGE_CHARS, MAX_MESSAGES, ROOT, ChatError, Conversation, Message
from webui.paths import NameRefused, list_entries, pick
from webui.settings import describe_validation_error
from webui.storage import atomic_write_bytes

log = logging.getLogger(__name__)

SUFFIX = ".json"
# The most a conversation file may hold, on read AND on save (see ChatStore.save): far
# beyond any real chat; refuses a runaway or hostile file.
MAX_CHAT_BYTES = 64 << 20
# How much of an unreadable file `recover` reads: a file written before saves were
# checked against MAX_CHAT_BYTES can be larger, and cutting it would lose all of it.
RECOVER_MAX_BYTES = 4 * MAX_CHAT_BYTES


@dataclass(frozen=True)
class ChatSummary:
    id: str
    title: str
    character: str
    updated: float

    @property
    def label(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.updated))
        return f"{self.title} · {when}"


class ChatStore:
    """The conversations of one user, in `folder`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.warnings: list[str] = []
        # file -> (mtime_ns, size, summary): listing stays cheap with many long chats
        self._summaries: dict[Path, tuple[int, int, ChatSummary]] = {}

    def new(self, character: str, title: str = "New chat") -> Conversation:
        return Conversation(id=new_chat_id(), character=character, title=title)

    def list(self, character: str | None = None, query: str = "") -> list[ChatSummary]:
        """Newest first; `query` matches titles and message text, case-insensitively."""
        found = []
        needle = query.strip().lower()
        for path in list_entries(self.folder, suffixes=(SUFFIX,)).values():
            summary = self._summary(path)
            if summary is None or (character is not None and summary.character != character):
                continue
            if needle and needle not in summary.title.lower() and not self._mentions(path, needle):
                continue
            found.append(summary)
        return sorted(found, key=lambda s: s.updated, reverse=True)

    def load(self, chat_id: object) -> Conversation:
        path = pick(chat_id, list_entries(self.folder, suffixes=(SUFFIX,)), "chat")
        conversation = self._read(path)
        if conversation is None:
            raise NameRefused("unknown chat: that conversation could not be read and was set aside")
        return conversation

    def has(self, chat_id: object) -> bool:
        """Whether a conversation with this id is stored."""
        return isinstance(chat_id, str) and chat_id in list_entries(self.folder, suffixes=(SUFFIX,))

    def save(self, conversation: Conversation) -> None:
        """Atomic: a crash mid-save leaves the previous version (docs/SECURITY.md).
        Refused (ChatError) if what would be written could not be read back: over the
        schema's limits, or larger than the reader accepts (JSON writes a control
        character as six bytes, so legal messages can outgrow the file limit)."""
        data = conversation.model_dump_json(indent=1).encode("utf-8")
        if len(data) > MAX_CHAT_BYTES:
            raise ChatError(
                f"not saved: this conversation would take {len(data) / 2**20:.1f} MB on disk, over the "
                f"{MAX_CHAT_BYTES >> 20} MB a conversation may hold; the saved version is unchanged. "
                "Fork the part you need into a new conversation, or start a new one.")
        try:
            Conversation.model_validate_json(data)
        except ValidationError as exc:
            raise ChatError(f"not saved: {describe_validation_error(exc)[:300]}") from None
        atomic_write_bytes(self.folder / f"{conversation.id}{SUFFIX}", data)

    def delete(self, chat_id: object) -> None:
        path = pick(chat_id, list_entries(self.folder, suffixes=(SUFFIX,)), "chat")
        path.unlink()
        self._summaries.pop(path, None)

    def rename(self, chat_id: object, title: str) -> Conversation:
        conversation = self.load(chat_id)
        conversation.title = " ".join(title.split())[:200] or "Untitled"
        conversation.touch()
        self.save(conversation)
        return conversation

    def import_json(self, text: str | bytes, character: str | None = None) -> Conversation:
        """A conversation from an exported file, stored under a fresh id."""
        if len(text) > MAX_CHAT_BYTES:
            raise ValueError("that file is too large for a conversation")
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a JSON file: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("not an exported conversation (expected a JSON object)")
        data = {**data, "id": new_chat_id()}
        if character is not None:
            data["character"] = character
        try:
            conversation = Conversation.model_validate(data)
        except ValidationError as exc:
            raise ValueError(f"not an exported conversation: {describe_validation_error(exc)}") from exc
        conversation.touch()  # newest: it shows first in the list
        self.save(conversation)
        return conversation

    def unreadable(self) -> dict[str, Path]:
        """Files set aside as unreadable, by a label to show (and to pass to `recover`)."""
        if not self.folder.is_dir():
            return {}
        found = sorted(p for p in self.folder.iterdir() if _ASIDE.fullmatch(p.name) and p.is_file())
        return {p.name.replace(SUFFIX + ".unreadable-", " set aside at "): p for p in found}

    def recover(self, label: object) -> Conversation:
        """A set-aside file as a new conversation: its messages that are still valid
        (cut to the limits), or, when it is not even JSON, its text as one message.
        The file itself is kept, renamed `.recovered-...`, and no longer listed."""
        path = pick(label, self.unreadable(), "unreadable conversation")
        with path.open("rb") as handle:  # bounded, but whole for any file an older version wrote
            raw = handle.read(RECOVER_MAX_BYTES)
        conversation = salvage(raw, new_chat_id())
        self.save(conversation)
        path.rename(path.with_name(path.name.replace(".unreadable-", ".recovered-")))
        return conversation

    # -- internals -----------------------------------------------------------------
    def _read(self, path: Path) -> Conversation | None:
        try:
            if path.stat().st_size > MAX_CHAT_BYTES:
                raise ValueError("file too large")
            return Conversation.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # ValidationError is a ValueError
            self._set_aside(path, exc)
            return None

    def _summary(self, path: Path) -> ChatSummary | None:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        cached = self._summaries.get(path)
        if cached and cached[:2] == (stat.st_mtime_ns, stat.st_size):
            return cached[2]
        conversation = self._read(path)
        if conversation is None:
            return None
        summary = ChatSummary(conversation.id, conversation.title, conversation.character, conversation.updated)
        self._summaries[path] = (stat.st_mtime_ns, stat.st_size, summary)
        return summary

    def _mentions(self, path: Path, needle: str) -> bool:
        conversation = self._read(path)
        return bool(conversation) and any(needle in m.content.lower() for m in conversation.messages)

    def _set_aside(self, path: Path, error: Exception) -> None:
        aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
        try:
            path.rename(aside)
        except OSError:
            aside = path
        detail = describe_validation_error(error) if isinstance(error, ValidationError) else str(error)
        note = f"conversation file {path.name} could not be read ({detail[:200]}); kept as {aside.name}"
        log.warning(note)
        self.warnings.append(note)
        self._summaries.pop(path, None)


# How _set_aside names a file: "<id>.json.unreadable-<seconds>".
_ASIDE = re.compile(r"[A-Za-z0-9_-]{1,64}\.json\.unreadable-[0-9]{1,12}")


def salvage(raw: bytes, chat_id: str) -> Conversation:
    """What can be kept of an unreadable conversation file, as a valid conversation."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        text = raw.decode("utf-8", "replace")[:MAX_MESSAGE_CHARS]
        conversation = Conversation(id=chat_id, title="Recovered text")
        conversation.append("user", text)
        return conversation
    title = data.get("title") if isinstance(data.get("title"), str) else "Recovered"
    character = data.get("character") if isinstance(data.get("character"), str) else "Assistant"
    conversation = Conversation(id=chat_id, title=f"{title[:180]} (recovered)", character=character[:128])
    kept: dict[int, int] = {}  # old id -> new id, for messages kept so far
    messages = []
    # Keep messages while the file they make stays readable (MAX_CHAT_BYTES): each
    # costs its JSON plus the indentation the store writes around it.
    room = MAX_CHAT_BYTES - (64 << 10)
    for item in data["messages"][:MAX_MESSAGES]:
        if not isinstance(item, dict) or item.get("role") not in ("user", "assistant"):
            continue
        content, old_id, parent = item.get("content"), item.get("id"), item.get("parent", ROOT)
        if not isinstance(content, str) or not isinstance(old_id, int) or old_id in kept:
            continue
        new_parent = kept.get(parent, ROOT) if isinstance(parent, int) else ROOT
        message = Message(id=len(messages), parent=new_parent, role=item["role"],
                          content=content[:MAX_MESSAGE_CHARS], created=time.time())
        room -= len(message.model_dump_json().encode("utf-8")) + 256
        if room < 0:
            break
        kept[old_id] = len(messages)
        messages.append(message)
    conversation.messages = messages
    return conversation


def new_chat_id() -> str:
    # 96 random bits: another user cannot guess an id, and ids never collide in practice.
    return secrets.token_hex(12)
