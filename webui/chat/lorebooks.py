"""A user's lorebooks: SillyTavern world-info files, kept as imported, and where they apply.

A lorebook is stored as the JSON file the user imported (`{"entries": {"0": {...}}}`),
byte for byte, so exporting gives back exactly that file and every field we do not read
travels with it.  Editing an entry changes only the fields edited.  A character card's
V2/V3 `character_book` is read the same way (webui/chat/characters.py keeps it under the
card's data).

Files are checked on the way in: size, entry count, key length, and each regex key is
compiled and tried on hostile texts with a time limit (webui/chat/lore.py), so a file that
could slow the server is refused, naming the entry, before it is saved.

Where books apply: a user's `lorebooks/attached.yaml` names the books for all chats
("global") and per character; a chat's own choice is kept with the chat
(webui/chat/chat_lore.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from webui.chat.lore import (
    MAX_CONTENT_CHARS,
    MAX_KEYS,
    MAX_SCAN_DEPTH,
    POSITIONS,
    ROLES,
    Entry,
    LoreError,
    LoreSettings,
    check_key_speed,
)
from webui.paths import NameRefused, is_plain_name, list_entries, pick
from webui.safe_yaml import nesting_depth
from webui.settings import SettingsError, read_yaml_mapping
from webui.storage import atomic_write_bytes, atomic_write_text

MAX_BOOK_BYTES = 20 << 20
MAX_ENTRIES = 10_000
MAX_DEPTH = 12  # JSON nesting: entries sit three levels down; extensions may add a few
MAX_ATTACHED = 64
SCOPES = ("global", "character", "chat")


def _field(entry: Mapping, name: str, kind: type | tuple, default: Any, where: str) -> Any:
    value = entry.get(name, default)
    if value is None:
        return default
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise LoreError(f"{where}: field {name!r} has the wrong type ({type(value).__name__})", param=name)
    return value


def _int(entry: Mapping, name: str, default: int, low: int, high: int, where: str) -> int:
    value = _field(entry, name, int, default, where)
    if not low <= value <= high:
        raise LoreError(f"{where}: field {name!r} must be from {low} to {high}, not {value}", param=name)
    return value


def _keys(entry: Mapping, name: str, where: str) -> tuple[str, ...]:
    keys = _field(entry, name, list, [], where)
    if len(keys) > MAX_KEYS or not all(isinstance(k, str) for k in keys):
        raise LoreError(f"{where}: {name!r} must be a list of at most {MAX_KEYS} texts", param=name)
    return tuple(keys)


def world_entry(book: str, uid: str, raw: Mapping) -> Entry:
    """A SillyTavern world-info entry -> Entry (fields named as its files name them)."""
    where = f"{book} entry {uid}"
    if not isinstance(raw, Mapping):
        raise LoreError(f"{where}: an entry must be an object", param="entries")
    logic = _int(raw, "selectiveLogic", 0, 0, 3, where)
    role = raw.get("role")
    return Entry(
        uid=f"{book}/{uid}", book=book,
        content=_content(raw, where),
        keys=_keys(raw, "key", where), secondary=_keys(raw, "keysecondary", where),
        logic=("and_any", "not_all", "not_any", "and_all")[logic],
        selective=_field(raw, "selective", bool, True, where),
        constant=_field(raw, "constant", bool, False, where),
        enabled=not _field(raw, "disable", bool, False, where),
        order=_int(raw, "order", 100, -1_000_000, 1_000_000, where),
        position=POSITIONS[_int(raw, "position", 0, 0, len(POSITIONS) - 1, where)],
        depth=_int(raw, "depth", 4, 0, MAX_SCAN_DEPTH, where),
        role=ROLES[_int({"role": role}, "role", 0, 0, 2, where)],
        probability=_int(raw, "probability", 100, 0, 100, where),
        use_probability=_field(raw, "useProbability", bool, True, where),
        exclude_recursion=_field(raw, "excludeRecursion", bool, False, where),
        prevent_recursion=_field(raw, "preventRecursion", bool, False, where),
        scan_depth=_opt_int(raw, "scanDepth", where),
        case_sensitive=_field(raw, "caseSensitive", bool, None, where),
        whole_words=_field(raw, "matchWholeWords", bool, None, where),
        sticky=_int(raw, "sticky", 0, 0, 100_000, where),
        cooldown=_int(raw, "cooldown", 0, 0, 100_000, where),
        name=str(_field(raw, "comment", str, "", where))[:200],
    )


def _content(raw: Mapping, where: str) -> str:
    content = _field(raw, "content", str, "", where)
    if len(content) > MAX_CONTENT_CHARS:
        raise LoreError(f"{where}: content is longer than {MAX_CONTENT_CHARS:,} characters", param="content")
    return content


def _opt_int(raw: Mapping, name: str, where: str) -> int | None:
    return None if raw.get(name) is None else _int(raw, name, 0, 0, MAX_SCAN_DEPTH, where)


def card_entry(book: str, index: int, raw: Mapping) -> Entry:
    """A V2/V3 card's character_book entry -> Entry.  SillyTavern keeps its own fields
    (position as a number, depth, role, probability...) under the entry's `extensions`."""
    uid = str(raw.get("id", index)) if isinstance(raw, Mapping) else str(index)
    where = f"{book} entry {uid}"
    if not isinstance(raw, Mapping):
        raise LoreError(f"{where}: an entry must be an object", param="character_book")
    ext = _field(raw, "extensions", dict, {}, where)
    position = "after" if raw.get("position") == "after_char" else "before"
    if isinstance(ext.get("position"), int) and not isinstance(ext.get("position"), bool):
        position = POSITIONS[_int(ext, "position", 0, 0, len(POSITIONS) - 1, where)]
    return Entry(
        uid=f"{book}/{uid}", book=book,
        content=_content(raw, where),
        keys=_keys(raw, "keys", where), secondary=_keys(raw, "secondary_keys", where),
        logic=("and_any", "not_all", "not_any", "and_all")[_int(ext, "selectiveLogic", 0, 0, 3, where)],
        selective=_field(raw, "selective", bool, False, where),
        constant=_field(raw, "constant", bool, False, where),
        enabled=_field(raw, "enabled", bool, True, where),
        order=_int(raw, "insertion_order", 100, -1_000_000, 1_000_000, where),
        position=position,
        depth=_int(ext, "depth", 4, 0, MAX_SCAN_DEPTH, where),
        role=ROLES[_int(ext, "role", 0, 0, 2, where)],
        probability=_int(ext, "probability", 100, 0, 100, where),
        use_probability=_field(ext, "useProbability", bool, True, where),
        exclude_recursion=_field(ext, "exclude_recursion", bool, False, where),
        prevent_recursion=_field(ext, "prevent_recursion", bool, False, where),
        scan_depth=_opt_int(ext, "scan_depth", where),
        case_sensitive=_field(raw, "case_sensitive", bool, None, where),
        whole_words=_field(ext, "match_whole_words", bool, None, where),
        sticky=_int(ext, "sticky", 0, 0, 100_000, where),
        cooldown=_int(ext, "cooldown", 0, 0, 100_000, where),
        name=str(_field(raw, "comment", str, "", where) or _field(raw, "name", str, "", where))[:200],
    )


