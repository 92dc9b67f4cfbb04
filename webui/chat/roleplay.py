"""Lore and the author's note, woven into a chat's prompt; and the parts of a prompt, marked.

`for_chat` gathers what a conversation reads (the user's global and character lorebooks,
the chat's own, the character card's `character_book`, the author's note, the passages
retrieved for it); webui/chat/prompt.py's ChatPrompt calls `weave` once per reply, with
the model's tokenizer, and places what it returns:

- "before"/"after" entries around the character's text (chat modes) or the system
  message (instruct mode), "em_top"/"em_bottom" around the example dialogue;
- "depth" entries and the author's note (with its "an_top"/"an_bottom" entries) as
  messages `depth` messages from the end of the chat, in their role; in a chat-mode script
  they are plain lines.

`parts` finds each inserted text in the final prompt, so the prompt inspector
(webui/ui/prompt_inspector.py) can mark it with its token count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from webui.chat.characters import Character, substitute
from webui.chat.chat_lore import AuthorsNote, ChatLore, TimedSpan
from webui.chat.lore import Activation, Entry, LoreError, LoreSettings, Timed, activate
from webui.chat.lorebooks import card_book

if TYPE_CHECKING:
    from webui.chat.history import Conversation
    from webui.userdata import UserSpace

log = logging.getLogger(__name__)
Message = dict[str, Any]


@dataclass(frozen=True)
class Roleplay:
    """What one conversation's prompt draws on besides its messages."""

    entries: tuple[Entry, ...] = ()
    settings: LoreSettings = LoreSettings()
    timed: Mapping[str, Timed] = field(default_factory=dict)
    note: AuthorsNote | None = None
    passages: tuple[tuple[str, str], ...] = ()  # (label, text) of retrieved passages
    seed: str = ""
    problems: tuple[str, ...] = ()  # books that could not be read (shown, never fatal)


def for_chat(space: UserSpace, conversation: Conversation, character: Character) -> Roleplay:
    """The lore, author's note and passages a reply in `conversation` uses."""
    kept = conversation.lore or ChatLore()
    passages = tuple((f"passage [{s.n}] {s.file}", s.text) for m in conversation.path() for s in m.sources)
    timed = {uid: Timed(span.start, span.sticky, span.cooldown) for uid, span in kept.timed.items()}
    note = kept.note if kept.note.text.strip() else None
    entries, settings, problems = _books(space, character, conversation.character, kept.books)
    return Roleplay(entries, settings, timed, note, passages, conversation.id, problems)


def for_request(space: UserSpace, character: Character, who: str, seed: str) -> Roleplay:
    """The lore a request outside any saved chat reads (the API's chat fields): the
    card's book and the books used in all chats or with character `who`; no author's
    note and no sticky entries, which belong to a saved chat.  `seed` rolls the
    entries' probabilities (the same history, the same prompt)."""
    entries, settings, problems = _books(space, character, who, [])
    return Roleplay(entries, settings, seed=seed, problems=problems)


def _books(space: UserSpace, character: Character, who: str,
           chat_books: list[str]) -> tuple[tuple[Entry, ...], LoreSettings, tuple[str, ...]]:
    entries: list[Entry] = []
    problems: list[str] = []
    settings = LoreSettings()
    try:
        book_entries, book_settings = card_book(character.name, (character.card.get("data") or {}).get(
            "character_book"))
        entries += book_entries
        settings = book_settings or settings
    except LoreError as exc:
        problems.append(str(exc))
    library = space.lorebooks
    for name in library.for_chat(who, chat_books):
        try:
            entries += library.entries(name)
        except (LoreError, OSError) as exc:
            problems.append(f"lorebook {name}: {exc}")
    return tuple(entries), settings, tuple(problems)


def keep_timed(conversation: Conversation, woven: Woven | None) -> None:
    """Save the sticky/cooldown spans of the reply just written with the conversation."""
    if woven is None or woven.activation is None:
        return
    kept = conversation.lore or ChatLore()
    spans = {uid: TimedSpan(start=t.start, sticky=t.sticky, cooldown=t.cooldown)
             for uid, t in woven.activation.timed.items()}
    if spans != kept.timed:
        conversation.lore = kept.model_copy(update={"timed": spans})


# -- weaving ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Piece:
    kind: str  # "lore", "note" or "passage"
    label: str
    text: str


@dataclass(frozen=True)
class Part:
    """A marked span of the final prompt."""

    kind: str
    label: str
    start: int
    end: int
    tokens: int


