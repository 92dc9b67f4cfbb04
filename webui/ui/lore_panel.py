"""The chat's "Lorebooks" and "Author's note" panels, beside the character settings.

Lorebooks: import a SillyTavern world-info JSON, choose where it applies (all chats, the
character, this chat), export it unchanged, delete it, and edit an entry's keys and
text.  Author's note: its text, depth, frequency and role, kept with the open chat.
Everything is the signed-in user's own (webui/userdata.py); the books and the chat come
from the server's state and listings, never from a path the browser sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from webui.chat import actions
from webui.chat.chat_lore import AuthorsNote, ChatLore
from webui.chat.lore import is_regex_key
from webui.chat.lorebooks import MAX_BOOK_BYTES
from webui.errors import AppError
from webui.paths import NameRefused
from webui.ui.exports import Exports

if TYPE_CHECKING:
    from webui.runtime import Runtime

ALL, CHARACTER, CHAT = "all chats", "this character", "this chat"
_ANY = object()  # listed(): no character to check
ROLES = ["system", "user", "assistant"]


@dataclass
class LorePanel:
    upload: gr.UploadButton
    books: gr.Dropdown
    scope: gr.CheckboxGroup
    export: gr.Button
    exported: gr.File
    delete: gr.Button
    entries: gr.Dropdown
    keys: gr.Textbox
    content: gr.Textbox
    constant: gr.Checkbox
    order: gr.Number
    save_entry: gr.Button
    new_entry: gr.Button
    status: gr.Markdown
    note: gr.Textbox
    depth: gr.Number
    frequency: gr.Number
    role: gr.Radio
    save_note: gr.Button
    note_status: gr.Markdown


def render() -> LorePanel:
    with gr.Accordion("Lorebooks", open=False, elem_id="chat-lorebooks"):
        upload = gr.UploadButton("Import lorebook (SillyTavern JSON)", file_types=[".json"], elem_id="lore-import")
        books = gr.Dropdown([], label="Lorebook", allow_custom_value=True, elem_id="lore-books")
        scope = gr.CheckboxGroup([ALL, CHARACTER, CHAT], label="Use it in", elem_id="lore-scope")
        with gr.Row():
            export = gr.Button("Export", size="sm", elem_id="lore-export")
            delete = gr.Button("Delete", size="sm", variant="stop", elem_id="lore-delete")
        exported = gr.File(label="Exported", interactive=False, visible=False, elem_id="lore-exported")
        entries = gr.Dropdown([], label="Entry", allow_custom_value=True, elem_id="lore-entries")
        keys = gr.Textbox("", label="Keys (comma-separated; /regex/i for a pattern)", elem_id="lore-keys")
        content = gr.Textbox("", label="Content", lines=4, elem_id="lore-content")
        with gr.Row():
            constant = gr.Checkbox(False, label="Constant", elem_id="lore-constant")
            order = gr.Number(100, label="Order", precision=0, elem_id="lore-order")
        with gr.Row():
            save_entry = gr.Button("Save entry", size="sm", elem_id="lore-save-entry")
            new_entry = gr.Button("New entry", size="sm", elem_id="lore-new-entry")
        status = gr.Markdown(elem_id="lore-status")
    with gr.Accordion("Author's note", open=False, elem_id="chat-authors-note"):
        note = gr.Textbox("", label="Note (kept with this chat)", lines=3, elem_id="note-text")
        with gr.Row():
            depth = gr.Number(4, label="Depth", precision=0, minimum=0, maximum=1000, elem_id="note-depth")
            frequency = gr.Number(1, label="Every N user messages (0: off)", precision=0, minimum=0, maximum=1000,
                                  elem_id="note-frequency")
        role = gr.Radio(ROLES, value="system", label="Role", elem_id="note-role")
        save_note = gr.Button("Save note", size="sm", elem_id="note-save")
        note_status = gr.Markdown(elem_id="note-status")
    return LorePanel(upload, books, scope, export, exported, delete, entries, keys, content, constant, order,
                     save_entry, new_entry, status, note, depth, frequency, role, save_note, note_status)


def _entry_choices(raw: dict) -> list[tuple[str, str]]:
    entries = raw.get("entries")
    if not isinstance(entries, dict):
        return []
    return [(f"{uid}: {(e.get('comment') or ', '.join(map(str, e.get('key') or [])) or '(no keys)')[:60]}", uid)
            for uid, e in entries.items() if isinstance(e, dict)]


def wire(runtime: Runtime, panel: LorePanel, chat_id: gr.State, character: gr.Dropdown) -> None:
    exports = Exports(panel.exported.GRADIO_CACHE)  # private per user (webui/ui/exports.py)

    def space_of(request: gr.Request):
        return runtime.users.get(getattr(request, "username", None))

    def listed(space, name=None, who=_ANY) -> None:
        """Refuse a book this user does not have (no book chosen is fine) and, where the
        event names one, a character that is not theirs."""
        try:
            if name not in (None, ""):
                space.lorebooks.entries(name)  # NameRefused for a name not in the user's library
            if who is not _ANY and who not in space.characters.names():
                raise NameRefused("unknown character: choose one from the list", param="character")
        except (AppError, ValueError) as exc:
            raise gr.Error(str(exc)) from exc

    def chat_of(space, current, who):
        try:
            return actions.open_chat(space, current if isinstance(current, str) else None, who)
        except (AppError, ValueError) as exc:
            raise gr.Error(str(exc)) from exc

    def scope_of(space, name, current, who) -> list[str]:
        library = space.lorebooks
        if name not in library.names():
            return []
        attached = library.attached()
        chosen = [ALL] if name in attached["global"] else []
        chosen += [CHARACTER] if name in attached["characters"].get(who, []) else []
        if isinstance(current, str) and space.chats.has(current):
            lore = space.chats.load(current).lore
            chosen += [CHAT] if lore and name in lore.books else []
        return chosen

    def book_view(space, name, current, who, note: str = "") -> tuple:
        names = space.lorebooks.names()
        name = name if name in names else (names[0] if names else None)
        choices = _entry_choices(space.lorebooks.raw(name)) if name else []
        return (gr.update(choices=names, value=name), scope_of(space, name, current, who),
                gr.update(choices=choices, value=None), "", "", False, 100, note)

    book_outputs = [panel.books, panel.scope, panel.entries, panel.keys, panel.content, panel.constant,
                    panel.order, panel.status]

    def on_refresh(name, current, who, request: gr.Request):
        space = space_of(request)
        listed(space, name, who)
        return book_view(space, name, current, who)

    def on_import(file, current, who, request: gr.Request):
        space = space_of(request)
        listed(space, who=who)
        path = Path(getattr(file, "name", file) or "")
        if not path.is_file():
            raise gr.Error("invalid upload: choose a lorebook file (.json) to import")
        if path.stat().st_size > MAX_BOOK_BYTES:
            raise gr.Error(f"the file is larger than {MAX_BOOK_BYTES >> 20} MB")
        try:
            name = space.lorebooks.import_bytes(path.read_bytes(), path.name)
        except (AppError, ValueError) as exc:
            raise gr.Error(str(exc)) from exc
        count = len(space.lorebooks.entries(name))
        return book_view(space, name, current, who, f"Imported **{name}** ({count} entries). Tick where to use it.")

    def on_scope(name, chosen, current, who, request: gr.Request):
        space = space_of(request)
        listed(space, who=who)
        chosen = chosen if isinstance(chosen, list) else []
        try:
            space.lorebooks.attach(name, "global", ALL in chosen)
            space.lorebooks.attach(name, "character", CHARACTER in chosen, who)
            conversation = chat_of(space, current, who)
            kept = conversation.lore or ChatLore()
            books = [b for b in kept.books if b != name] + ([name] if CHAT in chosen else [])
            if books != kept.books:
                conversation.lore = kept.model_copy(update={"books": books})
                space.chats.save(conversation)
        except (AppError, ValueError) as exc:
            raise gr.Error(str(exc)) from exc
        where = ", ".join(chosen) or "nowhere"
        return f"**{name}** is used in: {where}."

    def on_export(name, request: gr.Request):
        space = space_of(request)
        try:
            data = space.lorebooks.export(name)
        except (AppError, ValueError) as exc:
            raise gr.Error(str(exc)) from exc
        return gr.update(value=exports.write(getattr(request, "username", None), f"{name}.json", data), visible=True)

    def on_delete(name, current, who, request: gr.Request):
        space = space_of(request)
        listed(space, who=who)
        try:
            space.lorebooks.delete(name)
        except (AppError, ValueError) as exc:
            raise gr.Error(str(exc)) from exc
        return book_view(space, None, current, who, f"Deleted **{name}**.")

    def on_entry(name, uid, request: gr.Request):
        space = space_of(request)
        listed(space, name)
        if uid in (None, ""):
            return "", "", False, 100
        if name in (None, ""):
            raise gr.Error("unknown entry: choose a lorebook first")
        entry = (space.lorebooks.raw(name).get("entries") or {}).get(uid) if isinstance(uid, str) else None
        if not isinstance(entry, dict):
            raise gr.Error(f"unknown entry of lorebook {name}: choose one from the list")
        return (", ".join(map(str, entry.get("key") or [])), str(entry.get("content") or ""),
                bool(entry.get("constant")), entry.get("order") if isinstance(entry.get("order"), int) else 100)

    def save_entry(name, uid, keys, content, constant, order, current, who, request, new: bool):
        space = space_of(request)
        listed(space, name, who)
        try:
            uid = space.lorebooks.save_entry(name, None if new else uid, _split_keys(keys), str(content or ""),
                                             bool(constant), int(order or 0))
        except (AppError, ValueError, TypeError) as exc:
            raise gr.Error(str(exc)) from exc
        view = book_view(space, name, current, who, f"Saved entry {uid} of **{name}**.")
        return (*view[:2], gr.update(choices=_entry_choices(space.lorebooks.raw(name)), value=uid),
                keys, content, constant, order, view[-1])

    def on_save_entry(name, uid, keys, content, constant, order, current, who, request: gr.Request):
        return save_entry(name, uid, keys, content, constant, order, current, who, request, new=False)

    def on_new_entry(name, uid, keys, content, constant, order, current, who, request: gr.Request):
        return save_entry(name, uid, keys, content, constant, order, current, who, request, new=True)

    def on_note_view(current, who, request: gr.Request):
        space = space_of(request)
        listed(space, who=who)
        kept = space.chats.load(current).lore if isinstance(current, str) and space.chats.has(current) else None
        note = kept.note if kept else AuthorsNote()
        return note.text, note.depth, note.frequency, note.role

    def on_save_note(current, who, text, depth, frequency, role, request: gr.Request):
        space = space_of(request)
        listed(space, who=who)
        try:
            note = AuthorsNote(text=str(text or ""), depth=int(depth or 0), frequency=int(frequency or 0),
                               role=role if role in ROLES else "system")
        except (ValueError, TypeError) as exc:
            raise gr.Error(f"author's note: {exc}") from exc
        conversation = chat_of(space, current, who)
        conversation.lore = (conversation.lore or ChatLore()).model_copy(update={"note": note})
        try:
            space.chats.save(conversation)
        except (AppError, OSError) as exc:
            raise gr.Error(f"the note was not saved: {exc}") from exc
        return "Saved with this chat." if note.text.strip() else "The note is empty: nothing is added."

    inputs = [panel.books, chat_id, character]
    panel.upload.upload(on_import, [panel.upload, chat_id, character], book_outputs, api_name="lorebook_import")
    panel.books.change(on_refresh, inputs, book_outputs, api_name="lorebook_open", show_progress="hidden")
    chat_id.change(on_refresh, inputs, book_outputs, api_name="lorebook_chat_view", show_progress="hidden")
    panel.scope.input(on_scope, [panel.books, panel.scope, chat_id, character], panel.status,
                      api_name="lorebook_attach")
    panel.export.click(on_export, panel.books, panel.exported, api_name="lorebook_export")
    panel.delete.click(on_delete, inputs, book_outputs, api_name="lorebook_delete")
    panel.entries.change(on_entry, [panel.books, panel.entries],
                         [panel.keys, panel.content, panel.constant, panel.order], api_name="lorebook_entry",
                         show_progress="hidden")
    entry_inputs = [panel.books, panel.entries, panel.keys, panel.content, panel.constant, panel.order, chat_id,
                    character]
    entry_outputs = [panel.books, panel.scope, panel.entries, panel.keys, panel.content, panel.constant,
                     panel.order, panel.status]
    panel.save_entry.click(on_save_entry, entry_inputs, entry_outputs, api_name="lorebook_save_entry")
    panel.new_entry.click(on_new_entry, entry_inputs, entry_outputs, api_name="lorebook_new_entry")
    note_fields = [panel.note, panel.depth, panel.frequency, panel.role]
    chat_id.change(on_note_view, [chat_id, character], note_fields, api_name="authors_note_view",
                   show_progress="hidden")
    panel.save_note.click(on_save_note, [chat_id, character, *note_fields], panel.note_status,
                          api_name="authors_note_save")


def _split_keys(text) -> list[str]:
    """Keys as typed: comma-separated, but a /regex/ may hold commas of its own."""
    keys: list[str] = []
    for piece in str(text or "").split(","):
        if keys and keys[-1].lstrip().startswith("/") and not is_regex_key(keys[-1].strip()):
            keys[-1] += "," + piece
        else:
            keys.append(piece)
    return [k.strip() for k in keys if k.strip()]
