"""Chat actions that run the model: reply, regenerate, continue, impersonate.

A reply is written into the conversation as it streams and the conversation is
saved when the reply ends, however it ends: finished, stopped, failed, or abandoned
because the browser tab closed (then the request is cancelled and what was written
so far is kept).  Reopening the chat shows it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from webui.chat.history import ChatError, Conversation
from webui.chat.prompt import ChatPrompt, ChatSetup
from webui.chat.store import ChatStore
from webui.presets import SamplingParams

if TYPE_CHECKING:
    from webui.runtime import Runtime

ReplyAction = Literal["reply", "regenerate", "continue"]


class ReplyWriter:
    """Streams one reply into `conversation`; iterate it for the reply text so far."""

    def __init__(
        self, runtime: Runtime, owner: str, store: ChatStore, conversation: Conversation,
        setup: ChatSetup, params: SamplingParams, action: ReplyAction = "reply", prefix: str = "",
    ):
        path = conversation.path()
        if action == "continue":
            if not path or path[-1].role != "assistant":
                raise ChatError("there is no reply to continue")
            turns, self.target, prefix = conversation.turns(), path[-1], ""
        elif action == "regenerate" and path and path[-1].role == "assistant":
            turns = conversation.turns()[:-1]
            self.target = conversation.add_alternative(len(path) - 1, prefix)
        else:
            if not path or path[-1].role != "user":
                raise ChatError("write a message first")
            turns = conversation.turns()
            self.target = conversation.append("assistant", prefix)
        self.runtime, self.store, self.conversation = runtime, store, conversation
        self.action = action
        self.text = self.target.content
        self.prompt = ChatPrompt(setup, turns, "continue" if action == "continue" else "reply", prefix)
        self.stream = runtime.stream(owner, self.prompt, params)
        self.error: str | None = None

    def __iter__(self) -> Iterator[str]:
        pieces = iter(self.stream)
        try:
            for piece in pieces:
                self.text += piece
                yield self.text
        finally:
            pieces.close()  # a closed tab lands here: cancel the request, keep the text
            self._save()

    def summary(self) -> str:
        """Tokens, speed and seed, plus how much of the context the prompt used."""
        stats, info = self.stream.stats, self.prompt.info
        parts = [stats.summary()] if stats else []
        if info.room:
            parts.append(f"prompt {info.tokens} of {info.room} tokens that fit beside the reply")
        if info.dropped:
            parts.append(f"⚠️ the oldest {info.dropped} messages were left out to fit the context")
        return "; ".join(parts)

    def _save(self) -> None:
        conversation = self.conversation
        if self.text.strip() or self.action == "continue":
            conversation.set_content(self.target.id, self.text, note=self.summary())
        else:  # nothing was written: drop the empty reply rather than keep a blank message
            conversation.messages = [m for m in conversation.messages if m.id != self.target.id]
            conversation.selected = {k: v for k, v in conversation.selected.items() if v != self.target.id}
        self.store.save(conversation)


def impersonate(runtime: Runtime, owner: str, conversation: Conversation, setup: ChatSetup,
                params: SamplingParams, prefix: str = "") -> Iterator[str]:
    """The user's next message, written by the model; yields the text so far (not saved)."""
    text = prefix
    for piece in runtime.stream(owner, ChatPrompt(setup, conversation.turns(), "impersonate", prefix), params):
        text += piece
        yield text
