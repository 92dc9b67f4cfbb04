"""Markdown export: download one of your conversations as a Markdown file.

A native extension: it adds a tab through register_tabs and reads the signed-in
user's own conversations from the app's Runtime, so on a server shared by several
users each exports only their own chats.  One heading per turn, the text as the chat
shows it (a thinking model's thinking quoted above its answer).  The file goes through the app's private exports (webui/ui/exports.py): in
the user's own 0700 folder in Gradio's cache, removed after an hour or when the chat
is deleted, like the Chat tab's own exports.
"""

import re

import gradio as gr

from webui.chat.display import thought_title
from webui.ui.exports import Exports

params = {"display_name": "Export"}


def to_markdown(conversation, user_name: str = "You") -> str:
    lines = [f"# {conversation.title}", ""]
    for message in conversation.path():
        speaker = user_name if message.role == "user" else conversation.character
        text = message.content if message.visible is None else message.visible
        lines += [f"## {speaker}", "", *thinking_lines(message), text.strip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def thinking_lines(message) -> list[str]:
    """A thinking model's thinking, as a quoted section above its answer, titled as the
    chat titles its folded block."""
    if not message.reasoning:
        return []
    title = thought_title(message.reasoning_tokens, message.reasoning_seconds)
    quoted = [f"> {line}" if line.strip() else ">" for line in message.reasoning.strip().splitlines()]
    return [f"> **{title}**", ">", *quoted, ""]


def register_tabs(register):
    register("Export", render)


def render(runtime):
    gr.Markdown("Export one of your conversations as Markdown.")
    with gr.Row():
        chosen = gr.Dropdown([], label="Conversation", allow_custom_value=True, scale=4,
                             elem_id="markdown-export-chat")
        listing = gr.Button("↻ List", scale=0, min_width=80, elem_id="markdown-export-list")
    make = gr.Button("Export", elem_id="markdown-export-make")
    file = gr.File(label="Markdown file", interactive=False, elem_id="markdown-export-file")
    preview = gr.Code(language="markdown", interactive=False, label="Preview", elem_id="markdown-export-preview")
    exports = Exports(file.GRADIO_CACHE)

    def space(request):
        return runtime.users.get(getattr(request, "username", None))

    def list_chats(request: gr.Request):
        chats = space(request).chats.list()
        return gr.update(choices=[(c.label, c.id) for c in chats], value=chats[0].id if chats else None)

    def export(chat_id, request: gr.Request):
        user = space(request)
        try:
            conversation = user.chats.load(chat_id)  # the user's own listing: others' ids are unknown
        except ValueError as exc:
            raise gr.Error(str(exc)) from exc
        text = to_markdown(conversation, user.persona().name)
        stem = re.sub(r"[^A-Za-z0-9 ._-]", "_", conversation.title)[:60].strip() or "conversation"
        # source: the chat's own export name, so deleting the chat removes this file too
        path = exports.write(getattr(request, "username", None), f"{stem}.md", text, source=f"chat-{chat_id}.json")
        return text, path

    listing.click(list_chats, None, chosen, api_name="markdown_export_list")
    make.click(export, chosen, [preview, file], api_name="markdown_export")
