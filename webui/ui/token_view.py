"""The token views' controls, shared by the Notebook, Default and Chat tabs.

- "Show token probabilities": the next reply is generated with each token's
  probabilities recorded (webui/generation/token_probs.py) and, when it ends, shown
  coloured by probability with its alternatives (webui/ui/token_html.py).  Off (the
  default), nothing is recorded and decoding keeps its fast path.
- "Colour by": the distribution each token was drawn from (after the samplers) or the
  model's own; switching re-renders what this browser session already has (kept in a
  gr.State), without running the model again.
- "Next token" (Notebook, Default): the likeliest next tokens for the text as it is,
  through Runtime.next_tokens, so the model runs on the engine's thread in its turn.

A model that cannot report probabilities (a remote engine) gets a note saying so.
The generating events only put records into the session's state, at the start and the
end of a reply; the HTML is rendered by the state's change listener, so streaming sends
nothing more per piece.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from webui.errors import AppError
from webui.generation.request import TokenLogprob
from webui.runtime import Runtime
from webui.ui.common import MODEL_GROUP, session_id, to_params
from webui.ui.token_html import AFTER, KINDS, next_html, note_html, tokens_html

# Alternatives recorded per token of a reply; the next-token view lists up to MAX_NEXT.
ALTERNATIVES = 5
MAX_NEXT = 100
WAITING = "Token probabilities appear here when the reply ends."


@dataclass(eq=False)
class Shown:
    """What one browser session's reply view shows: the last reply's records, or a note
    why there are none.

    Compared by identity, on purpose: Gradio hashes a State that has a change listener
    before and after every update of an event that outputs it (gradio/blocks.py,
    get_state_ids_to_track); records hashed by value would cost each streamed piece time
    in proportion to the last reply's length.  So a change is a new Shown."""

    reply: Any = None


@dataclass
class TokenView:
    show: gr.Checkbox
    kind: gr.Radio
    html: gr.HTML
    shown: gr.State  # a Shown, or None before anything was shown


def controls(prefix: str) -> TokenView:
    with gr.Row(equal_height=True):
        show = gr.Checkbox(False, label="Show token probabilities", scale=0, min_width=220,
                           elem_id=f"{prefix}-probs-on")
        kind = gr.Radio(list(KINDS), value=AFTER, label="Colour by", show_label=False, scale=1,
                        elem_id=f"{prefix}-probs-kind")
    html = gr.HTML("", elem_id=f"{prefix}-probs", js_on_load=None)
    return TokenView(show, kind, html, gr.State(None))


def shown_of(value: Any) -> Shown:
    return value if isinstance(value, Shown) else Shown()


def wanted(runtime: Runtime, owner: str, show: bool) -> tuple[int | None, str | None]:
    """(alternatives to record per token, or None; a note when the view cannot be had)."""
    if not show:
        return None, None
    refused = runtime.token_probabilities_refused(owner)
    return (None, refused) if refused else (ALTERNATIVES, None)


def reply_value(records: list[TokenLogprob] | None, note: str | None, generated_by: str | None = None):
    """What the view shows for a finished reply: its records, or why there are none."""
    if note:
        return note
    if generated_by:
        return f"The {generated_by} extension wrote this reply: it has no token probabilities."
    return list(records or [])


def render(value: Any, kind: str, next_token: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return note_html(value)
    return next_html(value, kind) if next_token else tokens_html(value, kind)


def starting(show: bool) -> Shown:
    """The state as a reply starts: the last reply's view gives way."""
    return Shown(WAITING if show else None)


def with_view(updates: Iterator[tuple[str, Any, Any]], show: bool):
    """A completion's (text, status, token view) updates -> (text, status, state): the
    state changes at the start and at the end of the reply only."""
    started = False
    for written, status, tokens in updates:
        status = gr.skip() if status is None else status
        if tokens is not None:
            yield written, status, Shown(tokens)
        elif not started:
            started = True
            yield written, status, starting(show)
        else:
            yield written, status, gr.skip()


def wire_reply(view: TokenView, prefix: str) -> None:
    """Render the reply's view whenever this session's state changes (a reply starts or
    ends) and in the distribution chosen under "Colour by" when that changes."""

    def showing(shown: Any, kind: str) -> str:
        return render(shown_of(shown).reply, kind)

    view.shown.change(showing, [view.shown, view.kind], view.html, api_name=f"{prefix}_probs_show",
                      show_progress="hidden", concurrency_limit=None)
    view.kind.change(showing, [view.shown, view.kind], view.html, api_name=f"{prefix}_probs_view",
                     show_progress="hidden", concurrency_limit=None)


@dataclass
class NextToken:
    button: gr.Button
    count: gr.Number
    html: gr.HTML


def next_controls(prefix: str) -> NextToken:
    with gr.Row():
        button = gr.Button("Next token", scale=0, min_width=140, elem_id=f"{prefix}-next")
        count = gr.Number(10, label="Tokens to list", precision=0, minimum=1, maximum=MAX_NEXT, scale=0,
                          min_width=120, elem_id=f"{prefix}-next-count")
    html = gr.HTML("", elem_id=f"{prefix}-next-view", js_on_load=None)
    return NextToken(button, count, html)


def wire_next(runtime: Runtime, prefix: str, text: gr.Textbox, params: gr.State, view: TokenView,
              nxt: NextToken):
    """The "Next token" event (returned, for Stop to cancel), and its re-rendering when
    "Colour by" changes.  Its record has a state of its own: the reply view's state
    has the change listener."""

    def next_token(current: str, values, count, kind: str, request: gr.Request):
        if count is None or not 1 <= int(count) <= MAX_NEXT:
            raise gr.Error(f"Tokens to list: a whole number from 1 to {MAX_NEXT}")
        try:
            value: Any = runtime.next_tokens(session_id(request), current or "", to_params(values), int(count),
                                             getattr(request, "username", None))
        except AppError as exc:
            value = str(exc)
        return render(value, kind, next_token=True), value

    def recolour(value: Any, kind: str) -> str:
        return render(value, kind, next_token=True)

    last = gr.State(None)  # this session's last next-token record (or note)
    event = nxt.button.click(next_token, [text, params, nxt.count, view.kind], [nxt.html, last],
                             api_name=f"{prefix}_next_token", **MODEL_GROUP)
    view.kind.change(recolour, [last, view.kind], nxt.html, api_name=f"{prefix}_next_view",
                     show_progress="hidden", concurrency_limit=None)
    return event
