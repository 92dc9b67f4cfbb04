"""The owner's panel for which tools each signed-in user may use (webui/tools/access.py).

Shown only to the owner, and only with several users; every handler checks again that
the caller is the owner (a hidden panel is not a permission), and that the user and
tool names are ones this server has, before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from webui.runtime import Runtime


@dataclass
class AccessPanel:
    group: gr.Group
    user: gr.Dropdown
    tools: gr.CheckboxGroup
    save: gr.Button
    note: gr.Markdown


def panel() -> AccessPanel:
    with gr.Group(visible=False, elem_id="tools-access") as group:
        # Custom values reach the handler, which names what it refuses (the choices are no check).
        user = gr.Dropdown([], label="Who may use which tools (owner)", allow_custom_value=True,
                           elem_id="tools-access-user")
        tools = gr.CheckboxGroup([], label="Tools this user may use", elem_id="tools-access-tools")
        save = gr.Button("Save", size="sm", elem_id="tools-access-save")
        note = gr.Markdown(elem_id="tools-access-note")
    return AccessPanel(group, user, tools, save, note)


def others(runtime: Runtime) -> list[str]:
    """The signed-in users the owner chooses for (everyone but the owner)."""
    registry = runtime.tools
    names = [name for name, _ in runtime.settings.auth_pairs()] if runtime.settings.has_auth else []
    return [name for name in names if registry is None or name != registry.access.owner]


def wire(runtime: Runtime, access: AccessPanel, on_load: list) -> None:
    registry = runtime.tools

    def owner(request: gr.Request | None) -> bool:
        user = getattr(request, "username", None)
        return registry is not None and registry.access.multi_user and registry.access.is_owner(user)

    def checked_owner(request: gr.Request | None) -> None:
        if not owner(request):
            raise gr.Error("only the owner chooses who may use which tools")

    def all_tools() -> list[str]:
        return list(registry.index()) if registry is not None else []

    def load(request: gr.Request) -> dict:
        if not owner(request):
            return {access.group: gr.update(visible=False)}
        return {access.group: gr.update(visible=True), access.user: gr.update(choices=others(runtime), value=None),
                access.tools: gr.update(choices=all_tools(), value=[])}

    def pick(user, request: gr.Request):
        checked_owner(request)
        if user not in others(runtime):
            return gr.update(value=[])
        names = all_tools()
        allowed = registry.access.allowed(user, set(names))
        return gr.update(choices=names, value=[n for n in names if n in allowed])

    def save(user, tools, request: gr.Request) -> str:
        checked_owner(request)
        if user not in others(runtime):
            raise gr.Error("choose one of this server's users")
        known = set(all_tools())
        chosen = [name for name in tools or [] if isinstance(name, str) and name in known]
        registry.access.set_allowed(user, chosen)
        return f"Saved: {user} may use {', '.join(chosen) or 'no tools'}."

    on_load.append((load, [access.group, access.user, access.tools]))
    access.user.input(pick, [access.user], access.tools, api_name="tools_access_pick")
    access.save.click(save, [access.user, access.tools], access.note, api_name="tools_access_save")
