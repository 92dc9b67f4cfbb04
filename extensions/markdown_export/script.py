"""Markdown export: download the last conversation as a Markdown file.

It keeps the chat history it last saw (through history_modifier, which the chat
calls before each reply) and turns it into Markdown: one heading per speaker turn,
the text as written.  Both history shapes are understood: a list of
{"role", "content"} messages, and Text Generation WebUI's
{"internal": [...], "visible": [[user, bot], ...]}.

Note: the record is shared by everyone using this webui (the last chat wins).
"""

import tempfile
import time
from pathlib import Path

import gradio as gr

params = {
    "display_name": "Export",
    "is_tab": True,
    "user_name": "You",
    "bot_name": "Assistant",
}

last = {"history": None}


def history_modifier(history):
    last["history"] = history
    return history


def _text(content):
    if isinstance(content, list):  # message parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def turns(history):
    """(speaker, text) pairs from either history shape."""
    if isinstance(history, dict):
        pairs = history.get("visible") or history.get("internal") or []
        out = []
        for pair in pairs:
            if isinstance(pair, (list, tuple)) and len(pair) == 2:
                if pair[0]:
                    out.append((params["user_name"], _text(pair[0])))
                if pair[1]:
                    out.append((params["bot_name"], _text(pair[1])))
        return out
    names = {"user": params["user_name"], "assistant": params["bot_name"], "system": "System"}
    return [(names.get(m.get("role"), str(m.get("role"))), _text(m.get("content")))
            for m in history or [] if isinstance(m, dict)]


def to_markdown(history, title="Conversation"):
    lines = [f"# {title}", ""]
    for speaker, text in turns(history):
        lines += [f"## {speaker}", "", text.strip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def export():
    if not last["history"]:
        return "No conversation yet: chat first, then export.", None
    text = to_markdown(last["history"], f"Conversation, {time.strftime('%Y-%m-%d %H:%M')}")
    folder = Path(tempfile.mkdtemp(prefix="webui-export-"))
    path = folder / f"conversation-{time.strftime('%Y%m%d-%H%M%S')}.md"
    path.write_text(text, encoding="utf-8")
    return text, str(path)


def ui():
    gr.Markdown("Export the last conversation as Markdown.")
    make = gr.Button("Export last conversation", elem_id="markdown-export-make")
    file = gr.File(label="Markdown file", interactive=False, elem_id="markdown-export-file")
    preview = gr.Code(language="markdown", interactive=False, label="Preview", elem_id="markdown-export-preview")
    make.click(export, None, [preview, file], api_name="markdown_export")
