"""Chat tab: instruct-mode chat through the model's own chat template.

The conversation lives in a per-session gr.State as plain {"role", "content"} dicts;
the Chatbot only displays it, so data flows one way: state -> runtime -> display.
"""

from __future__ import annotations

import gradio as gr

from webui.generation.engine import GenerationError
from webui.runtime import Runtime
from webui.ui.common import MODEL_GROUP, Shared, session_id, stop_handler, to_params


def render(runtime: Runtime, shared: Shared) -> None:
    history = gr.State([])
    with gr.Row():
        with gr.Column(scale=4):
            chatbot = gr.Chatbot(
                label="Chat", height=520, allow_tags=False, sanitize_html=True,
                elem_id="chatbot", feedback_options=None,
                buttons=["copy", "copy_all"],  # no "share": it would post to an outside site
            )
            with gr.Row():
                message = gr.Textbox(
                    placeholder="Send a message (Enter); Shift+Enter for a new line",
                    show_label=False, scale=6, lines=2, elem_id="chat-input",
                )
                send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
            with gr.Row():
                stop = gr.Button("Stop", variant="stop", elem_id="chat-stop")
                regenerate = gr.Button("Regenerate", elem_id="chat-regenerate")
                clear = gr.Button("Clear", elem_id="chat-clear")
            stats = gr.Markdown(elem_id="chat-stats")
        with gr.Column(scale=1):
            system = gr.Textbox(label="System prompt", lines=6, elem_id="chat-system")

    def respond(turns: list, system_text: str, params, request: gr.Request):
        """Stream the assistant's reply to `turns` (which ends with a user message)."""
        turns = [*turns, {"role": "assistant", "content": ""}]
        yield turns, turns, "Generating…"
        try:
            stream = runtime.chat(session_id(request), turns[:-1], system_text or "", to_params(params))
            for piece in stream:
                turns[-1] = {"role": "assistant", "content": turns[-1]["content"] + piece}
                yield turns, turns, gr.skip()
        except GenerationError as exc:
            turns = turns[:-1] if not turns[-1]["content"] else turns
            yield turns, turns, f"**Error:** {exc}"
            return
        yield turns, turns, stream.stats.summary() if stream.stats else ""

    def send_message(text: str, turns: list, system_text: str, params, request: gr.Request):
        if not text or not text.strip():
            yield turns, turns, "Type a message first.", text
            return
        turns = [*turns, {"role": "user", "content": text}]
        for shown, state, note in respond(turns, system_text, params, request):
            yield shown, state, note, ""

    def regenerate_reply(turns: list, system_text: str, params, request: gr.Request):
        if not turns or turns[-1]["role"] != "assistant":
            yield turns, turns, "Nothing to regenerate."
            return
        yield from respond(turns[:-1], system_text, params, request)

    inputs = [message, history, system, shared.params]
    outputs = [chatbot, history, stats, message]
    send_event = send.click(send_message, inputs, outputs, api_name="chat_send", **MODEL_GROUP)
    submit_event = message.submit(send_message, inputs, outputs, api_name="chat_submit", **MODEL_GROUP)
    regen_event = regenerate.click(
        regenerate_reply, [history, system, shared.params], [chatbot, history, stats],
        api_name="chat_regenerate", **MODEL_GROUP,
    )
    # Stop runs outside the model group (it must not wait for the reply it stops) and
    # also drops this session's not-yet-started requests from Gradio's queue.
    stop.click(
        stop_handler(runtime), None, stats, api_name="chat_stop",
        cancels=[send_event, submit_event, regen_event], concurrency_limit=None,
    )
    clear.click(lambda: ([], [], ""), None, [chatbot, history, stats], api_name="chat_clear")
