"""Conversations on disk: one JSON file per conversation, written atomically.

Ids are random and unguessable (they also name the files), and every id that arrives
from a request is looked up in this store's own listing before it becomes a path.
A file that cannot be read (truncated, wrong schema) is renamed aside with a warning,
so one bad file never hides the others (HOSTILE.md 17).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from webui.chat.history import Conversation
from webui.paths import NameRefused, list_entries, pick
from webui.settings import describe_validation_error
from webui.storage import atomic_write_text

log = logging.getLogger(__name__)

SUFFIX = ".json"
MAX_CHAT_BYTES = 64 << 20  # far beyond any real chat; refuses a runaway or hostile file


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

    def save(self, conversation: Conversation) -> None:
        """Atomic: a crash mid-save leaves the previous version (HOSTILE.md 26, 27)."""
        text = conversation.model_dump_json(indent=1)
        atomic_write_text(self.folder / f"{conversation.id}{SUFFIX}", text)

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


def new_chat_id() -> str:
    # 96 random bits: another user cannot guess an id, and ids never collide in practice.
    return secrets.token_hex(12)
