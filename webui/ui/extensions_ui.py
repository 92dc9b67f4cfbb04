"""Where extensions' own UI goes: blocks under the chat, and tabs of their own.

Each extension's ui() (or registered tab) is built inside its own container; if it
raises, the extension is marked faulty and its half-built container is hidden, and
the rest of the page is built as usual.
"""

from __future__ import annotations

import gradio as gr

from webui.runtime import Runtime


def render_blocks(runtime: Runtime) -> None:
    """ui() of the extensions that are not tabs (params["is_tab"] false), under the chat."""
    host = runtime.extensions
    for extension in host.extensions:
        if "ui" in extension.impls and not extension.is_tab and extension.active:
            with gr.Column(elem_id=f"extension-{extension.name}", elem_classes="extension-block") as box:
                ok, _ = host.call_one(extension, "ui")
            if not ok:
                box.visible = False


def render_tabs(runtime: Runtime) -> None:
    """ui() of the extensions that are tabs, then tabs added through register_tabs."""
    host = runtime.extensions
    for extension in host.extensions:
        if "ui" in extension.impls and extension.is_tab and extension.active:
            with gr.Tab(extension.display_name, elem_id=f"extension-tab-{extension.name}") as tab:
                ok, _ = host.call_one(extension, "ui")
            if not ok:
                tab.visible = False
    for extension, title, render in host.tabs():
        with gr.Tab(title, elem_id=f"extension-tab-{extension.name}-{len(title)}") as tab:
            try:
                render(runtime)
            except Exception as exc:
                host.mark_faulty(extension, "register_tabs", exc)
                tab.visible = False
