"""What a conversation keeps for role-play: its own lorebooks, its author's note, and
which lore entries are sticky or cooling down (history.Conversation.lore).

Only plain data here (no imports from the chat modules), so the conversation's model
can hold it; webui/chat/roleplay.py puts it to use.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_NOTE_CHARS = 20_000
MAX_TIMED = 10_000


class AuthorsNote(BaseModel):
    """SillyTavern's author's note: text put into the chat `depth` messages from its end,
    every `frequency` user messages (0: never), as a message of `role`."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field("", max_length=MAX_NOTE_CHARS)
    depth: int = Field(4, ge=0, le=1000)
    frequency: int = Field(1, ge=0, le=1000)
    role: Literal["system", "user", "assistant"] = "system"


class TimedSpan(BaseModel):
    """lore.Timed as saved: the chat's length when the entry went in, its sticky and cooldown."""

    model_config = ConfigDict(extra="forbid")
    start: int = Field(ge=0)
    sticky: int = Field(0, ge=0)
    cooldown: int = Field(0, ge=0)


class ChatLore(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The user's lorebooks this chat reads besides the global and the character's ones.
    books: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default_factory=list, max_length=64)
    note: AuthorsNote = Field(default_factory=AuthorsNote)
    timed: dict[Annotated[str, Field(max_length=300)], TimedSpan] = Field(default_factory=dict,
                                                                         max_length=MAX_TIMED)
