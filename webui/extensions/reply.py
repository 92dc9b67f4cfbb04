"""A reply with the extension hooks of Text Generation WebUI's generate_reply applied.

Outside the chat (Notebook, and whatever else sends a plain prompt): state_modifier
and input_modifier before, custom_generate_reply instead of the model when an
extension provides it, output_modifier on the finished reply.  With is_chat=True the
text modifiers are left to the chat flow (it applies them to the user's message and
the visible reply), as in Text Generation WebUI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from webui.extensions.host import ExtensionHost


class ReplyStream:
    """Iterate for the raw pieces as they arrive; afterwards `text` is the finished
    reply (output_modifier applied) and `stats` the generation's statistics (None
    when an extension generated the reply)."""

    def __init__(self, host: ExtensionHost, start: Callable[[], Any], *, prompt: str, original: str,
                 seed: int, state: dict[str, Any], stop: tuple[str, ...], is_chat: bool):
        self.host = host
        self._start = start
        self.prompt = prompt  # what the model is given (after input_modifier)
        self.original = original
        self.seed = seed
        self.state = state
        self.stop = stop
        self.is_chat = is_chat
        self.raw = ""
        self.text = ""
        self.stats = None
        self.logprobs: list = []  # per-token probabilities, when the request asked for them
        self.generated_by: str | None = None  # the extension that generated the reply, if one did

    def __iter__(self) -> Iterator[str]:
        custom = self.host.custom_reply(self.prompt, self.original, self.seed, self.state, self.stop, self.is_chat)
        for name, so_far in custom or ():
            # The hook yields the reply so far; pass on only what is new.
            piece = so_far[len(self.raw):] if so_far.startswith(self.raw) else so_far
            self.raw, self.generated_by = so_far, name
            if piece:
                yield piece
        if self.generated_by is not None:
            self._finish()
            return
        stream = self._start()
        for piece in stream:
            self.raw += piece
            yield piece
        self.stats = stream.stats
        self.logprobs = stream.logprobs
        self._finish()

    def _finish(self) -> None:
        self.text = self.raw if self.is_chat else self.host.output(self.raw, self.state, False)
