"""The model picker on the chat screen: which model answers this browser tab.

With load on demand (webui/resident.py) a model picked while another is loaded is
loaded beside it and answers this tab only (Runtime.chosen, as a remote engine's
model does): two tabs talk to two models at once.  Otherwise the pick loads it in place
of the loaded model, with its saved settings, through the Model tab's Load
(webui/ui/model_tab.py's load_and_show).  Either changes what the server holds, so with
several users it is the owner's (webui/ui/guard.py: "chat_model_load" is not a per-user
event)."""

from __future__ import annotations

import gradio as gr

from webui.errors import AppError
from webui.runtime import Runtime
from webui.ui.common import MODEL_GROUP, Shared, session_id
from webui.ui.model_tab import load_and_show


def current_name(runtime: Runtime) -> str | None:
    loaded = runtime.models.current
    return loaded.name if loaded else None


def tab_model(runtime: Runtime, request) -> str | None:
    """The model this tab talks to: its own resident pick, else the loaded model."""
    chosen = runtime.chosen.get(session_id(request))
    if chosen is not None and runtime.resident is not None and runtime.resident.find(chosen) is not None:
        return chosen
    return current_name(runtime)


def render(runtime: Runtime, shared: Shared) -> None:
    picker = gr.Dropdown(runtime.models.names(), value=current_name(runtime), label="Model",
                         info="loads with its saved settings (Model tab: the options)", elem_id="chat-model")
    note = gr.Markdown(elem_id="chat-model-status")

    def load(name, params_state, request: gr.Request):
        skip = [gr.skip()] * (1 + len(shared.controls))
        if name is None or name == tab_model(runtime, request):
            return ["", *skip]
        session, current = session_id(request), current_name(runtime)
        if name == current:  # back to the loaded model
            runtime.chosen.choose(session, None)
            return ["", *skip]
        if runtime.settings.loads_on_demand and current is not None:
            try:  # beside the loaded one, for this tab (waits while it loads)
                runtime.resident_model(name, owner=True)
            except AppError as exc:
                return [f"**Load failed:** {exc}", *skip]
            runtime.chosen.choose(session, name)
            return [f"This tab talks to **{name}**; other tabs keep theirs (**{current}** is the loaded model).",
                    *skip]
        runtime.chosen.choose(session, None)
        status, *rest = load_and_show(runtime, shared, name, None, params_state, request)
        # A failure is said here (the previous model still answers; the picker shows it again).
        return [status if status.startswith("**Load failed") else "", *rest]

    def shown(request: gr.Request):
        return gr.Dropdown(value=tab_model(runtime, request))

    def wire() -> None:  # once the Parameters tab's controls exist
        event = picker.input(load, [picker, shared.params], [note, shared.params, *shared.controls],
                             api_name="chat_model_load", **MODEL_GROUP)
        event.then(shown, None, picker, show_progress="hidden", api_name="chat_model_shown")

    shared.later.append(wire)
    # Every page load: the models on disk now, and the one loaded now.
    shared.on_load.append((lambda request: {picker: gr.Dropdown(choices=runtime.models.names(),
                                                                value=tab_model(runtime, request))}, [picker]))
