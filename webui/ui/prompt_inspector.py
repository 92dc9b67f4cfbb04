"""The chat's prompt inspector: the exact prompt the last reply was written from, with
the lore entries, the author's note and the retrieved passages in it marked, each part
labelled with its token count, and a legend.

The prompt comes from webui/chat/last_prompt.py (recorded when the reply was saved, for
this user's open chat only).  Every piece of text is escaped before it is put in the HTML.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import gradio as gr

from webui.chat import last_prompt
from webui.chat.prompt import PromptInfo

if TYPE_CHECKING:
    from webui.runtime import Runtime

KINDS = {  # kind -> (legend name, colour)
    "lore": ("Lore entry", "#fde68a"),
    "note": ("Author's note", "#bfdbfe"),
    "passage": ("Retrieved passage", "#bbf7d0"),
}
EMPTY = "No reply in this chat yet: send a message, then open this again."


def render() -> tuple[gr.Button, gr.HTML, gr.Accordion]:
    with gr.Accordion("Prompt inspector", open=False, elem_id="prompt-inspector-panel") as panel:
        show = gr.Button("Show the last reply's prompt", size="sm", elem_id="prompt-inspector-show")
        view = gr.HTML(EMPTY, elem_id="prompt-inspector")
    return show, view, panel


def as_html(info: PromptInfo | None) -> str:
    if info is None or not info.text:
        return f"<p>{html.escape(EMPTY)}</p>"
    text, pieces, at = info.text, [], 0
    totals: dict[str, list[int]] = {}
    for part in info.parts:
        if part.start < at:
            continue  # overlapping marks are never made; kept safe all the same
        name, colour = KINDS.get(part.kind, (part.kind, "#e5e7eb"))
        title = f"{name}: {part.label} · {part.tokens} tokens"
        pieces.append(html.escape(text[at:part.start]))
        pieces.append(f'<mark class="pi-{html.escape(part.kind)}" style="background:{colour}" '
                      f'title="{html.escape(title)}">{html.escape(text[part.start:part.end])}</mark>')
        at = part.end
        totals.setdefault(part.kind, []).append(part.tokens)
    pieces.append(html.escape(text[at:]))
    marked = sum(sum(v) for v in totals.values())
    legend = [f'<span class="pi-key" style="background:{colour};padding:0 4px">{name}: {len(totals.get(kind, []))}'
              f" ({sum(totals.get(kind, []))} tokens)</span>" for kind, (name, colour) in KINDS.items()]
    legend.append(f"<span>rest: {max(0, info.tokens - marked)} tokens · whole prompt: {info.tokens} tokens"
                  + (f", {info.dropped} oldest messages left out" if info.dropped else "") + "</span>")
    rows = "".join(f"<li><b>{html.escape(KINDS.get(p.kind, (p.kind,))[0])}</b> {html.escape(p.label)}: "
                   f"{p.tokens} tokens</li>" for p in info.parts)
    return (f'<div class="pi-legend">{" · ".join(legend)}</div>'
            + (f'<ul class="pi-parts">{rows}</ul>' if rows else "")
            + '<pre class="pi-text" style="white-space:pre-wrap;max-height:480px;overflow:auto">'
            + "".join(pieces) + "</pre>")


def wire(runtime: Runtime, show: gr.Button, view: gr.HTML, panel: gr.Accordion, chat_id: gr.State) -> None:
    def inspect(current, request: gr.Request):
        space = runtime.users.get(getattr(request, "username", None))
        return as_html(last_prompt.last(space.chats.folder, current))

    show.click(inspect, chat_id, view, api_name="prompt_inspect")
    panel.expand(inspect, chat_id, view, api_name="prompt_inspect_open", show_progress="hidden")
