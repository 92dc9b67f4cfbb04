"""Per-user data: each signed-in user has their own chats, characters and persona.

Without --gradio-auth there is one user and the data lives directly in user_data/.
With it, the first user in the auth list keeps user_data/ (so adding a second user
later hides nothing from the first), and every other user gets user_data/users/NAME/.
A user can reach only their own folder: the folder comes from the name Gradio
authenticated, never from anything in a request.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

import yaml
from pydantic import ValidationError

from webui.chat.characters import DEFAULT_CHARACTER, CharacterLibrary, Persona
from webui.chat.images import image_store
from webui.chat.lorebooks import LorebookLibrary
from webui.chat.store import ChatStore
from webui.errors import AppError
from webui.paths import is_plain_name
from webui.settings import SettingsError, read_yaml_mapping
from webui.storage import atomic_write_text

log = logging.getLogger(__name__)

# Key in recent.yaml for the last character; parentheses never occur in character names.
LAST_CHARACTER = "(last character)"
# The Notebook's text kept per user; the same bound as a chat message (webui/ui/app.py's
# request cap leaves room for it).
NOTEBOOK_MAX_CHARS = 1_000_000


class NotebookTooLong(AppError, ValueError):
    """Notebook text over NOTEBOOK_MAX_CHARS: refused, so the saved copy stays the last good one."""


class UserSpace:
    """One user's folder and the stores in it."""

    def __init__(self, root: Path):
        self.root = root
        self.chats = ChatStore(root / "chats")
        self.characters = CharacterLibrary(root / "characters")
        self.lorebooks = LorebookLibrary(root / "lorebooks")
        # Images sent in this user's chats, next to them (webui/chat/images.py).
        self.images = image_store(self.chats.folder)

    @property
    def settings_file(self) -> Path:
        """Where this user's last used sampling values are kept."""
        return self.root / "settings.yaml"

    @property
    def _persona_file(self) -> Path:
        return self.root / "persona.yaml"

    @property
    def _recent_file(self) -> Path:
        return self.root / "chats" / "recent.yaml"

    def persona(self) -> Persona:
        """The saved persona; a missing or broken file gives the default (never an error)."""
        try:
            return Persona.model_validate(read_yaml_mapping(self._persona_file))
        except (SettingsError, ValidationError, OSError):
            return Persona()

    def save_persona(self, persona: Persona) -> None:
        atomic_write_text(self._persona_file, yaml.safe_dump(persona.model_dump(), allow_unicode=True))

    @property
    def _notebook_file(self) -> Path:
        return self.root / "notebook.txt"

    def notebook(self) -> str:
        """The Notebook's text as last saved ("" at first or when unreadable: never an error)."""
        try:
            return self._notebook_file.read_text(encoding="utf-8")[:NOTEBOOK_MAX_CHARS]
        except (OSError, UnicodeDecodeError):
            return ""

    def save_notebook(self, text: str) -> None:
        """Keep the Notebook's text (atomically: a reload sees the old text or the new one)."""
        if len(text) > NOTEBOOK_MAX_CHARS:
            raise NotebookTooLong(f"notebook text: {len(text):,} characters is over the limit of "
                                  f"{NOTEBOOK_MAX_CHARS:,}; it was not saved")
        atomic_write_text(self._notebook_file, text)

    def recent_character(self) -> str:
        """The character of the conversation opened last (the built-in one at first)."""
        chosen = self._recent().get(LAST_CHARACTER)
        return chosen if isinstance(chosen, str) and chosen in self.characters.names() else DEFAULT_CHARACTER

    def _recent(self) -> dict:
        try:
            return read_yaml_mapping(self._recent_file) if self._recent_file.exists() else {}
        except (SettingsError, OSError):
            return {}

    def recent_chat(self, character: str) -> str | None:
        """The conversation last opened with `character`, if it still exists (a name that is
        not text, as a hostile client may send, has none)."""
        if not isinstance(character, str):
            return None
        chosen = self._recent().get(character)
        return chosen if isinstance(chosen, str) and chosen in {c.id for c in self.chats.list(character)} else None

    def remember_chat(self, character: str, chat_id: str) -> None:
        """Note the conversation last opened.  A convenience only: opening a chat must
        work on a full or read-only disk, so a failed write is logged, not raised."""
        recent = self._recent()
        if recent.get(character) != chat_id or recent.get(LAST_CHARACTER) != character:
            recent.update({character: chat_id, LAST_CHARACTER: character})
            try:
                atomic_write_text(self._recent_file, yaml.safe_dump(recent, allow_unicode=True))
            except OSError as exc:
                log.warning("which chat was open last is not remembered: %s", exc.strerror or exc)


class UserSpaces:
    """Hands out each user's UserSpace (one object per user, so caches are shared)."""

    def __init__(self, user_data_dir: Path, owner: str | None = None):
        self.user_data_dir = user_data_dir
        self.owner = owner  # the user whose data lives in user_data/ itself
        self._spaces: dict[str, UserSpace] = {}
        self._lock = threading.Lock()

    def get(self, username: str | None) -> UserSpace:
        root = self.user_data_dir if username is None or username == self.owner else (
            self.user_data_dir / "users" / folder_name(username)
        )
        key = str(root)
        with self._lock:
            if key not in self._spaces:
                self._spaces[key] = UserSpace(root)
            return self._spaces[key]


def folder_name(username: str) -> str:
    """A folder name for a user: the name itself when plain, else a stable hash."""
    if is_plain_name(username) and len(username) <= 64:
        return username
    return "user-" + hashlib.sha256(username.encode("utf-8")).hexdigest()[:16]
