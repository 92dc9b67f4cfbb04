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
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from webui.generation.request import GenerationError, TokenLogprob
from webui.runtime import Runtime
from webui.ui.common import MODEL_GROUP, session_id, to_params
from webui.ui.token_html import AFTER, KINDS, next_html, note_html, tokens_html

# Alternatives recorded per token of a reply; the next-token view lists up to MAX_NEXT.
ALTERNATIVES = 5
MAX_NEXT = 100
WAITING = "Token probabilities appear here when the reply ends."


@dataclass
class TokenView:
    show: gr.Checkbox
    kind: gr.Radio
    html: gr.HTML
    # What this session last saw: {"reply": records or a note, "next": a record or a note}.
    shown: gr.State


def controls(prefix: str) -> TokenView:
    with gr.Row(equal_height=True):
        show = gr.Checkbox(False, label="Show token probabilities", scale=0, min_width=220,
                           elem_id=f"{prefix}-probs-on")
        kind = gr.Radio(list(KINDS), value=AFTER, label="Colour by", show_label=False, scale=1,
                        elem_id=f"{prefix}-probs-kind")
    html = gr.HTML("", elem_id=f"{prefix}-probs", js_on_load=None)
    return TokenView(show, kind, html, gr.State({}))


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
    if not value:
        return ""
    if isinstance(value, str):
        return note_html(value)
    return next_html(value, kind) if next_token else tokens_html(value, kind)


def wire_kind(view: TokenView, api_name: str, next_html_box: gr.HTML | None = None) -> None:
    """Re-render this session's views in the chosen distribution (no model call)."""
    outputs = [view.html] + ([next_html_box] if next_html_box is not None else [])

    def recolour(shown: dict | None, kind: str):
        shown = shown or {}
        htmls = [render(shown.get("reply"), kind)]
        if next_html_box is not None:
            htmls.append(render(shown.get("next"), kind, next_token=True))
        return htmls if len(htmls) > 1 else htmls[0]

    view.kind.change(recolour, [view.shown, view.kind], outputs, api_name=api_name, show_progress="hidden",
                     concurrency_limit=None)


STOPPED = "The reply did not finish: it has no token probabilities."


def with_view(updates: Iterator[tuple[str, Any, Any]], show: bool, shown: dict | None):
    """A completion's (text, status, token view) updates -> (text, status, session
    state): the state changes only at the start (a reply that never finishes, stopped
    from the browser, leaves a note) and at the end (the records, or why there are none).
    The HTML is rendered after the event ends (`wire_reply`), never per piece."""
    shown = dict(shown or {})
    started = False
    for written, status, tokens in updates:
        status = gr.skip() if status is None else status
        if tokens is not None:
            yield written, status, {**shown, "reply": tokens}
        elif not started:
            started = True
            yield written, status, {**shown, "reply": STOPPED if show else None}
        else:
            yield written, status, gr.skip()


def wire_reply(view: TokenView, prefix: str, triggers: list, events: dict[str, Any]) -> None:
    """The reply's view: cleared when a reply starts (`triggers`, beside the generating
    events, so the reply does not wait for it) and rendered when each of `events`
    ({api name suffix: generating event}) ends."""

    def starting(show: bool, kind: str) -> str:
        return render(WAITING if show else None, kind)

    def showing(shown: dict | None, kind: str) -> str:
        return render((shown or {}).get("reply"), kind)

    gr.on(triggers, starting, [view.show, view.kind], view.html, api_name=f"{prefix}_probs_start",
          show_progress="hidden", concurrency_limit=None)
    for suffix, event in events.items():
        event.then(showing, [view.shown, view.kind], view.html, api_name=f"{prefix}_probs_show{suffix}",
                   show_progress="hidden", concurrency_limit=None)


@dataclass
class NextToken:
    button: gr.Button
    count: gr.Number
    html: gr.HTML


def next_controls(prefix: str) -> NextToken:
    with gr.Row(equal_height=True):
        button = gr.Button("Next token", scale=0, min_width=140, elem_id=f"{prefix}-next")
        count = gr.Number(10, label="Tokens to list", precision=0, minimum=1, maximum=MAX_NEXT, scale=0,
                          min_width=120, elem_id=f"{prefix}-next-count")
    html = gr.HTML("", elem_id=f"{prefix}-next-view", js_on_load=None)
    return NextToken(button, count, html)


def wire_next(runtime: Runtime, prefix: str, text: gr.Textbox, params: gr.State, view: TokenView,
              nxt: NextToken):
    """The "Next token" event; returns it, for Stop to cancel."""

    def next_token(current: str, values, count, kind: str, shown: dict | None, request: gr.Request):
        if count is None or not 1 <= int(count) <= MAX_NEXT:
            raise gr.Error(f"Tokens to list: a whole number from 1 to {MAX_NEXT}")
        try:
            value: Any = runtime.next_tokens(session_id(request), current or "", to_params(values), int(count))
        except GenerationError as exc:
            value = str(exc)
        return render(value, kind, next_token=True), {**(shown or {}), "next": value}

    return nxt.button.click(next_token, [text, params, nxt.count, view.kind, view.shown], [nxt.html, view.shown],
                            api_name=f"{prefix}_next_token", **MODEL_GROUP)
