"""Character tab: create, edit, import and export characters; the user's persona.

Wiring only: characters are kept by the user's CharacterLibrary (chat/characters.py),
cards are read and written by chat/cards.py.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from webui.chat.cards import MAX_CARD_FILE_BYTES, CardError
from webui.chat.characters import DEFAULT_CHARACTER, Character, CharacterError, Persona
from webui.chat.history import ChatTools
from webui.paths import NameRefused
from webui.runtime import Runtime
from webui.ui.exports import Exports
from webui.ui.common import Shared
from webui.userdata import UserSpace

GREETING_SEPARATOR = "\n---\n"
CHARACTER_ERRORS = (CharacterError, CardError, NameRefused, ValueError, OSError)


def render(runtime: Runtime, shared: Shared) -> None:
    with gr.Row():
        with gr.Column(scale=1, min_width=220):
            chosen = gr.Dropdown(
                [DEFAULT_CHARACTER], value=DEFAULT_CHARACTER, label="Character", allow_custom_value=True,
                elem_id="character-pick",
            )
            picture = gr.Image(label="Picture", type="filepath", height=260, sources=["upload"],
                               elem_id="character-picture")
            upload = gr.UploadButton("Import card (PNG / JSON)", file_types=[".png", ".json"],
                                     elem_id="character-import")
            with gr.Row():
                export_json = gr.Button("Export JSON", size="sm", elem_id="character-export-json")
                export_png = gr.Button("Export PNG", size="sm", elem_id="character-export-png")
            exported = gr.File(label="Exported card", interactive=False, visible=False)
            exports = Exports(exported.GRADIO_CACHE)
        with gr.Column(scale=3):
            name = gr.Textbox(label="Name (save under a new name to make a new character)", elem_id="character-name")
            context = gr.Textbox(label="Description ({{char}} and {{user}} are filled in)", lines=6,
                                 elem_id="character-context")
            with gr.Row():
                personality = gr.Textbox(label="Personality", lines=2)
                scenario = gr.Textbox(label="Scenario", lines=2)
            greeting = gr.Textbox(label="Greeting (first message)", lines=3, elem_id="character-greeting")
            alternates = gr.Textbox(label="Alternate greetings, separated by a line with ---", lines=3)
            examples = gr.Textbox(label="Example dialogue", lines=4)
            system_prompt = gr.Textbox(label="System prompt (from a card; used before the description)", lines=2)
            # Custom values allowed: libraries made since the tab was drawn; unknown names are dropped on save.
            libraries = gr.Dropdown([], value=[], multiselect=True, elem_id="character-libraries",
                                    allow_custom_value=True,
                                    label="Libraries this character reads from in every chat (Chat → Libraries)")
            tools = gr.Dropdown([], value=[], multiselect=True, elem_id="character-tools", allow_custom_value=True,
                                label="Tools a new chat with this character may use (asked before each run; "
                                      "the chat's Tools panel changes them per chat)")
            with gr.Row():
                save = gr.Button("Save", variant="primary", elem_id="character-save")
                delete = gr.Button("Delete", variant="stop", elem_id="character-delete")
            status = gr.Markdown(elem_id="character-status")
        with gr.Column(scale=1, min_width=220):
            gr.Markdown("**You** (used in chat prompts)")
            persona_name = gr.Textbox("You", label="Your name", elem_id="persona-name")
            persona_text = gr.Textbox("", label="About you", lines=4, elem_id="persona-description")
            save_persona = gr.Button("Save persona", elem_id="persona-save")

    fields = [name, context, personality, scenario, greeting, alternates, examples, system_prompt]

    def space_of(request: gr.Request) -> UserSpace:
        return runtime.users.get(getattr(request, "username", None))

    def library_names(request: gr.Request) -> list[str]:
        if runtime.documents is None:
            return []
        store = runtime.documents.for_user(getattr(request, "username", None))
        return [c.name for c in store.collections("library")]

    def tool_names(request: gr.Request) -> list[str]:
        if runtime.tools is None:
            return []
        return [spec.name for spec in runtime.tools.available(getattr(request, "username", None))]

    def shown(space: UserSpace, who: str, request: gr.Request):
        """The fields, picture and pickers for character `who`."""
        character = space.characters.load(who)
        picture_path = space.characters.picture(who)
        names = space.characters.names()
        known = library_names(request)
        allowed = character.tools.allowed if character.tools else []
        return (
            gr.update(choices=names, value=who), character.name, character.context, character.personality,
            character.scenario, character.greeting, GREETING_SEPARATOR.join(character.alternate_greetings),
            character.example_dialogue, character.system_prompt,
            _picture(picture_path), gr.update(choices=names),
            gr.update(choices=sorted(set(known) | set(character.libraries)), value=character.libraries),
            gr.update(choices=sorted(set(tool_names(request)) | set(allowed)), value=allowed),
        )

    shown_outputs = [chosen, *fields, picture, shared.character_picker, libraries, tools]

    def on_load(request: gr.Request):
        space = space_of(request)
        persona = space.persona()
        return (*shown(space, DEFAULT_CHARACTER, request), persona.name, persona.description)

    def on_pick(who, request: gr.Request):
        try:
            return (*shown(space_of(request), who, request), "")
        except CHARACTER_ERRORS as exc:
            raise gr.Error(str(exc)) from exc

    def on_save(who, new_name, text, traits, setting, first, others, dialogue, system_text, image, reads, uses,
                request: gr.Request):
        space = space_of(request)
        try:
            old = space.characters.load(who) if who in space.characters.names() else None
            card = old.card if old and who == new_name else {}
            character = Character(
                name=(new_name or "").strip(), context=text or "", personality=traits or "",
                scenario=setting or "", greeting=first or "", example_dialogue=dialogue or "",
                alternate_greetings=[g.strip() for g in (others or "").split(GREETING_SEPARATOR) if g.strip()],
                system_prompt=system_text or "", card=card,
                libraries=[n for n in (reads or []) if n in library_names(request)],
                tools=chat_tools([n for n in (uses or []) if n in tool_names(request)]),
            )
            if character.name == DEFAULT_CHARACTER:
                raise ValueError(f"{DEFAULT_CHARACTER} is built in; save your own under another name")
            saved = space.characters.save(character)
            if image and Path(image).is_file() and Path(image).stat().st_size <= MAX_CARD_FILE_BYTES:
                space.characters.set_picture(saved, Path(image).read_bytes())
        except CHARACTER_ERRORS as exc:
            raise gr.Error(f"not saved: {exc}") from exc
        return (*shown(space, saved, request), f"Saved {saved}.")

    def on_delete(who, request: gr.Request):
        space = space_of(request)
        if who == DEFAULT_CHARACTER:
            raise gr.Error(f"{DEFAULT_CHARACTER} is built in and cannot be deleted")
        try:
            space.characters.delete(who)
        except CHARACTER_ERRORS as exc:
            raise gr.Error(str(exc)) from exc
        exports.forget(getattr(request, "username", None), f"{who}.json", f"{who}.png")
        return (*shown(space, DEFAULT_CHARACTER, request), f"Deleted {who}. Its conversations are kept.")

    def on_import(file, request: gr.Request):
        space = space_of(request)
        path = Path(file if isinstance(file, str) else getattr(file, "name", ""))
        try:
            if path.stat().st_size > MAX_CARD_FILE_BYTES:
                raise CardError(f"the file is larger than {MAX_CARD_FILE_BYTES >> 20} MB")
            imported = space.characters.import_card(path.read_bytes())
        except CHARACTER_ERRORS as exc:
            raise gr.Error(f"import failed: {exc}") from exc
        return (*shown(space, imported, request), f"Imported {imported}.")

    def on_export(kind: str):
        def export(who, request: gr.Request):
            space = space_of(request)
            try:
                data = space.characters.export_png(who) if kind == "png" else space.characters.export_json(who)
            except CHARACTER_ERRORS as exc:
                raise gr.Error(f"export failed: {exc}") from exc
            path = exports.write(getattr(request, "username", None), f"{who}.{kind}", data)
            return gr.update(value=path, visible=True)

        return export

    def on_save_persona(who, about, request: gr.Request):
        try:
            persona = Persona(name=(who or "").strip() or "You", description=about or "")
            space_of(request).save_persona(persona)
        except (ValueError, OSError) as exc:
            raise gr.Error(f"persona not saved: {exc}") from exc
        return f"Saved your persona ({persona.name})."

    chosen.input(on_pick, [chosen], [*shown_outputs, status], api_name="character_open")
    save.click(on_save, [chosen, *fields, picture, libraries, tools], [*shown_outputs, status],
               api_name="character_save")
    delete.click(on_delete, [chosen], [*shown_outputs, status], api_name="character_delete")
    upload.upload(on_import, [upload], [*shown_outputs, status], api_name="character_import")
    export_json.click(on_export("json"), [chosen], exported, api_name="character_export_json")
    export_png.click(on_export("png"), [chosen], exported, api_name="character_export_png")
    save_persona.click(on_save_persona, [persona_name, persona_text], status, api_name="persona_save")
    load_outputs = [*shown_outputs, persona_name, persona_text]
    shared.on_load.append((lambda request: dict(zip(load_outputs, on_load(request), strict=True)), load_outputs))


def chat_tools(names: list[str]) -> ChatTools | None:
    """A character's tools as a new chat gets them: each asked before it runs."""
    return ChatTools(allowed=names) if names else None


def _picture(path: Path | None):
    """The stored picture as an image object: Gradio serves it from its own cache, since
    user_data/ is never served directly.  Its size was checked when it was stored."""
    if path is None:
        return None
    from PIL import Image

    with Image.open(path) as image:
        return image.copy()
