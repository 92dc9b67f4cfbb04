"""The model picker on the chat screen: which model answers, and another one loaded from
there (with its saved settings) through the same path as the Model tab's Load
(webui/ui/model_tab.py's load_and_show).  Loading changes the server for every user, so
with several users it is the owner's (webui/ui/guard.py: "chat_model_load" is not a
per-user event)."""

from __future__ import annotations

import gradio as gr

from webui.runtime import Runtime
from webui.ui.common import MODEL_GROUP, Shared
from webui.ui.model_tab import load_and_show


def current_name(runtime: Runtime) -> str | None:
    loaded = runtime.models.current
    return loaded.name if loaded else None


def render(runtime: Runtime, shared: Shared) -> None:
    picker = gr.Dropdown(runtime.models.names(), value=current_name(runtime), label="Model",
                         info="loads with its saved settings (Model tab: the options)", elem_id="chat-model")
    note = gr.Markdown(elem_id="chat-model-status")

    def load(name, params_state, request: gr.Request):
        if name is None or name == current_name(runtime):
            return ["", gr.skip(), *[gr.skip()] * len(shared.controls)]
        status, *rest = load_and_show(runtime, shared, name, None, params_state, request)
        # A failure is said here (the previous model still answers; the picker shows it again).
        return [status if status.startswith("**Load failed") else "", *rest]

    def wire() -> None:  # once the Parameters tab's controls exist
        event = picker.input(load, [picker, shared.params], [note, shared.params, *shared.controls],
                             api_name="chat_model_load", **MODEL_GROUP)
        event.then(lambda: gr.Dropdown(value=current_name(runtime)), None, picker, show_progress="hidden",
                   api_name="chat_model_shown")

    shared.later.append(wire)
    # Every page load: the models on disk now, and the one loaded now.
    shared.on_load.append((lambda request: {picker: gr.Dropdown(choices=runtime.models.names(),
                                                                value=current_name(runtime))}, [picker]))
