"""Characters (who the model plays) and the user's persona, as YAML in user data.

The YAML keeps Text Generation WebUI's keys (`name`, `context`, `greeting`), so its
character files load as they are.  Imported cards keep every field we do not use
under `card`, and exporting puts them back: a round trip loses nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from webui.chat.history import ChatTools
from webui.chat.cards import (MAX_CARD_FILE_BYTES, CardError, blank_picture, check_picture, read_card,
                              write_png_card)
from webui.errors import AppError
from webui.paths import NameRefused, is_plain_name, list_entries, pick
from webui.settings import SettingsError, describe_validation_error, read_yaml_mapping
from webui.storage import atomic_write_bytes, atomic_write_text

DEFAULT_CHARACTER = "Assistant"
SUFFIXES = (".yaml", ".yml", ".json")

# Card fields we map onto our own; everything else in `data` is kept as it was.
_CARD_FIELDS = {
    "name": "name",
    "description": "context",
    "personality": "personality",
    "scenario": "scenario",
    "first_mes": "greeting",
    "mes_example": "example_dialogue",
    "alternate_greetings": "alternate_greetings",
    "system_prompt": "system_prompt",
}


class CharacterError(AppError, ValueError):
    """A character that cannot be loaded, saved or imported, with the reason."""


class Character(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=128)
    context: str = Field("", max_length=200_000, description="Who the character is (a card's description).")
    personality: str = Field("", max_length=50_000)
    scenario: str = Field("", max_length=50_000)
    greeting: str = Field("", max_length=50_000)
    alternate_greetings: list[str] = Field(default_factory=list, max_length=100)
    example_dialogue: str = Field("", max_length=100_000)
    system_prompt: str = Field("", max_length=50_000)
    # The owner's document libraries (webui/documents/) this character reads from in every
    # chat, beside those the chat chooses; names only, never exported with the card.
    libraries: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default_factory=list, max_length=64)
    # The tools a new chat with this character starts with (its Tools panel changes them
    # per chat); None: none.  Owner-local like the libraries.
    tools: ChatTools | None = None
    # An imported card's other fields (spec, tags, creator, lorebook, extensions...).
    card: dict[str, Any] = Field(default_factory=dict)

    def greetings(self) -> list[str]:
        return [g for g in (self.greeting, *self.alternate_greetings) if g.strip()]


class Persona(BaseModel):
    """Who the user is in a chat: a name for 'Name:' lines and an optional description."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field("You", min_length=1, max_length=128)
    description: str = Field("", max_length=50_000)


BUILT_IN = Character(
    name=DEFAULT_CHARACTER,
    context="The following is a conversation between a curious user and a helpful, honest AI assistant.",
)


def substitute(text: str, char: str, user: str) -> str:
    """Fill in the placeholders cards use: {{char}}, {{user}} (any case), <BOT>, <USER>."""
    text = re.sub(r"\{\{\s*char\s*\}\}", lambda _: char, text, flags=re.IGNORECASE)
    text = re.sub(r"\{\{\s*user\s*\}\}", lambda _: user, text, flags=re.IGNORECASE)
    return text.replace("<BOT>", char).replace("<USER>", user)


def describe(character: Character, persona: Persona) -> str:
    """The character text for a prompt: who they are, plus who the user is."""
    parts = [character.system_prompt, character.context]
    if character.personality.strip():
        parts.append(f"{character.name}'s personality: {character.personality}")
    if character.scenario.strip():
        parts.append(f"Scenario: {character.scenario}")
    if persona.description.strip():
        parts.append(f"About {persona.name}: {persona.description}")
    text = "\n\n".join(p.strip() for p in parts if p.strip())
    return substitute(text, character.name, persona.name)


