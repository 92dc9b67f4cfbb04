"""Inspect tab: the logit lens, attention rows and hidden-state norms of a text.

Wiring only: the analysis is webui/inspect/lens.py, the job on the model
webui/inspect/service.py (through Runtime.inspect).  Run takes the model from every
user for the pass, so it and Stop are the owner's (webui/ui/guard.py: not PER_USER);
the views of a result read only this session's own (PER_USER).

The result is kept in this browser session's gr.State; clicking a cell of the lens
table, or picking another head, redraws from it without running the model again.  The
tables are plain-text cells coloured by a style (no HTML from the model's tokens ever
reaches the page as markup).
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from webui.errors import AppError
from webui.inspect.lens import MAX_CHARS, MAX_TOKENS, TOP, InspectCancelled, InspectUnsupported, Lens, percent
from webui.inspect.service import InspectService, remote_refusal
from webui.runtime import Runtime
from webui.ui.common import Shared, session_id
from webui.ui.token_html import visible

AVERAGE = "average over heads"
READY = (f"Enter a text (up to {MAX_TOKENS} tokens) and press Run: each layer's likeliest next token at each "
         "position (the logit lens), the attention of one position, and the hidden states' norms.")


def service_of(runtime: Runtime) -> InspectService:
    if runtime.inspect is None:
        runtime.inspect = InspectService(runtime.models)
    return runtime.inspect


def remote_reason(runtime: Runtime, owner: str) -> str | None:
    """Why not, when this browser session talks to a remote engine's model (Chat tab)."""
    chosen = runtime.chosen.get(owner)
    loaded = runtime.models.current
    if chosen is not None and (loaded is None or chosen != loaded.name) and runtime.remotes.model(chosen):
        return remote_refusal(chosen)
    return None


def refused(runtime: Runtime, owner: str) -> str | None:
    """Why this browser session cannot inspect its model; None when it can."""
    return remote_reason(runtime, owner) or service_of(runtime).refused()


def note_text(runtime: Runtime, owner: str) -> str:
    reason = refused(runtime, owner)
    return f"⚠️ **The Inspect tab cannot run here:** {reason}." if reason else READY


def _shade(p: float, rgb: str) -> str:
    # Strong colour for likely cells, none for unlikely ones; the text stays readable in
    # both themes because the strongest shade is still translucent.
    return f"background-color: rgba({rgb}, {0.08 + 0.72 * max(0.0, min(1.0, p)):.2f})"


def column_names(lens: Lens, count: int) -> list[str]:
    """Unique headers: the position, then the token as it reads."""
    return [f"{i} {visible(lens.tokens[i])}" for i in range(count)]


def lens_table(lens: Lens):
    """Layers (rows, embeddings first) x positions: each cell the top token and its probability."""
    columns = column_names(lens, len(lens.ids))
    rows = [[name, *(f"{visible(lens.vocab[int(lens.top_ids[r, p, 0])])} {percent(float(lens.top_probs[r, p, 0]))}"
                     for p in range(len(lens.ids)))]
            for r, name in enumerate(lens.layer_names)]
    frame = pd.DataFrame(rows, columns=["layer", *columns])
    shades = pd.DataFrame([["", *(_shade(float(lens.top_probs[r, p, 0]), "255, 140, 0") for p in range(len(lens.ids)))]
                           for r in range(len(rows))], columns=frame.columns)
    return frame.style.apply(lambda _: shades, axis=None)


def attention_table(lens: Lens, head: int | None):
    """Layers x key positions: the weights the token at `lens.position` gives each."""
    weights = lens.attention_rows(head)
    columns = column_names(lens, lens.position + 1)
    rows = [[f"layer {i + 1}", *(f"{w:.3f}" for w in weights[i])] for i in range(len(weights))]
    frame = pd.DataFrame(rows, columns=["layer", *columns])
    shades = pd.DataFrame([["", *(_shade(float(w), "60, 130, 230") for w in weights[i])] for i in range(len(weights))],
                          columns=frame.columns)
    return frame.style.apply(lambda _: shades, axis=None)


def norms_frame(lens: Lens) -> pd.DataFrame:
    at = lens.norms[:, lens.position]
    return pd.DataFrame({"layer": list(range(len(lens.norms))), "name": lens.layer_names,
                         "mean norm": [round(v, 3) for v in lens.mean_norms()],
                         f"norm at position {lens.position}": [round(float(v), 3) for v in at]})


def top_frame(lens: Lens | None, row: int, position: int) -> pd.DataFrame:
    if lens is None:
        return pd.DataFrame(columns=["token", "probability"])
    return pd.DataFrame([(visible(text), percent(p)) for text, p in lens.top(row, position)],
                        columns=["token", "probability"])


def head_choices(lens: Lens) -> list[str]:
    return [AVERAGE, *(f"head {h}" for h in range(lens.attention.shape[1]))]


def head_of(choice: object) -> int | None:
    return int(choice.split()[1]) if isinstance(choice, str) and choice.startswith("head ") else None


def cell_label(lens: Lens, row: int, position: int) -> str:
    return (f"**{lens.layer_names[row]}, after position {position}** (“{visible(lens.tokens[position])}”): "
            f"top {TOP} next tokens")


def summary(lens: Lens) -> str:
    return (f"{len(lens.ids)} tokens, {len(lens.layer_names) - 1} layers, read in {lens.seconds:.2f} s. "
            f"Attention shown for position {lens.position} (“{visible(lens.tokens[lens.position])}”).")


