"""Notebook tab: free text completion; the model continues whatever is in the box."""

from __future__ import annotations

import gradio as gr

from webui.generation.engine import GenerationError
from webui.runtime import Runtime
from webui.ui.common import MODEL_GROUP, Shared, session_id, stop_handler, to_params


def render(runtime: Runtime, shared: Shared) -> None:
    text = gr.Textbox(
        label="Notebook", lines=22, max_lines=40, elem_id="notebook-text",
        placeholder="Write the start of a text; Generate continues it.",
    )
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_id="notebook-generate")
        stop = gr.Button("Stop", variant="stop", elem_id="notebook-stop")
    stats = gr.Markdown(elem_id="notebook-stats")

    def continue_text(prompt: str, params, request: gr.Request):
        if not prompt:
            yield prompt, "Write something first."
            return
        output = prompt
        yield output, "Generating…"
        try:
            stream = runtime.stream(session_id(request), prompt, to_params(params))
            for piece in stream:
                output += piece
                yield output, gr.skip()
        except GenerationError as exc:
            yield output, f"**Error:** {exc}"
            return
        yield output, stream.stats.summary() if stream.stats else ""

    event = generate.click(
        continue_text, [text, shared.params], [text, stats], api_name="notebook_generate", **MODEL_GROUP
    )
    stop.click(
        stop_handler(runtime), None, stats, api_name="notebook_stop", cancels=[event], concurrency_limit=None,
    )
