"""Lorebooks (world info): which entries a chat's recent messages call up, and where they go.

The semantics follow SillyTavern's world info, so its lorebooks behave here as there:

- an entry's primary keys are plain text or `/regex/flags`; a plain key matches without
  regard to case unless the entry says otherwise, and as a whole word (a key with a space
  in it matches as a phrase).  Optional secondary keys narrow it with AND ANY, NOT ALL,
  NOT ANY or AND ALL;
- constant entries are always in; disabled ones never;
- only the last `scan_depth` messages are scanned (an entry may set its own depth);
- entries fill a token budget: constant (and still-sticky) entries first, then the others
  from the highest `order` down, so on overflow the lowest orders are left out;
- recursion: what activated entries say is scanned for more keys (an entry may refuse to
  be found that way, or keep its own text from being scanned);
- probability: an entry that matched goes in with this chance, rolled from a seed so the
  same chat gives the same prompt;
- sticky N keeps an entry in for N messages after it went in; cooldown N keeps it out for
  N messages after that.  Both are counted in the chat's messages and kept per chat
  (`Timed`, saved with the conversation).

Keys come from users' files: every regex is compiled with the `regex` module and searched
with a time limit, and its length is capped (webui/chat/lorebooks.py checks files on the
way in), so no pattern can hold the server (docs/SECURITY.md).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import regex

from webui.errors import AppError

Position = Literal["before", "after", "an_top", "an_bottom", "depth", "em_top", "em_bottom"]
Role = Literal["system", "user", "assistant"]
# SillyTavern's numbers for positions, roles and secondary-key logic, as its files hold them.
POSITIONS: tuple[Position, ...] = ("before", "after", "an_top", "an_bottom", "depth", "em_top", "em_bottom")
ROLES: tuple[Role, ...] = ("system", "user", "assistant")
LOGIC = ("and_any", "not_all", "not_any", "and_all")

MAX_KEY_CHARS = 500  # a key, or a regex key's pattern
MAX_KEYS = 100  # per entry, primary and secondary each
MAX_CONTENT_CHARS = 100_000
MAX_SCAN_DEPTH = 1000
MAX_RECURSION = 10
REGEX_SECONDS = 0.05  # one search of one key; beyond it the key is taken as not matching
DEFAULT_SCAN_DEPTH = 2
_JS_FLAGS = {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL, "u": 0, "g": 0, "y": 0, "d": 0}


class LoreError(AppError, ValueError):
    """A lorebook or entry that cannot be used; the message names the field."""


# -- keys ------------------------------------------------------------------------------------
class Text:
    """A text to scan, with its case-folded form made once (the plain keys' quick test)."""

    __slots__ = ("raw", "_folded", "_words", "_folded_words")

    def __init__(self, raw: str):
        self.raw, self._folded, self._words, self._folded_words = raw, None, None, None

    @property
    def folded(self) -> str:
        if self._folded is None:
            self._folded = self.raw.casefold()
        return self._folded

    def words(self, folded: bool) -> set[str]:
        """The text's words (runs of word characters, as the whole-word pattern sees them)."""
        if self._words is None:
            self._words = set(_WORD.findall(self.raw))
            self._folded_words = {w.casefold() for w in self._words}
        return self._folded_words if folded else self._words  # type: ignore[return-value]


@dataclass(frozen=True)
class Key:
    """One key, compiled: a regex (from `/…/flags`) or a plain word or phrase."""

    text: str
    pattern: Any  # a compiled regex.Pattern
    # A plain key's text (case-folded unless case matters): a text without it cannot match,
    # and most texts lack most keys, so the pattern runs only after this cheap test.
    needle: str | None = None
    folded: bool = False
    word: bool = False  # a whole-word key of word characters only: looked up in the text's words

    def search(self, haystack: str | Text) -> bool:
        text = haystack if isinstance(haystack, Text) else Text(haystack)
        if self.needle is not None:
            # Quick tests that can only say "maybe" (case folding is at least as loose as the
            # pattern's): the pattern has the last word.
            if self.word:
                if self.needle not in text.words(self.folded):
                    return False
            elif self.needle not in (text.folded if self.folded else text.raw):
                return False
        try:
            return self.pattern.search(text.raw, timeout=REGEX_SECONDS) is not None
        except TimeoutError:
            return False


_REGEX_KEY = regex.compile(r"^/(.+)/([a-z]*)$", regex.DOTALL)
_WORD = regex.compile(r"\w+")
_cache: dict[tuple[str, bool, bool], Key] = {}


def is_regex_key(text: str) -> bool:
    return _REGEX_KEY.match(text) is not None


def compile_key(text: str, case_sensitive: bool, whole_words: bool, where: str = "key") -> Key:
    """A key as a searchable pattern; an unusable one raises LoreError naming `where`."""
    cached = _cache.get((text, case_sensitive, whole_words))
    if cached is not None:
        return cached
    if len(text) > MAX_KEY_CHARS:
        raise LoreError(f"{where}: a key is longer than {MAX_KEY_CHARS} characters", param=where)
    found = _REGEX_KEY.match(text)
    try:
        if found:
            flags = 0
            for letter in found.group(2):
                if letter not in _JS_FLAGS:
                    raise LoreError(f"{where}: unknown regex flag {letter!r} in {text!r}", param=where)
                flags |= _JS_FLAGS[letter]
            pattern = regex.compile(found.group(1), flags | regex.V0)
        else:
            flags = 0 if case_sensitive else regex.IGNORECASE
            body = regex.escape(text.strip())
            # A single word must stand alone; a phrase (with a space) matches as written.
            if whole_words and " " not in text.strip():
                body = rf"(?:^|\W)(?:{body})(?:$|\W)"
            pattern = regex.compile(body, flags)
    except (regex.error, OverflowError, RecursionError) as exc:
        raise LoreError(f"{where}: the regex {text[:80]!r} does not compile: {exc}", param=where) from exc
    plain = None if found else text.strip()
    key = Key(text, pattern, None if plain is None else plain if case_sensitive else plain.casefold(),
              folded=not case_sensitive, word=bool(plain and whole_words and _WORD.fullmatch(plain)))
    if len(_cache) > 50_000:
        _cache.clear()
    _cache[(text, case_sensitive, whole_words)] = key
    return key


# Texts that make a backtracking pattern slow; a key that times out on them is refused on import.
_PROBES = ("a" * 4000 + "!", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n" * 100 + "x", " " * 4000 + "x",
           "ab" * 2000 + "c", "0" * 4000 + "z")


def check_key_speed(key: Key, where: str) -> None:
    """Refuse a regex key that takes too long on a few hostile texts (catastrophic backtracking)."""
    if not is_regex_key(key.text):
        return
    for probe in _PROBES:
        try:
            key.pattern.search(probe, timeout=REGEX_SECONDS)
        except TimeoutError:
            raise LoreError(f"{where}: the regex {key.text[:80]!r} takes too long to search (it backtracks "
                            "without end on some texts); simplify it", param=where) from None


# -- entries ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One lore entry, as the engine reads it (webui/chat/lorebooks.py makes them from files)."""

    uid: str  # unique among all entries in play: "book/uid"
    content: str
    keys: tuple[str, ...] = ()
    secondary: tuple[str, ...] = ()
    logic: str = "and_any"
    selective: bool = True  # whether the secondary keys count
    constant: bool = False
    enabled: bool = True
    order: int = 100
    position: Position = "before"
    depth: int = 4
    role: Role = "system"
    probability: int = 100  # percent
    use_probability: bool = True
    exclude_recursion: bool = False  # not found through other entries' text
    prevent_recursion: bool = False  # its own text is not scanned for other entries
    scan_depth: int | None = None
    case_sensitive: bool | None = None
    whole_words: bool | None = None
    sticky: int = 0
    cooldown: int = 0
    name: str = ""  # the entry's comment/title, for the prompt inspector
    book: str = ""

    def compiled(self, settings: LoreSettings) -> tuple[list[Key], list[Key]]:
        case = settings.case_sensitive if self.case_sensitive is None else self.case_sensitive
        whole = settings.whole_words if self.whole_words is None else self.whole_words
        # Kept on the entry (frozen, so set past the dataclass): a book's entries are parsed
        # once per file version and scanned for every reply.
        kept = self.__dict__.setdefault("_compiled", {})
        if (case, whole) not in kept:
            where = f"{self.book or 'lorebook'} entry {self.uid.rpartition('/')[2]}"
            kept[(case, whole)] = ([compile_key(k, case, whole, where) for k in self.keys if k.strip()],
                                   [compile_key(k, case, whole, where) for k in self.secondary if k.strip()])
        return kept[(case, whole)]


@dataclass(frozen=True)
class LoreSettings:
    """How entries are picked (SillyTavern's global world-info settings; a card's book may
    set its own scan depth, budget and recursion)."""

    scan_depth: int = DEFAULT_SCAN_DEPTH
    budget: int = 1024  # tokens for all entries together; 0: no limit
    recursive: bool = True
    max_recursion: int = 3
    case_sensitive: bool = False
    whole_words: bool = True


@dataclass
class Timed:
    """An entry's sticky/cooldown span, in messages: went in when the chat had `start`
    messages, stays in through start + sticky, then is kept out through that + cooldown."""

    start: int
    sticky: int = 0
    cooldown: int = 0

    @property
    def sticky_end(self) -> int:
        return self.start + self.sticky

    def is_sticky(self, length: int) -> bool:
        return self.sticky > 0 and self.start <= length <= self.sticky_end

    def is_cooling(self, length: int) -> bool:
        return self.cooldown > 0 and self.sticky_end < length <= self.sticky_end + self.cooldown

    def over(self, length: int) -> bool:
        return length > self.sticky_end + self.cooldown or length < self.start


@dataclass(frozen=True)
class Activated:
    entry: Entry
    why: str  # "constant", "sticky", "key 'dragon'", "recursion: key 'x'"


@dataclass
class Activation:
    """What the scan chose: entries in, those the budget left out, and the timed spans to keep."""

    entries: list[Activated] = field(default_factory=list)
    over_budget: list[Entry] = field(default_factory=list)
    timed: dict[str, Timed] = field(default_factory=dict)
    tokens: int = 0

    def at(self, position: Position) -> list[Entry]:
        """The entries for one position, lowest order first (the highest ends nearest the chat)."""
        chosen = [a.entry for a in self.entries if a.entry.position == position]
        return sorted(chosen, key=lambda e: e.order)


def _logic(entry: Entry, hits: list[bool]) -> bool:
    if entry.logic == "and_any":
        return any(hits)
    if entry.logic == "not_all":
        return not all(hits)
    if entry.logic == "not_any":
        return not any(hits)
    return all(hits)  # and_all


def activate(entries: Sequence[Entry], messages: Sequence[str], settings: LoreSettings = LoreSettings(),
             timed: Mapping[str, Timed] | None = None, count: Callable[[str], int] = len,
             seed: int | str = 0) -> Activation:
    """Pick the entries for a reply to a chat whose messages (oldest first) are `messages`.

    `timed`: the chat's sticky/cooldown spans so far; `count`: tokens of a text (for the
    budget); `seed`: rolls the probabilities (with the chat's length, so each message rolls
    anew but the same chat rolls the same).
    """
    length = len(messages)
    timed = {uid: span for uid, span in (timed or {}).items() if not span.over(length)}
    result = Activation(timed=dict(timed))
    buffers: dict[int, Text] = {}

    def buffer(depth: int) -> Text:
        depth = max(0, min(depth, MAX_SCAN_DEPTH))
        if depth not in buffers:
            buffers[depth] = Text("\n".join(messages[length - depth:]) if depth else "")
        return buffers[depth]

    # Each key is searched once per text: the chat's, then each recursion step's new text.
    memo: dict[tuple[int, int], bool] = {}

    def hit(key: Key, text: Text) -> bool:
        found = memo.get((id(key), id(text)))
        if found is None:
            found = memo[(id(key), id(text))] = key.search(text)
        return found

    live = [e for e in entries if e.enabled and e.content.strip()]
    sticky = [e for e in live if e.uid in timed and timed[e.uid].is_sticky(length)]
    cooling = {e.uid for e in live if e.uid in timed and timed[e.uid].is_cooling(length)}
    done: set[str] = set()  # activated, over budget, or failed their roll: not tried again
    budget_left = settings.budget if settings.budget > 0 else None
    full = False

    def admit(found: list[Activated]) -> list[Activated]:
        """Take `found` into the budget, constants first then the highest order, and stop at overflow."""
        nonlocal budget_left, full
        taken = []
        ranked = sorted(found, key=lambda a: (a.why not in ("constant", "sticky"), -a.entry.order))
        for item in ranked:
            done.add(item.entry.uid)
            if full:
                result.over_budget.append(item.entry)
                continue
            cost = count(item.entry.content)
            if budget_left is not None and cost > budget_left:
                full = True  # as SillyTavern: the first entry that overflows ends the filling
                result.over_budget.append(item.entry)
                continue
            if budget_left is not None:
                budget_left -= cost
            result.tokens += cost
            taken.append(item)
        result.entries += taken
        return taken

    def rolls(entry: Entry) -> bool:
        if not entry.use_probability or entry.probability >= 100:
            return True
        if entry.probability <= 0:
            return False
        # A repeatable roll, not a secret: the same chat at the same length rolls the same.
        return random.Random(f"{seed}:{length}:{entry.uid}").random() * 100 < entry.probability  # noqa: S311

    first = [Activated(e, "sticky") for e in sticky]
    stuck = {e.uid for e in sticky}
    for entry in live:
        if entry.constant and entry.uid not in cooling and entry.uid not in stuck:
            if rolls(entry):
                first.append(Activated(entry, "constant"))
            else:
                done.add(entry.uid)
    taken = admit(first)
    added = "\n".join(a.entry.content for a in taken if not a.entry.prevent_recursion)
    recursion = [Text(added)] if added else []
    step = 0
    scanned = [e for e in live if not e.constant]
    index = _index(scanned, settings)
    depth_of = [settings.scan_depth if e.scan_depth is None else e.scan_depth for e in scanned]
    primary_hit: dict[int, str] = {}  # position -> the primary key found (its secondary keys may not agree yet)
    while not full:
        found: list[Activated] = []
        # Entries a key may have hit: looked up in the index for the texts new to this pass.
        if step == 0:
            maybe: set[int] = set()
            for depth in set(depth_of):
                maybe |= {p for p in index.candidates(buffer(depth)) if depth_of[p] == depth}
            for text in recursion:
                maybe |= {p for p in index.candidates(text) if not scanned[p].exclude_recursion}
        else:
            maybe = {p for p in index.candidates(recursion[-1]) if not scanned[p].exclude_recursion}
        for position in sorted(maybe | primary_hit.keys()):
            entry = scanned[position]
            uid = entry.uid
            if uid in done or uid in cooling:
                continue
            chat = buffer(depth_of[position])
            texts = [chat] if entry.exclude_recursion else [chat, *recursion]
            primary, secondary = entry.compiled(settings)
            if position not in primary_hit:
                fresh = texts[-1:] if step else texts
                first = next((k for k in primary if any(k.search(t) for t in fresh)), None)
                if first is None:
                    continue
                primary_hit[position] = first.text
            if entry.selective and secondary and not _logic(entry, [any(hit(k, t) for t in texts)
                                                                   for k in secondary]):
                continue
            why = f"key {primary_hit[position]!r}"
            if not rolls(entry):
                done.add(uid)
                continue
            found.append(Activated(entry, why if step == 0 else f"recursion: {why}"))
        if not found:
            break
        taken = admit(found)
        step += 1
        added = "\n".join(a.entry.content for a in taken if not a.entry.prevent_recursion)
        if not (settings.recursive and added and step <= min(settings.max_recursion, MAX_RECURSION)):
            break
        recursion.append(Text(added))
    for item in result.entries:
        entry = item.entry
        if item.why != "sticky" and (entry.sticky or entry.cooldown):
            span = result.timed.get(entry.uid)
            if span is None or not span.is_sticky(length):
                result.timed[entry.uid] = Timed(length, entry.sticky, entry.cooldown)
    return result


class _Index:
    """The primary keys of many entries, arranged so a text finds the entries it may
    trigger without trying each: whole-word keys by their word, plain substrings in one
    pass of C-level `in` tests, regex keys tried one by one.  Says "maybe"; each entry's
    own keys then decide."""

    def __init__(self, entries: Sequence[Entry], settings: LoreSettings):
        self.words: dict[bool, dict[str, list[int]]] = {True: {}, False: {}}
        self.folded_needles: list[tuple[str, int]] = []
        self.raw_needles: list[tuple[str, int]] = []
        self.patterns: list[tuple[Key, int]] = []
        for position, entry in enumerate(entries):
            for key in entry.compiled(settings)[0]:
                if key.needle is None:
                    self.patterns.append((key, position))
                elif key.word:
                    self.words[key.folded].setdefault(key.needle, []).append(position)
                else:
                    (self.folded_needles if key.folded else self.raw_needles).append((key.needle, position))

    def candidates(self, text: Text) -> set[int]:
        found: set[int] = set()
        for folded, table in self.words.items():
            if table:
                for word in text.words(folded) & table.keys():
                    found.update(table[word])
        if self.folded_needles:
            folded_text = text.folded
            found.update(p for needle, p in self.folded_needles if needle in folded_text)
        if self.raw_needles:
            found.update(p for needle, p in self.raw_needles if needle in text.raw)
        found.update(p for key, p in self.patterns if p not in found and key.search(text))
        return found


_indexes: dict[tuple, tuple[tuple[Entry, ...], _Index]] = {}


def _index(entries: list[Entry], settings: LoreSettings) -> _Index:
    """The index of `entries`, kept for the last few sets (a chat's books change rarely).
    The entries are kept with it, so the ids in its key cannot be reused meanwhile."""
    key = (settings.case_sensitive, settings.whole_words, *map(id, entries))
    kept = _indexes.get(key)
    if kept is None:
        if len(_indexes) >= 8:
            _indexes.pop(next(iter(_indexes)))
        kept = _indexes[key] = (tuple(entries), _Index(entries, settings))
    return kept[1]
