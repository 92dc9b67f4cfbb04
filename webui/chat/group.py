"""Group chats: several characters in one conversation, and who speaks next.

A group chat is an ordinary conversation filed under one of its characters (the one it
was started from), with a cast kept beside it (history.ChatGroup) and the speaker kept
on each reply (Message.speaker).  Each reply is prompted as a one-character chat with the
speaker's own card (webui/chat/prompt.py), the other members' names on their lines of the
history and as stop strings, so everything a one-character chat has (lore, the author's
note, every chat action) applies per speaker.

Who speaks next, after SillyTavern's group chats:
- natural: a member named in the last message (not the one who wrote it); else members
  drawn by their talkativeness (a card's `extensions.talkativeness`, 0 to 1, default 0.5);
  else one at random among those not silent;
- list: each unmuted member in turn, after the last one who spoke;
- manual: the member the user chose ("who speaks next").
A choice the user makes is used in every order (once, except in manual order, where it
stays until changed).  A muted member is never chosen.  Regenerate and continue keep the
reply's own speaker.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from webui.chat.history import ChatError, ChatGroup, Conversation

if TYPE_CHECKING:
    from webui.chat.characters import Character
    from webui.chat.prompt import ChatSetup

DEFAULT_TALKATIVENESS = 0.5
_WORD = re.compile(r"[^\W_]+")


def as_spoken_to(turns: list[dict], speaker: str) -> list[dict]:
    """A group chat's history for an instruct template, from `speaker`'s side: its own
    replies stay the assistant's, the other members' lines come as the user's turns, each
    "Name: text" (consecutive user turns joined), so every template sees turns alternate.
    A history without other speakers is returned as it is."""
    if not any(t["role"] == "assistant" and t.get("name") not in (None, speaker) for t in turns):
        return turns
    out: list[dict] = []
    for turn in turns:
        if turn["role"] == "assistant" and turn.get("name") not in (None, speaker):
            turn = {"role": "user", "content": f"{turn['name']}: {turn['content']}"}
        if out and turn["role"] == "user" and out[-1]["role"] == "user" and not turn.get("images") \
                and not out[-1].get("images"):
            out[-1] = {**out[-1], "content": f"{out[-1]['content']}\n\n{turn['content']}"}
        else:
            out.append(turn)
    return out


def talkativeness(character: Character) -> float:
    """How readily a character speaks unprompted: SillyTavern keeps it in the card's
    extensions (a number or a numeric string)."""
    data = character.card.get("data") if isinstance(character.card.get("data"), dict) else {}
    extensions = data.get("extensions") if isinstance(data.get("extensions"), dict) else {}
    try:
        value = float(extensions.get("talkativeness", DEFAULT_TALKATIVENESS))
    except (TypeError, ValueError):
        return DEFAULT_TALKATIVENESS
    return min(1.0, max(0.0, value)) if value == value else DEFAULT_TALKATIVENESS  # NaN: the default


def mentioned(text: str, names: Sequence[str]) -> list[str]:
    """The `names` a text mentions (a word of the name as a word of the text, any case),
    in the order the text mentions them."""
    words = [w.lower() for w in _WORD.findall(text)]
    found: list[str] = []
    for word in words:
        for name in names:
            if name not in found and word in (w.lower() for w in _WORD.findall(name)):
                found.append(name)
                break
    return found


def active(group: ChatGroup) -> list[str]:
    members = [m for m in group.members if m not in group.muted]
    if not members:
        raise ChatError("every member of this group is muted: unmute one (Group chat ▸ Muted)")
    return members


def last_speaker(conversation: Conversation) -> str | None:
    """Who wrote the last reply on the shown branch (None: no member has spoken)."""
    for message in reversed(conversation.path()):
        if message.role == "assistant":
            return message.speaker or conversation.character
    return None


def next_speaker(conversation: Conversation, talk: Callable[[str], float] = lambda _: DEFAULT_TALKATIVENESS,
                 rng: random.Random | None = None) -> str:
    """Who writes the next new reply (see the module's docstring); `talk` gives a member's
    talkativeness.  A one-time choice is used up (the conversation is saved with the reply)."""
    group = conversation.group
    if group is None:
        return conversation.character
    members = active(group)
    if group.next is not None:
        if group.next in group.muted:
            raise ChatError(f"{group.next} is muted: unmute them, or choose another to speak next")
        chosen = group.next
        if group.order != "manual":
            conversation.group = group.model_copy(update={"next": None})
        return chosen
    if group.order == "manual":
        raise ChatError("this group's reply order is manual: choose who speaks next (Group chat ▸ Who speaks next)")
    last = last_speaker(conversation)
    if group.order == "list":
        if last not in group.members:
            return members[0]
        after = group.members[group.members.index(last) + 1:] + group.members[: group.members.index(last) + 1]
        return next(m for m in after if m in members)
    return _natural(conversation, members, talk, rng or random.Random())  # noqa: S311 (who speaks, not a secret)


def _natural(conversation: Conversation, members: list[str], talk: Callable[[str], float],
             rng: random.Random) -> str:
    path = conversation.path()
    last = path[-1] if path else None
    # A character does not answer itself (SillyTavern's "self-responses" off).
    banned = (last.speaker or conversation.character) if last is not None and last.role == "assistant" else None
    candidates = [m for m in members if m != banned] or members
    if last is not None:
        named = mentioned(last.content, candidates)
        if named:
            return named[0]
    shuffled = list(candidates)
    rng.shuffle(shuffled)
    for member in shuffled:
        if talk(member) >= rng.random():
            return member
    chatty = [m for m in candidates if talk(m) > 0]
    return rng.choice(chatty or candidates)


def speaker_of(conversation: Conversation, action: str, talk: Callable[[str], float] | None = None,
               rng: random.Random | None = None) -> str:
    """The speaker of the reply an `action` writes: regenerate and continue keep the
    speaker of the reply they redo or go on with; a new reply's comes from the order."""
    path = conversation.path()
    if action in ("regenerate", "continue") and path and path[-1].role == "assistant":
        return path[-1].speaker or conversation.character
    if action == "impersonate":
        return last_speaker(conversation) or conversation.character
    return next_speaker(conversation, talk or (lambda _: DEFAULT_TALKATIVENESS), rng)


def for_reply(load: Callable[[str], Character], conversation: Conversation, setup: ChatSetup, action: str,
              rng: random.Random | None = None) -> tuple[ChatSetup, str | None]:
    """(the prompt setup, the speaker) of a reply in `conversation`: for a group chat, the
    speaker's own card with the other members' names; else `setup` as it is and no
    speaker.  `load` reads a character by name (the user's library: names checked)."""
    group = conversation.group
    if group is None:
        return setup, None
    cards: dict[str, Character] = {}

    def card(name: str) -> Character:
        if name not in cards:
            cards[name] = load(name)
        return cards[name]

    speaker = speaker_of(conversation, action, lambda name: talkativeness(card(name)), rng)
    others = tuple(m for m in group.members if m != speaker)
    return dataclasses.replace(setup, character=card(speaker), others=others), speaker


# -- changing a group ----------------------------------------------------------------------
def start(conversation: Conversation, members: Sequence[Any], order: str = "natural") -> Conversation:
    """Make `conversation` (a new chat, with its character's greeting) a group chat of
    its character and `members` (names already checked against the user's library)."""
    names = list(dict.fromkeys([conversation.character, *(m for m in members if isinstance(m, str))]))
    if len(names) < 2:
        raise ChatError("a group chat needs at least two characters: choose the others under Members")
    conversation.group = checked(ChatGroup, members=names, order=order)
    # Replies written before (the greeting) are the host character's.
    conversation.messages = [m.model_copy(update={"speaker": conversation.character})
                             if m.role == "assistant" and not m.speaker else m for m in conversation.messages]
    return conversation


def change(conversation: Conversation, members=None, muted=None, order=None, next_one: Any = ...) -> ChatGroup:
    """The group with what the user changed (add or remove members, mute, the order, who
    speaks next); muted and next follow the members."""
    group = conversation.group
    if group is None:
        raise ChatError("this chat is not a group chat: start one first (Group chat ▸ Start a group chat)")
    members = list(dict.fromkeys(m for m in members if isinstance(m, str))) if members is not None else group.members
    if not members:
        raise ChatError("a group chat keeps at least one member")
    muted = [m for m in (group.muted if muted is None else muted) if m in members]
    nxt = group.next if next_one is ... else (next_one or None)
    conversation.group = checked(ChatGroup, members=members, muted=muted, order=order or group.order,
                                 next=nxt if nxt in members else None)
    conversation.touch()
    return conversation.group


def checked(model, **values):
    """A model built from values a user sent: a refusal as a ChatError the chat shows."""
    from pydantic import ValidationError

    from webui.settings import describe_validation_error

    try:
        return model(**values)
    except ValidationError as exc:
        raise ChatError(f"group chat: {describe_validation_error(exc)}") from None
