"""The chat's parts for thinking models: the template's switches, and the thinking of a
reply while it streams.

The switches ("Enable thinking", "Reasoning effort") are shown only when the chat
template in use reads them (webui/chat/thinking.py `switches`: Qwen3's enable_thinking,
gpt-oss's reasoning_effort); each request sends their values to the template as
variables (ChatSetup.variables).  Like the chat's mode and instruction template beside
them, their values are kept with the conversation and put back when it is opened
(webui/chat/settings.py).

While a reply streams, the Chatbot is sent only when its phase changes (thinking starts:
an open block with a spinner; the answer starts: the block folds, titled with its time;
the reply ends), and each piece goes to the hidden live box, as the answer does
(webui/ui/chat_tab.py).  The thinking goes there escaped (display.inert).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import gradio as gr

from webui.chat import display
from webui.chat.history import Thought
from webui.chat.prompt import ChatSetup
from webui.chat.thinking import EFFORTS, switches, variables_for

if TYPE_CHECKING:
    from webui.chat.service import ReplyWriter
    from webui.runtime import Runtime

DEFAULT_EFFORT = "medium"


@dataclass
class ThinkingControls:
    enable: gr.Checkbox
    effort: gr.Radio


def controls() -> ThinkingControls:
    enable = gr.Checkbox(True, label="Enable thinking", visible=False, elem_id="chat-thinking",
                         info="The model thinks before it answers (its template's switch).")
    effort = gr.Radio(list(EFFORTS), value=DEFAULT_EFFORT, label="Reasoning effort", visible=False,
                      elem_id="chat-effort")
    return ThinkingControls(enable, effort)


def template_in_use(runtime: Runtime, template: str | None) -> str | None:
    """The chat template a chat prompt is rendered with: the instruction template chosen,
    else the loaded model's own."""
    if template:
        return template
    loaded = runtime.models.current
    return getattr(getattr(loaded, "tokenizer", None), "chat_template", None) if loaded else None


def shown_for(runtime: Runtime, template: str | None) -> tuple[dict, dict]:
    """Visibility of the two switches for this template."""
    have = switches(template_in_use(runtime, template))
    return (gr.update(visible="enable_thinking" in have or "thinking" in have),
            gr.update(visible="reasoning_effort" in have))


def with_switches(runtime: Runtime, setup: ChatSetup, enable, effort) -> ChatSetup:
    """`setup` with the switches' values as its template variables (only those its
    template reads; anything else a browser sends is ignored)."""
    enable = enable if isinstance(enable, bool) else None
    effort = effort if effort in EFFORTS else None
    variables = variables_for(template_in_use(runtime, setup.template), enable, effort)
    return replace(setup, variables=variables) if variables else setup


# -- a reply as it streams -----------------------------------------------------------------------
def phase(writer: ReplyWriter) -> display.Phase:
    """Thinking while the reply has written thinking and no answer yet."""
    return "thinking" if writer.thinking and not writer.answering else "answer"


def live_text(writer: ReplyWriter, now: display.Phase) -> str:
    """What the live box shows: the thinking (made inert) while thinking, else the answer."""
    return display.inert(writer.thinking) if now == "thinking" else writer.text


def thought_so_far(writer: ReplyWriter) -> Thought | None:
    """The thinking shown folded once the answer starts (its token count comes when the
    reply ends and the saved message is shown)."""
    return writer.thought()
