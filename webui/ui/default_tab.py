"""Default tab: a prompt box and the model's continuation side by side (Text
Generation WebUI's "Default" tab).  Unlike the Notebook, the prompt stays as written:
the reply goes to its own box, so the same prompt can be run again and again."""

from __future__ import annotations

import gradio as gr

from webui.runtime import Runtime
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
        with gr.Column():
            output = gr.Textbox(label="Output", lines=22, max_lines=40, elem_id="default-output",
                                interactive=False, buttons=["copy"])
            stats = gr.Markdown(elem_id="default-stats")

    def run(text: str, params, request: gr.Request):
        for written, status in completion(runtime, text, params, request):
            yield written, gr.skip() if status is None else status

    event = generate.click(run, [prompt, shared.params], [output, stats], api_name="default_generate",
                           **MODEL_GROUP)
    count.click(token_counter(runtime), prompt, stats, api_name="default_count_tokens")
    stop.click(stop_handler(runtime), None, stats, api_name="default_stop", cancels=[event],
               concurrency_limit=None)
