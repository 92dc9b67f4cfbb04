"""Prompt viewer: a tab showing the exact prompt last sent to the model.

It records, for each request, the token ids the model is given (after the chat
template, extensions' changes and truncation to the context window), decoded
without hiding special tokens, so you see precisely what the model saw.

Each signed-in user sees the last prompt of their own requests (the chat and the
Notebook put the user's name in `state["user"]`); API requests, which carry no user,
are recorded for the local user (no name).
"""

import time

import gradio as gr

from webui.extensions import hookimpl

params = {
    "display_name": "Prompt",
    "is_tab": True,
}

# user name (None: the local user) -> the last request seen for them; filled on the
# model thread, read by the tab.
last: dict = {}


@hookimpl
def logits_processor_modifier(processor_list, input_ids, tokenizer, state):
    # Called once per request, with the ids the model is about to get.
    ids = input_ids[0].tolist()
    state = state or {}
    last[state.get("user")] = {
        "prompt": tokenizer.decode(ids, skip_special_tokens=False),
        "tokens": len(ids),
        "mode": state.get("mode", ""),
        "at": time.strftime("%H:%M:%S"),
    }


def describe(user=None):
    record = last.get(user)
    if not record:
        return "Nothing has been sent to the model yet.", ""
    return f"{record['tokens']} tokens, {record['mode']} request at {record['at']}", record["prompt"]


def refresh_for_user(request: gr.Request):
    return describe(getattr(request, "username", None))


def ui():
    gr.Markdown("The exact text of the last prompt the model received, special tokens included.")
    summary = gr.Markdown(describe()[0], elem_id="prompt-viewer-summary")
    prompt = gr.Code(describe()[1], language=None, interactive=False, label="Prompt", elem_id="prompt-viewer-text")
    refresh = gr.Button("Refresh", elem_id="prompt-viewer-refresh")
    refresh.click(refresh_for_user, None, [summary, prompt], api_name="prompt_viewer_refresh")
    # Opening the tab shows the newest prompt: ui() is built inside the extension's own
    # tab (webui/ui/extensions_ui.py), the block being filled while it runs.
    tab = gr.context.Context.block
    if isinstance(tab, gr.Tab):
        tab.select(refresh_for_user, None, [summary, prompt], api_name="prompt_viewer_open",
                   show_progress="hidden")