def checked(entries: list[Entry]) -> list[Entry]:
    """`entries` once each key compiles and no regex key is slow (else LoreError naming it)."""
    settings = LoreSettings()
    for entry in entries:
        primary, secondary = entry.compiled(settings)
        for key in (*primary, *secondary):
            check_key_speed(key, f"{entry.book} entry {entry.uid.rpartition('/')[2]}")
    return entries


def parse_world(book: str, data: object) -> list[Entry]:
    """The entries of a SillyTavern world-info object (checked)."""
    if not isinstance(data, dict) or not isinstance(data.get("entries"), (dict, list)):
        raise LoreError(f"{book}: not a SillyTavern lorebook (no 'entries' object)", param="entries")
    raw = data["entries"]
    items = list(raw.items()) if isinstance(raw, dict) else [(str(i), e) for i, e in enumerate(raw)]
    if len(items) > MAX_ENTRIES:
        raise LoreError(f"{book}: {len(items):,} entries is more than the {MAX_ENTRIES:,} a lorebook may have",
                        param="entries")
    return checked([world_entry(book, str(k), e) for k, e in items])


def card_book(character: str, book: object) -> tuple[list[Entry], LoreSettings | None]:
    """A card's character_book: its entries and the scan settings it sets (None: none)."""
    if book is None:
        return [], None
    where = f"{character}'s character_book"
    if not isinstance(book, dict) or not isinstance(book.get("entries", []), list):
        raise LoreError(f"{where}: 'entries' must be a list", param="character_book")
    raw = book.get("entries", [])
    if len(raw) > MAX_ENTRIES:
        raise LoreError(f"{where} has more than {MAX_ENTRIES:,} entries", param="character_book")
    entries = checked([card_entry(character, i, e) for i, e in enumerate(raw)])
    base = LoreSettings()
    settings = LoreSettings(
        scan_depth=_int(book, "scan_depth", base.scan_depth, 0, MAX_SCAN_DEPTH, where),
        budget=_int(book, "token_budget", base.budget, 0, 1_000_000, where),
        recursive=_field(book, "recursive_scanning", bool, base.recursive, where),
    )
    return entries, settings if settings != base else None


