"""Model tab: which model this browser tab's Chat and Notebook talk to, when remote
engines are configured (docs/SCALING.md).  Wiring only: the choice is kept in
Runtime.chosen under the tab's session id, the same id Stop uses, so the Chat and
Notebook need no new input; the name is checked against the engines' listing.
"""

from __future__ import annotations

import gradio as gr

from webui.remote.client import RemoteError
from webui.runtime import Runtime
from webui.ui.common import session_id

LOCAL = "(the local model)"


def describe(runtime: Runtime, name: str | None) -> str:
    problems = "".join(f"\n\n⚠️ {p}" for p in runtime.remotes.problems.values())
    if name is None:
        return "Chat and Notebook use the local model loaded above." + problems
    engine = runtime.remotes.models().get(name)
    if engine is None:
        return f"**{name}** is no longer listed by any remote engine." + problems
    honoured = ", ".join(sorted(engine.capabilities.samplers or ()))
    return (f"Chat and Notebook talk to **{name}** on remote engine **{engine.name}** ({engine.config.kind}). "
            f"It samples on its side and honours only: {honoured}; other Parameters-tab values are not sent. "
            "It applies its own chat template: chat mode (every action), chat-instruct and instruct replies "
            "work; continue, impersonate or a reply prefix in instruct mode need a local model." + problems)


def choices(runtime: Runtime) -> list[str]:
    try:
        return [LOCAL, *runtime.remotes.models()]
    except (RemoteError, TimeoutError):
        return [LOCAL]


def render(runtime: Runtime) -> None:
    with gr.Row():
        talk_to = gr.Dropdown(choices(runtime), value=LOCAL, label="Talk to (this browser tab)", scale=3,
                              info="the local model, or a model a remote engine serves", elem_id="model-talk-to")
        refresh = gr.Button("↻", scale=0, min_width=40)
    note = gr.Markdown(describe(runtime, None), elem_id="model-talk-to-note")

    def choose(name, request: gr.Request):
        if name == LOCAL or name is None:
            runtime.chosen.choose(session_id(request), None)
            return describe(runtime, None)
        if not isinstance(name, str) or name not in runtime.remotes.models():
            raise gr.Error("that model is not served by any remote engine")
        runtime.chosen.choose(session_id(request), name)
        return describe(runtime, name)

    def relist():
        runtime.remotes.models(fresh=True)
        return gr.Dropdown(choices=choices(runtime))

    talk_to.input(choose, talk_to, note, api_name="model_talk_to")
    refresh.click(relist, None, talk_to, api_name="model_remote_list")