@dataclass
class Woven:
    activation: Activation | None = None
    before: str = ""
    after: str = ""
    em_top: str = ""
    em_bottom: str = ""
    inserts: list[tuple[int, str, str]] = field(default_factory=list)  # (depth, role, text)
    pieces: list[Piece] = field(default_factory=list)

    def around(self, text: str) -> str:
        """The character's text (or instruct's system message) with the before/after entries."""
        return "\n\n".join(p for p in (self.before, text.strip(), self.after) if p)

    def around_examples(self, text: str) -> str:
        return "\n\n".join(p for p in (self.em_top, text.strip(), self.em_bottom) if p)

    def into(self, turns: list[Message], continuing: bool = False) -> list[Message]:
        """`turns` with the depth insertions as messages ({"inserted": True}).  A reply being
        continued stays last."""
        if not self.inserts:
            return turns
        end = len(turns) - 1 if continuing and turns else len(turns)
        at: dict[int, list[Message]] = {}
        for depth, role, text in self.inserts:
            at.setdefault(max(0, end - depth), []).append({"role": role, "content": text, "inserted": True})
        out: list[Message] = []
        for i, turn in enumerate(turns):
            out += at.get(i, [])
            out.append(turn)
        return out + at.get(len(turns), [])

    @staticmethod
    def merged(turns: list[Message]) -> list[Message]:
        """For templates that refuse a message where it was put (a system message mid-chat):
        each inserted text joined to the start of the next message (or the end of the last)."""
        out: list[Message] = []
        waiting: list[str] = []
        for turn in turns:
            if turn.get("inserted"):
                waiting.append(turn["content"])
                continue
            if waiting:
                turn = {**turn, "content": "\n\n".join([*waiting, turn["content"]])}
                waiting = []
            out.append(turn)
        if waiting and out:
            out[-1] = {**out[-1], "content": "\n\n".join([out[-1]["content"], *waiting])}
        return out

    def parts(self, prompt: str, count: Callable[[str], int]) -> list[Part]:
        """Where each inserted text sits in `prompt`, first occurrences that do not overlap."""
        found: list[Part] = []
        taken: list[tuple[int, int]] = []
        for piece in self.pieces:
            text = piece.text.strip()
            if not text:
                continue
            start = prompt.find(text)
            while start >= 0 and any(start < e and start + len(text) > s for s, e in taken):
                start = prompt.find(text, start + 1)
            if start < 0:
                continue
            taken.append((start, start + len(text)))
            found.append(Part(piece.kind, piece.label, start, start + len(text), count(text)))
        return sorted(found, key=lambda p: p.start)


def weave(roleplay: Roleplay | None, turns: Sequence[Message], names: tuple[str, str],
          count: Callable[[str], int]) -> Woven:
    """Pick the entries for a reply to `turns` and say where they (and the note) go."""
    if roleplay is None:
        return Woven()
    user, char = names
    fill = lambda text: substitute(text, char, user).strip()  # noqa: E731
    woven = Woven(pieces=[Piece("passage", label, text) for label, text in roleplay.passages])
    messages = [str(t.get("content") or "") for t in turns]
    activation = activate(roleplay.entries, messages, roleplay.settings, roleplay.timed, count, roleplay.seed)
    woven.activation = activation
    for item in activation.entries:
        entry = item.entry
        woven.pieces.append(Piece("lore", f"{entry.name or entry.uid} ({item.why})", fill(entry.content)))

    def joined(position: str) -> str:
        return "\n".join(fill(e.content) for e in activation.at(position))  # type: ignore[arg-type]

    woven.before, woven.after = joined("before"), joined("after")
    woven.em_top, woven.em_bottom = joined("em_top"), joined("em_bottom")
    by_place: dict[tuple[int, str], list[str]] = {}
    for entry in activation.at("depth"):
        by_place.setdefault((entry.depth, entry.role), []).append(fill(entry.content))
    woven.inserts = [(depth, role, "\n".join(texts)) for (depth, role), texts in by_place.items()]
    note = roleplay.note
    around = [joined("an_top"), fill(note.text) if note else "", joined("an_bottom")]
    asked = sum(1 for t in turns if t.get("role") == "user")
    due = note is None or (note.frequency > 0 and asked % note.frequency == 0)
    text = "\n".join(p for p in around if p)
    if text and due:
        woven.inserts.append((note.depth if note else 4, note.role if note else "system", text))
        if note:
            woven.pieces.insert(0, Piece("note", "author's note", fill(note.text)))
    return woven
