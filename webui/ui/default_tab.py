"""Default tab: a prompt box and the model's continuation side by side (Text
Generation WebUI's "Default" tab).  Unlike the Notebook, the prompt stays as written:
the reply goes to its own box, so the same prompt can be run again and again.  The
token views (webui/ui/token_view.py) work on the reply and on the prompt."""

from __future__ import annotations

import gradio as gr

from webui.runtime import Runtime
from webui.ui import token_view
from webui.ui.common import MODEL_GROUP, Shared, stop_handler
from webui.ui.notebook_tab import completion, token_counter


def render(runtime: Runtime, shared: Shared) -> None:
    with gr.Row():
        with gr.Column():
            prompt = gr.Textbox(label="Input", lines=22, max_lines=40, elem_id="default-input",
                                placeholder="A prompt; Generate writes its continuation on the right.")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="default-generate")
                stop = gr.Button("Stop", variant="stop", elem_id="default-stop")
                count = gr.Button("Count tokens", elem_id="default-count")
            nxt = token_view.next_controls("default")
        with gr.Column():
            output = gr.Textbox(label="Output", lines=22, max_lines=40, elem_id="default-output",
                                interactive=False, buttons=["copy"])
            stats = gr.Markdown(elem_id="default-stats")
            view = token_view.controls("default")

    def run(text: str, params, show: bool, request: gr.Request):
        updates = completion(runtime, text, params, request, bool(show))
        yield from token_view.with_view(updates, show)

    event = generate.click(run, [prompt, shared.params, view.show], [output, stats, view.shown],
                           api_name="default_generate", **MODEL_GROUP)
    token_view.wire_reply(view, "default")
    next_event = token_view.wire_next(runtime, "default", prompt, shared.params, view, nxt)
    count.click(token_counter(runtime), prompt, stats, api_name="default_count_tokens")
    stop.click(stop_handler(runtime), None, stats, api_name="default_stop", cancels=[event, next_event],
               concurrency_limit=None)