def render(runtime: Runtime, shared: Shared, tab: gr.Tab | None = None) -> None:
    service = service_of(runtime)
    note = gr.Markdown(READY, elem_id="inspect-note")
    with gr.Row():
        text = gr.Textbox(label="text", lines=4, max_length=MAX_CHARS, scale=3, elem_id="inspect-text",
                          info=f"at most {MAX_TOKENS} tokens (the model's start token included)")
        with gr.Column(scale=1):
            position = gr.Number(-1, label="attention of position (-1: the last token)", precision=0,
                                 elem_id="inspect-position")
            with gr.Row():
                run = gr.Button("Run", variant="primary", elem_id="inspect-run")
                stop = gr.Button("Stop", elem_id="inspect-stop")
    status = gr.Markdown(elem_id="inspect-status")
    lens_view = gr.Dataframe(label="Logit lens: each layer's likeliest next token (click a cell for its top 10)",
                             interactive=False, wrap=False, elem_id="inspect-lens", max_height=520)
    with gr.Row():
        with gr.Column(scale=1):
            picked = gr.Markdown(elem_id="inspect-cell")
            with gr.Row():
                row_pick = gr.Number(0, label="layer (0: embeddings)", precision=0, minimum=0)
                position_pick = gr.Number(0, label="position", precision=0, minimum=0)
                show = gr.Button("Show", scale=0, min_width=60)
            top = gr.Dataframe(top_frame(None, 0, 0), label="top 10", interactive=False, elem_id="inspect-top")
        with gr.Column(scale=1):
            norms = gr.Dataframe(label="hidden-state norms (L2), per layer", interactive=False,
                                 elem_id="inspect-norms")
            plot = gr.LinePlot(pd.DataFrame({"layer": [], "mean norm": []}), x="layer", y="mean norm",
                               title="mean hidden-state norm per layer", elem_id="inspect-norms-plot")
    head = gr.Dropdown([AVERAGE], value=AVERAGE, label="attention heads", elem_id="inspect-head")
    attention = gr.Dataframe(label="Attention of the chosen position to each earlier one, per layer",
                             interactive=False, wrap=False, elem_id="inspect-attention")
    result = gr.State(None)

    def run_inspection(request: gr.Request, text_, position_, progress=gr.Progress()):  # noqa: B008 - Gradio's injection idiom
        remote = remote_reason(runtime, session_id(request))
        if remote:
            raise InspectUnsupported(remote)
        try:
            lens = service.run(text_, position_, on_layer=lambda i, n: progress(i / n, desc=f"layer {i + 1} of {n}"))
        except InspectCancelled as exc:
            return (f"Stopped ({exc}).", None, top_frame(None, 0, 0), "", None, None,
                    gr.Dropdown(choices=[AVERAGE], value=AVERAGE), None, None)
        last = len(lens.layer_names) - 1
        return (summary(lens), lens_table(lens), top_frame(lens, last, lens.position),
                cell_label(lens, last, lens.position), norms_frame(lens),
                pd.DataFrame({"layer": list(range(last + 1)), "mean norm": lens.mean_norms()}),
                gr.Dropdown(choices=head_choices(lens), value=AVERAGE), attention_table(lens, None), lens)

    def show_cell(lens: Lens | None, row, position_):
        if lens is None:
            raise AppError("run an inspection first")
        if not (isinstance(row, (int, float)) and 0 <= row < len(lens.layer_names)):
            raise AppError(f"layer: pick 0 (the embeddings) to {len(lens.layer_names) - 1}", param="layer")
        if not (isinstance(position_, (int, float)) and 0 <= position_ < len(lens.ids)):
            raise AppError(f"position: pick 0 to {len(lens.ids) - 1}", param="position")
        return cell_label(lens, int(row), int(position_)), top_frame(lens, int(row), int(position_))

    def on_click(lens: Lens | None, event: gr.SelectData):
        row, column = event.index
        if lens is None or column == 0:  # the layer's name: nothing to show
            return gr.update(), gr.update(), gr.update(), gr.update()
        label, table = show_cell(lens, row, column - 1)
        return label, table, row, column - 1

    def show_heads(lens: Lens | None, choice):
        return None if lens is None else attention_table(lens, head_of(choice))

    outputs = [status, lens_view, top, picked, norms, plot, head, attention, result]
    run.click(run_inspection, [text, position], outputs, api_name="inspect_run",
              concurrency_id="inspect", concurrency_limit=1)
    stop.click(lambda: "Stopping before the next layer." if service.stop() else "Nothing is running.",
               None, status, api_name="inspect_stop", concurrency_limit=None)
    lens_view.select(on_click, result, [picked, top, row_pick, position_pick], api_name="inspect_click",
                     show_progress="hidden")
    show.click(show_cell, [result, row_pick, position_pick], [picked, top], api_name="inspect_cell")
    head.change(show_heads, [result, head], attention, api_name="inspect_heads", show_progress="hidden")

    def current_note(request: gr.Request) -> str:
        return note_text(runtime, session_id(request))

    if tab is not None:  # the model may have changed since the page loaded
        tab.select(current_note, None, note, api_name="inspect_note", show_progress="hidden")
    shared.on_load.append((lambda request: {note: current_note(request)}, [note]))