class CharacterLibrary:
    """The characters of one user, in `folder` (pictures beside them as NAME.png)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def names(self) -> list[str]:
        return [DEFAULT_CHARACTER, *(n for n in self._listing() if n != DEFAULT_CHARACTER)]

    def load(self, name: object) -> Character:
        listing = self._listing()
        if name == DEFAULT_CHARACTER and name not in listing:
            return BUILT_IN
        path = pick(name, listing, "character")
        try:
            data = _read_json(path) if path.suffix == ".json" else read_yaml_mapping(path)
            return Character.model_validate(_from_file(data))
        except SettingsError as exc:
            raise CharacterError(str(exc)) from exc
        except (OSError, ValueError) as exc:
            detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
            raise CharacterError(f"character file {path.name} is invalid: {detail}") from exc

    def save(self, character: Character, file_name: str | None = None) -> str:
        """Save under `file_name` (default: the character's name); returns the name used."""
        file_name = character.name if file_name is None else file_name
        if not is_plain_name(file_name):
            raise NameRefused("invalid character name: use letters, digits, spaces, '.', '-' or '_'")
        for old in (self.folder / f"{file_name}{s}" for s in SUFFIXES if s != ".yaml"):
            old.unlink(missing_ok=True)  # one file per character: the YAML replaces others
        data = character.model_dump(exclude_defaults=True)
        data["name"] = character.name
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        atomic_write_text(self.folder / f"{file_name}.yaml", text)
        return file_name

    def delete(self, name: object) -> None:
        path = pick(name, self._listing(), "character")
        path.unlink()
        (path.parent / f"{path.stem}.png").unlink(missing_ok=True)

    def picture(self, name: object) -> Path | None:
        if name not in self._listing():
            return None
        path = self.folder / f"{name}.png"
        return path if path.is_file() else None

    def set_picture(self, name: object, data: bytes) -> None:
        path = pick(name, self._listing(), "character")
        check_picture(data)
        atomic_write_bytes(path.parent / f"{path.stem}.png", data)

    # -- cards ---------------------------------------------------------------------------
    def import_card(self, data: bytes) -> str:
        """Import a card (PNG or JSON bytes); returns the new character's file name."""
        card = read_card(data)
        character = character_from_card(card)
        file_name = self._free_name(character.name)
        is_png = data.startswith(b"\x89PNG")
        if is_png:
            check_picture(data)
        self.save(character, file_name)
        if is_png:
            atomic_write_bytes(self.folder / f"{file_name}.png", data)
        return file_name

    def export_json(self, name: object) -> str:
        return json.dumps(card_from_character(self.load(name)), indent=2, ensure_ascii=False)

    def export_png(self, name: object) -> bytes:
        character = self.load(name)
        picture_path = self.picture(name)
        picture = picture_path.read_bytes() if picture_path else blank_picture()
        return write_png_card(picture, card_from_character(character, "v2"), card_from_character(character, "v3"))

    # -- internals -----------------------------------------------------------------------
    def _listing(self) -> dict[str, Path]:
        return list_entries(self.folder, suffixes=SUFFIXES)

    def _free_name(self, wanted: str) -> str:
        """A plain file name for an imported character that does not replace another."""
        base = re.sub(r"[^A-Za-z0-9 ._\-]", "_", wanted).strip(" .")[:100]
        base = base if is_plain_name(base) else f"_{base}"[:100]
        taken = set(self.names())
        name, n = base, 2
        while name in taken:
            name, n = f"{base} {n}", n + 1
        return name


def _read_json(path: Path) -> dict[str, Any]:
    """A character saved as JSON (a V1/V2/V3 card dropped into the folder, or our own
    fields), bounded as an imported card is (size, nesting: webui/chat/cards.py)."""
    if path.stat().st_size > MAX_CARD_FILE_BYTES:
        raise CardError(f"the file is larger than {MAX_CARD_FILE_BYTES >> 20} MB")
    with path.open("rb") as handle:  # no more than the limit, even if it grew since
        return read_card(handle.read(MAX_CARD_FILE_BYTES + 1))


def _from_file(data: dict[str, Any]) -> dict[str, Any]:
    """Accept Text Generation WebUI's YAML and bare card JSON as well as our own."""
    if "spec" in data or "first_mes" in data:
        return character_from_card(data).model_dump()
    return data


def character_from_card(card: dict[str, Any]) -> Character:
    """A V1 (flat), V2 or V3 card -> Character; unknown fields are kept under `card`."""
    spec = card.get("spec")
    if spec in ("chara_card_v2", "chara_card_v3"):
        data = card.get("data")
        if not isinstance(data, dict):
            raise CardError("the card has no 'data' object")
        outer = {k: v for k, v in card.items() if k != "data"}
    else:
        data, outer = card, {}
    values: dict[str, Any] = {}
    for card_key, our_key in _CARD_FIELDS.items():
        value = data.get(card_key)
        if value is None:
            continue
        if our_key == "alternate_greetings":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise CardError("alternate_greetings must be a list of strings")
        elif not isinstance(value, str):
            raise CardError(f"card field {card_key!r} must be text")
        values[our_key] = value
    if not str(values.get("name", "")).strip():
        raise CardError("the card has no name")
    kept = {k: v for k, v in data.items() if k not in _CARD_FIELDS}
    try:
        return Character(**values, card={**outer, "data": kept})
    except ValidationError as exc:
        raise CardError(f"the card does not fit: {describe_validation_error(exc)}") from exc


def card_from_character(character: Character, version: str | None = None) -> dict[str, Any]:
    """Character -> card object.  Without `version`, the spec it was imported as (V3 for
    characters made here); the kept fields go back where they came from."""
    kept = dict(character.card)
    data = dict(kept.pop("data", {}) or {})
    imported = kept.get("spec")
    version = version or ("v2" if imported == "chara_card_v2" else "v3")
    for card_key, our_key in _CARD_FIELDS.items():
        data[card_key] = getattr(character, our_key)
    data.setdefault("creator_notes", "")
    data.setdefault("post_history_instructions", "")
    data.setdefault("tags", [])
    data.setdefault("creator", "")
    data.setdefault("character_version", "")
    data.setdefault("extensions", {})
    if version == "v3":
        data.setdefault("group_only_greetings", [])
        return {**kept, "spec": "chara_card_v3", "spec_version": "3.0", "data": data}
    return {**kept, "spec": "chara_card_v2", "spec_version": "2.0", "data": data}

