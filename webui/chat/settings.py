"""A conversation's prompt settings, kept with it (history.ChatSettings).

The chat's mode, instruction template and thinking switches belong to the
conversation: a role-play chat reopened later (or after a reload) must be answered in
the format it was written in, not in whatever the controls last showed.  The values
the controls hold when a reply is asked for are kept with the conversation (saved with
the reply), and opening it puts them back into the controls, which the next reply reads.
A conversation that has none kept yet (new, or saved by an older version) leaves the
controls as they are.
"""

from __future__ import annotations

from webui.chat.history import ChatSettings, Conversation
from webui.chat.templates import MODEL_TEMPLATE
from webui.chat.thinking import EFFORTS


def remember(conversation: Conversation, mode: str, template, enable_thinking, effort) -> None:
    """Keep the controls' values with `conversation` (mode and template already checked
    by the prompt's setup; a switch the browser sent oddly keeps its default)."""
    defaults = ChatSettings()
    conversation.settings = ChatSettings(
        mode=mode,
        template="" if template in (None, "", MODEL_TEMPLATE) else str(template),
        enable_thinking=enable_thinking if isinstance(enable_thinking, bool) else defaults.enable_thinking,
        effort=effort if effort in EFFORTS else defaults.effort,
    )


def restored(conversation: Conversation, template_names: list[str]) -> ChatSettings | None:
    """What the controls should show for `conversation` (None: leave them as they are).
    A template removed since is not put back: its control keeps its value."""
    kept = conversation.settings
    if kept is None:
        return None
    name = kept.template or MODEL_TEMPLATE
    return kept.model_copy(update={"template": name if name in template_names else ""})
