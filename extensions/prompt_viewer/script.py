"""Prompt viewer: a tab showing the exact prompt last sent to the model.

It records, for each request, the token ids the model is given (after the chat
template, extensions' changes and truncation to the context window), decoded
without hiding special tokens, so you see precisely what the model saw.

Note: the record is shared by everyone using this webui (the last request wins).
"""

import time

import gradio as gr

from webui.extensions import hookimpl

params = {
    "display_name": "Prompt",
    "is_tab": True,
}

# The last request seen: filled on the model thread, read by the tab.
last = {"prompt": "", "tokens": 0, "mode": "", "at": ""}


@hookimpl
def logits_processor_modifier(processor_list, input_ids, tokenizer, state):
    # Called once per request, with the ids the model is about to get.
    ids = input_ids[0].tolist()
    last.update(
        prompt=tokenizer.decode(ids, skip_special_tokens=False),
        tokens=len(ids),
        mode=(state or {}).get("mode", ""),
        at=time.strftime("%H:%M:%S"),
    )


def describe():
    if not last["at"]:
        return "Nothing has been sent to the model yet.", ""
    return f"{last['tokens']} tokens, {last['mode']} request at {last['at']}", last["prompt"]


def ui():
    gr.Markdown("The exact text of the last prompt the model received, special tokens included.")
    summary = gr.Markdown(describe()[0], elem_id="prompt-viewer-summary")
    prompt = gr.Code(describe()[1], language=None, interactive=False, label="Prompt", elem_id="prompt-viewer-text")
    refresh = gr.Button("Refresh", elem_id="prompt-viewer-refresh")
    refresh.click(describe, None, [summary, prompt], api_name="prompt_viewer_refresh")