def read_json(data: bytes, what: str) -> object:
    if len(data) > MAX_BOOK_BYTES:
        raise LoreError(f"{what}: the file is larger than {MAX_BOOK_BYTES >> 20} MB", param="file")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LoreError(f"{what}: not valid JSON: {exc}", param="file") from exc
    except RecursionError:
        value = None
    if value is None or nesting_depth(value) > MAX_DEPTH:
        raise LoreError(f"{what}: nested deeper than {MAX_DEPTH} levels", param="file")
    return value


class LorebookLibrary:
    """One user's lorebooks, in `folder` (NAME.json), and which apply where (attached.yaml)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._lock = threading.Lock()
        self._parsed: dict[str, tuple[float, int, list[Entry]]] = {}  # name -> (mtime, size, entries)

    def names(self) -> list[str]:
        return sorted(list_entries(self.folder, suffixes=(".json",)))

    def _path(self, name: object) -> Path:
        return pick(name, list_entries(self.folder, suffixes=(".json",)), "lorebook")

    def import_bytes(self, data: bytes, file_name: str) -> str:
        """Check and keep an uploaded lorebook file as it is; returns its name."""
        stem = Path(file_name).stem.strip()[:100] or "lorebook"
        name = "".join(c if c.isalnum() or c in " ._-" else "_" for c in stem).strip(" .") or "lorebook"
        name = name if is_plain_name(name) else f"_{name}"
        parse_world(name, read_json(data, name))
        taken, base, n = set(self.names()), name, 2
        while name in taken:
            name, n = f"{base} {n}", n + 1
        atomic_write_bytes(self.folder / f"{name}.json", data)
        return name

    def export(self, name: object) -> bytes:
        return self._path(name).read_bytes()

    def delete(self, name: object) -> None:
        self._path(name).unlink()
        attached = self.attached()
        attached["global"] = [n for n in attached["global"] if n != name]
        attached["characters"] = {c: [n for n in v if n != name] for c, v in attached["characters"].items()}
        self._save_attached(attached)

    def entries(self, name: object) -> list[Entry]:
        """The book's entries (parsed once per version of the file)."""
        path = self._path(name)
        stat = path.stat()
        with self._lock:
            kept = self._parsed.get(str(name))
            if kept and kept[:2] == (stat.st_mtime, stat.st_size):
                return kept[2]
        entries = parse_world(str(name), read_json(path.read_bytes(), str(name)))
        with self._lock:
            self._parsed[str(name)] = (stat.st_mtime, stat.st_size, entries)
        return entries

    def raw(self, name: object) -> dict:
        data = read_json(self._path(name).read_bytes(), str(name))
        if not isinstance(data, dict) or not isinstance(data.get("entries"), (dict, list)):
            raise LoreError(f"{name}: not a SillyTavern lorebook (no 'entries' object)", param="entries")
        return data

    def save_entry(self, name: object, uid: str | None, keys: list[str], content: str,
                   constant: bool = False, order: int = 100, comment: str = "") -> str:
        """Change (or, with uid None, add) one entry; its other fields stay as they were.
        Returns the entry's uid."""
        data = self.raw(name)
        entries = data["entries"]
        if isinstance(entries, list):
            raise LoreError("this lorebook keeps its entries as a list; edit it in the app it came from",
                            param="entries")
        if uid is None:
            uid = str(max((int(k) for k in entries if str(k).isdigit()), default=-1) + 1)
            entries[uid] = {"uid": int(uid), "key": [], "keysecondary": [], "comment": "", "content": "",
                            "constant": False, "selective": True, "order": 100, "position": 0, "disable": False}
        if uid not in entries:
            raise NameRefused(f"lorebook {name}: no entry {uid}", param="entry")
        entries[uid].update({"key": [k.strip() for k in keys if k.strip()], "content": content,
                             "constant": bool(constant), "order": int(order), "comment": comment})
        text = json.dumps(data, ensure_ascii=False, indent=4).encode("utf-8")
        parse_world(str(name), read_json(text, str(name)))  # the edited book must still be valid
        atomic_write_bytes(self._path(name), text)
        return uid

    # -- where books apply -----------------------------------------------------------------
    @property
    def _attached_file(self) -> Path:
        return self.folder / "attached.yaml"

    def attached(self) -> dict:
        """{"global": [names], "characters": {character: [names]}}; a broken file reads as empty."""
        try:
            data = read_yaml_mapping(self._attached_file) if self._attached_file.exists() else {}
        except (SettingsError, OSError):
            data = {}
        names = set(self.names())
        glob = data.get("global") if isinstance(data.get("global"), list) else []
        chars = data.get("characters") if isinstance(data.get("characters"), dict) else {}
        return {"global": [n for n in glob if n in names],
                "characters": {str(c): [n for n in v if n in names] for c, v in chars.items() if isinstance(v, list)}}

    def attach(self, name: object, scope: str, on: bool, character: str | None = None) -> None:
        """Attach (or detach) book `name` for all chats ("global") or for `character`."""
        self._path(name)  # refuses a name not in the library
        attached = self.attached()
        if scope == "global":
            chosen = attached["global"]
        elif scope == "character" and isinstance(character, str) and character:
            chosen = attached["characters"].setdefault(character, [])
        else:
            raise LoreError(f"unknown scope {scope!r}", param="scope")
        if on and name not in chosen:
            if len(chosen) >= MAX_ATTACHED:
                raise LoreError(f"at most {MAX_ATTACHED} lorebooks may be attached there", param="scope")
            chosen.append(name)
        elif not on and name in chosen:
            chosen.remove(name)
        self._save_attached(attached)

    def _save_attached(self, attached: dict) -> None:
        attached["characters"] = {c: v for c, v in attached["characters"].items() if v}
        atomic_write_text(self._attached_file, yaml.safe_dump(attached, allow_unicode=True))

    def for_chat(self, character: str, chat_books: list[str]) -> list[str]:
        """The books a chat with `character` reads: global, the character's, the chat's own."""
        attached = self.attached()
        names = set(self.names())
        wanted = [*attached["global"], *attached["characters"].get(character, []),
                  *(n for n in chat_books if n in names)]
        return list(dict.fromkeys(wanted))
