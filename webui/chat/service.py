"""Chat actions that run the model: reply, regenerate, continue, impersonate.

A reply is written into the conversation as it streams and the conversation is
saved when the reply ends, however it ends: finished, stopped, failed, or abandoned
because the browser tab closed (then the request is cancelled and what was written
so far is kept).  Reopening the chat shows it.  While it streams it is also saved
every few seconds, so even a killed process keeps most of a long reply.  A reply
that reaches the length a message may have is stopped there, never saved too long.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from webui.chat.characters import describe
from webui.chat.history import MAX_MESSAGE_CHARS, ChatError, Conversation, Message, Thought
from webui.chat.images import image_store, with_images
from webui.chat import last_prompt
from webui.chat.prompt import ChatPrompt, ChatSetup
from webui.chat.roleplay import keep_timed
from webui.chat.store import ChatStore
from webui.chat.tool_turns import record_calls
from webui.chat.tools import Tool
from webui.extensions import params_from_state
from webui.errors import AppError
from webui.generation.params import SamplingParams
from webui.generation.reasoning import Piece, ReasoningParser
from webui.generation.request import ui_party

if TYPE_CHECKING:
    from webui.runtime import Runtime

log = logging.getLogger(__name__)

ReplyAction = Literal["reply", "regenerate", "continue"]
SAVE_EVERY = 5.0  # seconds between saves of a reply while it streams


# -- what extensions see -------------------------------------------------------------------
# Text Generation WebUI's extensions expect a `state` dict and a history of
# [user, reply] pairs; these give them that, whatever our own types are.
def to_pairs(turns: list[dict[str, str]]) -> list[list[str]]:
    pairs: list[list[str]] = []
    for turn in turns:
        if turn["role"] == "user" or not pairs or pairs[-1][1]:
            pairs.append([turn["content"], ""] if turn["role"] == "user" else ["", turn["content"]])
        else:
            pairs[-1][1] = turn["content"]
    return pairs


def from_pairs(pairs: list[list[str]]) -> list[dict[str, str]]:
    turns = []
    for user, reply in pairs:
        turns += [{"role": "user", "content": user}] if user else []
        turns += [{"role": "assistant", "content": reply}] if reply else []
    return turns


def chat_state(runtime: Runtime, conversation: Conversation, setup: ChatSetup,
               params: SamplingParams, user: str | None = None) -> tuple[dict[str, Any], SamplingParams]:
    """The extensions' `state` for a chat request, after their state_modifier, and the
    sampling values it holds (validated like any others).  `user` is the signed-in
    user, so an extension that keeps records can keep them apart."""
    loaded = runtime.models.current
    context = loaded.context_length if loaded else 0
    state = runtime.extension_state(
        params, setup.mode, name1=setup.persona.name, name2=setup.character.name,
        context=describe(setup.character, setup.persona),
        history={"internal": to_pairs(conversation.turns()), "visible": to_pairs(conversation.shown())},
        user=user,
    )
    if not runtime.extensions.has("state_modifier"):
        return state, params
    state = runtime.extensions.state(state, validate=lambda s: params_from_state(s, params, context))
    return state, params_from_state(state, params, context)


def add_user_message(runtime: Runtime, conversation: Conversation, setup: ChatSetup,
                     params: SamplingParams, text: str, user: str | None = None,
                     images: list[str] | None = None) -> Message:
    """Append the user's message (with the ids of its stored images), as the extensions'
    input modifiers leave it."""
    extensions = runtime.extensions
    if not (extensions.has("chat_input_modifier") or extensions.has("input_modifier")):
        return conversation.append("user", text, images=images)
    state, _ = chat_state(runtime, conversation, setup, params, user)
    internal, visible = extensions.chat_input(text, text, state)
    return conversation.append("user", extensions.input(internal, state, True), visible, images=images)


def withdraw(conversation: Conversation, sent: Message | None) -> str | None:
    """Take back the user's message just `sent` when no reply to it was kept (the model
    could not start, or failed before writing anything): a message with no reply would
    be a half turn, which the next message would join.  Returns the text as the user
    typed it, for the message box (None: nothing withdrawn)."""
    path = conversation.path()
    if sent is None or not path or path[-1].id != sent.id:
        return None
    conversation.remove_last()
    return sent.content if sent.visible is None else sent.visible


def keep_images(before: list[dict], after: list[dict]) -> list[dict]:
    """The images of `before` on `after` (an extension's rewrite of the history as text
    pairs, which carry none): turn by turn while the turns line up.  Where they do not, a
    conversation with images is refused rather than sent without them."""
    if not any(turn.get("images") for turn in before):
        return after
    if [t["role"] for t in before] != [t["role"] for t in after]:
        raise ChatError("an extension's history_modifier changed which turns this conversation has, so its "
                        "images cannot be placed; turn that extension off to send images")
    return [{**new, "images": old["images"]} if old.get("images") else new for old, new in zip(before, after,
                                                                                               strict=True)]


class ReplyWriter:
    """Streams one reply into `conversation`; iterate it for the reply text so far."""

    def __init__(
        self, runtime: Runtime, owner: str, store: ChatStore, conversation: Conversation,
        setup: ChatSetup, params: SamplingParams, action: ReplyAction = "reply", prefix: str = "",
        user: str | None = None, save_every: float = SAVE_EVERY, token_view: int | None = None,
        tools: Sequence[Tool] = (), speaker: str | None = None,
    ):
        """speaker: a group chat's member who writes this reply (webui/chat/group.py: it
        may answer another member, not only the user).
        token_view: record each token's probabilities, with this many alternatives
        (`self.stream.logprobs` once the reply ends; webui/ui/token_view.py).
        tools: the tools this reply is offered (webui/chat/tool_turns.py); its calls are
        recorded in `self.calls` when it ends."""
        path = conversation.path()
        if action == "continue":
            if not path or path[-1].role != "assistant":
                raise ChatError("there is no reply to continue")
            turns, self.target, prefix = conversation.turns(), path[-1], ""
        elif action == "regenerate" and path and path[-1].role == "assistant":
            turns = conversation.turns()[:-1]
            self.target = conversation.add_alternative(len(path) - 1, prefix)
        else:
            # After a user's message, or after tool results (the reply goes on from them).
            answers = ("user", "tool", "assistant") if speaker else ("user", "tool")
            if not path or path[-1].role not in answers or any(
                    m.tool_status == "pending" for m in path if m.role == "tool"):
                raise ChatError("write a message first")
            turns = conversation.turns()
            self.target = conversation.append("assistant", prefix, **({"speaker": speaker} if speaker else {}))
        self.runtime, self.store, self.conversation = runtime, store, conversation
        self.action = action
        self.save_every = save_every
        self.text = self.target.content
        self._started_with = len(self.text)  # what Continue found (added(): what came after)
        self.state, params = chat_state(runtime, conversation, setup, params, user)
        extensions = runtime.extensions
        if extensions.has("history_modifier"):
            history = extensions.history({"internal": to_pairs(turns), "visible": to_pairs(turns)})
            turns = keep_images(turns, from_pairs(history["internal"]))
        bot_prefix = (lambda s: extensions.bot_prefix(s, self.state)) if extensions.has("bot_prefix_modifier") else None
        kind = "continue" if action == "continue" else "reply"
        try:
            turns = with_images(turns, image_store(store.folder))  # the messages' images, for the model
        except ChatError:
            self._drop_target()
            raise
        self.tools = tuple(tools)
        self.calls: list[Message] = []  # the tool messages this reply's calls added (pending)
        self.prompt = ChatPrompt(setup, turns, kind, prefix, bot_prefix, tools=self.tools)
        custom = None
        if extensions.has("custom_generate_chat_prompt"):
            user_input = next((t["content"] for t in reversed(turns) if t["role"] == "user"), "")
            custom = extensions.chat_prompt(user_input, self.state, history=self.state["history"],
                                            _continue=action == "continue", impersonate=False)
        try:
            self.stream = runtime.stream(owner, custom if custom is not None else self.prompt, params,
                                         state=self.state, logprobs=token_view,
                                         token_detail=token_view is not None, who=ui_party(user, owner))
        except AppError:  # e.g. the queue is full: leave the conversation as it was
            self._drop_target()
            raise
        self.error: str | None = None
        self.waiting: int | None = None  # requests ahead of this one while it is queued
        self._read = False
        # A thinking model's reply comes apart as it streams: `text` is the answer,
        # `thinking` the thinking before it (webui/generation/reasoning.py).
        # A continued reply goes on from its own thinking: kept, and added to (its tokens
        # and seconds too) when the reply had stopped before its answer.
        target = self.target
        self._before = Thought(target.reasoning, target.reasoning_tokens, target.reasoning_seconds) \
            if action == "continue" else Thought("")
        self.thinking = self._before.text
        self.thinking_seconds = 0.0
        self.answering = action == "continue" and (bool(target.content) or not target.reasoning)
        self._splitter: ReasoningParser | None = None
        self._thinking_since: float | None = None

    def status(self) -> str:
        if self.waiting:
            return f"Waiting for the model: {self.waiting} request{'s' if self.waiting > 1 else ''} ahead of yours…"
        return "Generating…"

    def __iter__(self) -> Iterator[str]:
        """The reply so far, each time it grows (or its place in the queue changes)."""
        self._read = True
        pieces = self.stream.updates()
        saved = time.monotonic()
        try:
            for piece in pieces:
                if not isinstance(piece, str):
                    self.waiting = piece.ahead
                    yield self.text
                    continue
                self.waiting = None
                piece = self._answer_part(piece)
                room = MAX_MESSAGE_CHARS - len(self.text)
                self.text += piece[:room]
                if len(self.thinking) > MAX_MESSAGE_CHARS:
                    self.thinking = self.thinking[:MAX_MESSAGE_CHARS]
                    self.error = f"the thinking stopped at {MAX_MESSAGE_CHARS:,} characters, the most a message holds"
                    yield self.text
                    return
                if len(piece) > room:
                    self.error = f"the reply stopped at {MAX_MESSAGE_CHARS:,} characters, the most a message holds"
                    yield self.text
                    return  # the finally below cancels the request
                yield self.text
                if time.monotonic() - saved >= self.save_every:
                    self._save_partial()
                    saved = time.monotonic()
        finally:
            pieces.close()  # a closed tab lands here: cancel the request, keep the text
            if self._splitter is not None:
                self.text += self._take(self._splitter.finish())[: MAX_MESSAGE_CHARS - len(self.text)]
            self._save()

    def _answer_part(self, piece: str) -> str:
        """The answer's share of a streamed piece; the thinking's share goes to `thinking`."""
        if self._splitter is None:
            if self.stream.thinking is None:
                return piece
            self._splitter = ReasoningParser(self.stream.thinking, resume=bool(self._before.text))
        return self._take(self._splitter.feed(piece))

    def _take(self, parts: list[Piece]) -> str:
        answer = ""
        for part in parts:
            if part.part == "thinking":
                self._thinking_since = self._thinking_since or time.monotonic()
                self.thinking += part.text
            else:
                if not self.answering and self._thinking_since is not None:
                    self.thinking_seconds = time.monotonic() - self._thinking_since
                self.answering = True
                answer += part.text
        return answer

    def thought(self) -> Thought | None:
        """The thinking to save with the reply (None: this reply did not think)."""
        if self.stream.thinking is None and not self.thinking:
            return None
        if not self.answering and self._thinking_since is not None:
            self.thinking_seconds = time.monotonic() - self._thinking_since
        stats = self.stream.stats
        before = self._before
        return Thought(self.thinking, before.tokens + (stats.thinking_tokens if stats else 0),
                       before.seconds + self.thinking_seconds)

    def close(self) -> None:
        """For a caller that stops before reading at all: cancel the request, and save."""
        if not self._read:
            self._read = True
            self.stream.cancel()
            self._save()

    def summary(self) -> str:
        """Tokens, speed and seed, plus how much of the context the prompt used."""
        stats, info = self.stream.stats, self.prompt.info  # info stays empty for an extension's prompt
        parts = [stats.summary()] if stats else []
        if self.action == "continue" and stats and stats.finish_reason == "stop" and not self.added():
            # The model's first token was its end of text: say so, not just "1 token".
            parts.insert(0, "Nothing added: the model ends its reply here (ban_eos_token in Parameters makes it "
                            "go on)")
        if info.room:
            parts.append(f"prompt {info.tokens} of {info.room} tokens that fit beside the reply")
        if info.dropped:
            parts.append(f"⚠️ the oldest {info.dropped} messages were left out to fit the context")
        return "; ".join(parts)

    def added(self) -> str:
        """The text this reply wrote (for Continue: after what was there)."""
        return self.text[self._started_with:]

    def _save_partial(self) -> None:
        """The reply so far, saved while it streams.  A failure (a full disk) is left to
        the final save to report; streaming goes on."""
        try:
            self.conversation.set_content(self.target.id, self.text, thinking=self.thought())
            self.store.save(self.conversation)
        except (OSError, ChatError) as exc:
            log.warning("reply not saved while streaming: %s", exc)

    def _save(self) -> None:
        conversation = self.conversation
        if self.text.strip() or self.thinking.strip() or self.action == "continue":
            extensions = self.runtime.extensions
            visible = extensions.output(self.text, self.state, True) if extensions.has("output_modifier") else None
            conversation.set_content(self.target.id, self.text, note=self.summary(), visible=visible,
                                     thinking=self.thought())
            stats = self.stream.stats
            if self.tools and stats is not None and stats.finish_reason == "stop" and not self.error:
                # Only a reply that ended by itself: a stopped or cut one may hold half a call.
                self.calls = record_calls(conversation, self.target, self.text, self.tools)
            keep_timed(conversation, self.prompt.woven)  # sticky/cooldown lore, counted from this reply
        else:  # nothing was written: drop the empty reply rather than keep a blank message
            self._drop_target()
        self.store.save(conversation)
        if self.prompt.info.text:
            last_prompt.keep(self.store.folder, conversation.id, self.prompt.info)

    def _drop_target(self) -> None:
        conversation, target = self.conversation, self.target.id
        conversation.messages = [m for m in conversation.messages if m.id != target]
        conversation.selected = {k: v for k, v in conversation.selected.items() if v != target}


def impersonate(runtime: Runtime, owner: str, conversation: Conversation, setup: ChatSetup,
                params: SamplingParams, prefix: str = "", user: str | None = None) -> Iterator[str]:
    """The user's next message, written by the model; yields the text so far (not saved)."""
    state, params = chat_state(runtime, conversation, setup, params, user)
    text = prefix
    turns = with_images(conversation.turns(), image_store(runtime.users.get(user).chats.folder))
    prompt = ChatPrompt(setup, turns, "impersonate", prefix)
    for piece in runtime.stream(owner, prompt, params, state=state, who=ui_party(user, owner)):
        text += piece
        yield text
