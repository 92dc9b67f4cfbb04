"""Chat tab: conversations kept on the server, as trees, in three prompt modes.

Wiring only: conversations live in the user's ChatStore (webui/chat/store.py), the
prompt is built by webui/chat/prompt.py and replies are written by
webui/chat/service.py.  This session remembers only which conversation is open.

While a reply streams, only the reply box below the chat is updated: re-sending the
whole history to the Chatbot on every token would cost time in proportion to the
chat's length (bench/bench_chat.py measures this).
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from webui.chat.characters import DEFAULT_CHARACTER, Character, CharacterError, substitute
from webui.chat.history import ChatError, Conversation
from webui.chat.prompt import DEFAULT_COMMAND, ChatSetup, PromptError
from webui.chat.service import ReplyWriter, add_user_message, impersonate
from webui.chat.store import MAX_CHAT_BYTES, new_chat_id
from webui.generation.engine import GenerationError
from webui.paths import NameRefused
from webui.runtime import Runtime
from webui.settings import SettingsError
from webui.ui.common import MODEL_GROUP, Shared, session_id, stop_handler, to_params
from webui.ui.exports import Exports
from webui.userdata import UserSpace

MODES = ["instruct", "chat", "chat-instruct"]
RECOVER = "recover:"  # chat list values that name an unreadable file, not a conversation
# Errors a chat action can meet that are the user's to fix, shown as they are.
USER_ERRORS = (ChatError, CharacterError, NameRefused, PromptError, SettingsError, ValueError)


def render(runtime: Runtime, shared: Shared) -> None:
    chat_id = gr.State(None)  # the open conversation (server-side; never sent by the browser)

    with gr.Row():
        with gr.Column(scale=1, min_width=220):
            new_chat = gr.Button("New chat", elem_id="chat-new")
            search = gr.Textbox("", placeholder="Search chats", show_label=False, elem_id="chat-search")
            chats = gr.Dropdown(label="Conversations", choices=[], allow_custom_value=True, elem_id="chat-list")
            with gr.Accordion("Manage conversation", open=False):
                title = gr.Textbox("", label="Title", elem_id="chat-title")
                rename = gr.Button("Rename", elem_id="chat-rename")
                delete = gr.Button("Delete", variant="stop", elem_id="chat-delete")
                export = gr.Button("Export JSON", elem_id="chat-export")
                exported = gr.File(label="Exported", interactive=False, visible=False)
                exports = Exports(exported.GRADIO_CACHE)
                upload = gr.UploadButton("Import JSON", file_types=[".json"], elem_id="chat-import")
        with gr.Column(scale=4):
            chatbot = gr.Chatbot(
                label="Chat", height=520, allow_tags=False, sanitize_html=True, editable="all",
                elem_id="chatbot", feedback_options=None,
                buttons=["copy", "copy_all"],  # no "share": it would post to an outside site
            )
            live = gr.Markdown(elem_id="chat-live", sanitize_html=True)  # the reply while it streams
            with gr.Row():
                message = gr.Textbox(
                    placeholder="Send a message (Enter); Shift+Enter for a new line",
                    show_label=False, scale=6, lines=2, elem_id="chat-input",
                )
                send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
            with gr.Row():
                stop = gr.Button("Stop", variant="stop", elem_id="chat-stop")
                regenerate = gr.Button("Regenerate", elem_id="chat-regenerate")
                extend = gr.Button("Continue", elem_id="chat-continue")
                write_mine = gr.Button("Impersonate", elem_id="chat-impersonate")
                remove = gr.Button("Remove last", elem_id="chat-remove-last")
            stats = gr.Markdown(elem_id="chat-stats")
            with gr.Row():
                # Which message the buttons act on (1 = first, 0 = the last one);
                # clicking a message in the chat sets it.
                picked = gr.Number(0, label="Message", precision=0, minimum=0, scale=0, min_width=90,
                                   elem_id="chat-picked")
                branch = gr.Markdown(elem_id="chat-branch")
                previous = gr.Button("◀ version", size="sm", scale=0, min_width=90, elem_id="chat-prev")
                following = gr.Button("version ▶", size="sm", scale=0, min_width=90, elem_id="chat-next")
                fork = gr.Button("Fork here", size="sm", scale=0, min_width=90, elem_id="chat-fork")
            prefix = gr.Textbox("", label="Start reply with", elem_id="chat-prefix")
            with gr.Accordion("Edit a message", open=False):
                edit_text = gr.Textbox("", label="New text (saved as a new version; the old one is kept)",
                                       lines=3, elem_id="chat-edit-text")
                save_edit = gr.Button("Save as new version", elem_id="chat-edit-save")
        with gr.Column(scale=1, min_width=240):
            mode = gr.Radio(MODES, value="instruct", label="Mode", elem_id="chat-mode")
            character = gr.Dropdown(
                [DEFAULT_CHARACTER], value=DEFAULT_CHARACTER, label="Character", allow_custom_value=True,
                elem_id="chat-character",
            )
            shared.character_picker = character
            template = gr.Dropdown(
                runtime.templates.names(), value=runtime.templates.names()[0], label="Instruction template",
                allow_custom_value=True, elem_id="chat-template",
            )
            system = gr.Textbox("", label="System prompt (instruct)", lines=5, elem_id="chat-system")
            command = gr.Textbox(label="Command (chat-instruct)", value=DEFAULT_COMMAND, lines=4)

    # -- helpers ---------------------------------------------------------------------------
    def username(request: gr.Request | None) -> str | None:
        return getattr(request, "username", None)

    def space_of(request: gr.Request) -> UserSpace:
        return runtime.users.get(username(request))

    def character_of(space: UserSpace, name) -> Character:
        try:
            return space.characters.load(name)
        except (NameRefused, CharacterError) as exc:
            raise gr.Error(str(exc)) from exc

    def open_chat(space: UserSpace, chat: str | None, who: str, character: Character | None = None) -> Conversation:
        """The stored conversation `chat`, or a fresh one (with the greeting) under that id.
        `character` is `who`'s, when the caller has loaded it already."""
        character = character or character_of(space, who)  # also refuses names the user does not have
        if chat:
            try:
                conversation = space.chats.load(chat)
                if conversation.character == who:
                    return conversation
            except NameRefused:
                pass
        conversation = Conversation(id=chat or new_chat_id(), character=who)
        user = space.persona().name
        for i, greeting in enumerate(character.greetings()):
            text = substitute(greeting, who, user)
            conversation.append("assistant", text) if i == 0 else conversation.add_alternative(0, text)
        if conversation.messages:
            conversation.flip(0, 1)  # back to the main greeting
        return conversation

    def chat_list(space: UserSpace, who: str, current: str | None, query: str = ""):
        summaries = space.chats.list(who, query or "")
        choices = [(s.label, s.id) for s in summaries]
        # Files that could not be read stay listed (under every character: which one they
        # belong to is unknown); picking one recovers what it holds (webui/chat/store.py).
        choices += [(f"⚠️ unreadable: {label} (pick to recover)", RECOVER + label)
                    for label in space.chats.unreadable()]
        listed = current in {s.id for s in summaries}
        return gr.update(choices=choices, value=current if listed else None)

    def position_of(conversation: Conversation, number) -> int:
        """0-based index of the message numbered `number` (1 = first; 0 or blank = last)."""
        path = conversation.path()
        if not path:
            raise gr.Error("the conversation is empty")
        if not number:
            return len(path) - 1
        if not isinstance(number, (int, float)) or not 1 <= number <= len(path):
            raise gr.Error(f"there is no message {number}: this conversation has {len(path)}")
        return int(number) - 1

    def branch_note(conversation: Conversation, index: int | None) -> str:
        path = conversation.path()
        if not path:
            return ""
        index = len(path) - 1 if index is None or index >= len(path) else index
        position, count = conversation.alternatives(index)
        which = "last message" if index == len(path) - 1 else f"message {index + 1}"
        return f"{which}: version {position} of {count}"

    def setup_of(space: UserSpace, mode_name, who, template_name, system_text, command_text) -> ChatSetup:
        if mode_name not in MODES:
            raise gr.Error(f"unknown mode: choose one of {', '.join(MODES)}")
        try:
            template_text = runtime.templates.load(template_name)
        except (NameRefused, SettingsError) as exc:
            raise gr.Error(str(exc)) from exc
        return ChatSetup(
            mode=mode_name, character=character_of(space, who), persona=space.persona(),
            system=system_text or "", template=template_text, command=command_text or DEFAULT_COMMAND,
        )

    def view(space: UserSpace, conversation: Conversation, query: str = "", note: str = ""):
        """Everything that shows a conversation: id, chat, list, title, branch note, stats."""
        return (
            conversation.id, conversation.shown(), chat_list(space, conversation.character, conversation.id, query),
            conversation.title, branch_note(conversation, None), note, 0,
        )

    view_outputs = [chat_id, chatbot, chats, title, branch, stats, picked]

    # -- opening, listing, managing ---------------------------------------------------------
    def on_load(request: gr.Request):
        space = space_of(request)
        who = space.recent_character()
        conversation = open_chat(space, space.recent_chat(who), who)
        notes = "; ".join(space.chats.warnings[-3:])
        return gr.update(choices=space.characters.names(), value=who), *view(space, conversation, note=notes)

    def on_character(who, request: gr.Request):
        space = space_of(request)
        return view(space, open_chat(space, space.recent_chat(who), who))  # open_chat checks the name

    def on_pick_chat(chat, who, query, request: gr.Request):
        space = space_of(request)
        if isinstance(chat, str) and chat.startswith(RECOVER):
            conversation = space.chats.recover(chat.removeprefix(RECOVER))
            space.remember_chat(conversation.character, conversation.id)
            return view(space, conversation, query, note="Recovered what the file held, as a new conversation.")
        try:
            conversation = space.chats.load(chat)
        except NameRefused as exc:
            raise gr.Error(str(exc)) from exc
        space.remember_chat(conversation.character, conversation.id)
        return view(space, conversation, query)

    def on_new(who, request: gr.Request):
        space = space_of(request)
        return view(space, open_chat(space, None, who))

    def on_search(query, current, who, request: gr.Request):
        return chat_list(space_of(request), who, current, query)

    def on_rename(current, new_title, query, request: gr.Request):
        space = space_of(request)
        try:
            conversation = space.chats.rename(current, new_title or "")
        except NameRefused as exc:
            raise gr.Error("save the conversation (send a message) before renaming it") from exc
        return view(space, conversation, query)

    def on_delete(current, who, request: gr.Request):
        space = space_of(request)
        try:
            space.chats.delete(current)
        except NameRefused as exc:
            raise gr.Error(str(exc)) from exc
        exports.forget(username(request), f"chat-{current}.json")
        remaining = space.chats.list(who)
        return view(space, open_chat(space, remaining[0].id if remaining else None, who), note="Deleted.")

    def on_export(current, request: gr.Request):
        space = space_of(request)
        try:
            conversation = space.chats.load(current)
        except NameRefused as exc:
            raise gr.Error("nothing to export yet: this conversation has no messages") from exc
        path = exports.write(username(request), f"chat-{conversation.id}.json", conversation.model_dump_json(indent=1))
        return gr.update(value=path, visible=True)

    def on_import(file, who, request: gr.Request):
        space = space_of(request)
        path = Path(file if isinstance(file, str) else getattr(file, "name", ""))
        try:
            if path.stat().st_size > MAX_CHAT_BYTES:
                raise ValueError("that file is too large for a conversation")
            conversation = space.chats.import_json(path.read_bytes(), character=who)
        except (OSError, ValueError) as exc:
            raise gr.Error(f"import failed: {exc}") from exc
        space.remember_chat(who, conversation.id)
        return view(space, conversation, note="Imported.")

    # -- editing the tree --------------------------------------------------------------------
    def saved_change(space: UserSpace, conversation: Conversation, note: str = ""):
        space.chats.save(conversation)
        space.remember_chat(conversation.character, conversation.id)
        return view(space, conversation, note=note)

    def edit_message(space: UserSpace, conversation: Conversation, index: int, text: str):
        try:
            conversation.edit(index, text)
        except ChatError as exc:
            raise gr.Error(str(exc)) from exc
        return saved_change(space, conversation, note="Edited: the earlier version is kept (◀ ▶).")

    def on_edit(current, who, data: gr.EditData, request: gr.Request):
        """An edit made in the chat itself."""
        space = space_of(request)
        conversation = open_chat(space, current, who)
        index = data.index[0] if isinstance(data.index, list) else data.index
        text = data.value if isinstance(data.value, str) else _text_of(data.value)
        return edit_message(space, conversation, position_of(conversation, int(index) + 1), text)

    def on_edit_message(current, who, number, text, request: gr.Request):
        space = space_of(request)
        conversation = open_chat(space, current, who)
        return edit_message(space, conversation, position_of(conversation, number), text or "")

    def on_select_message(current, who, data: gr.SelectData, request: gr.Request):
        conversation = open_chat(space_of(request), current, who)
        index = data.index[0] if isinstance(data.index, list) else data.index
        path = conversation.path()
        text = path[index].content if 0 <= index < len(path) else ""
        return index + 1, branch_note(conversation, index), text

    def on_flip(step: int):
        def flip(current, who, number, request: gr.Request):
            space = space_of(request)
            conversation = open_chat(space, current, who)
            index = position_of(conversation, number)
            conversation.flip(index, step)
            outputs = saved_change(space, conversation)
            # Keep acting on the same message, and say which version shows now.
            return (*outputs[:4], branch_note(conversation, index), outputs[5], number)

        return flip

    def on_fork(current, who, number, request: gr.Request):
        space = space_of(request)
        conversation = open_chat(space, current, who)
        copy = conversation.fork(position_of(conversation, number), new_chat_id())
        return saved_change(space, copy, note="Forked into a new conversation.")

    def on_remove_last(current, who, request: gr.Request):
        space = space_of(request)
        conversation = open_chat(space, current, who)
        try:
            conversation.remove_last()
        except ChatError as exc:
            raise gr.Error(str(exc)) from exc
        return saved_change(space, conversation)

    # -- running the model -------------------------------------------------------------------
    def write_reply(space, conversation, setup, params, action, start_with, request, clear_input):
        """Yield updates while a reply streams into the live box, then show the result."""
        try:
            writer = ReplyWriter(runtime, session_id(request), space.chats, conversation, setup,
                                 to_params(params), action, start_with or "", username(request))
        except (*USER_ERRORS, GenerationError) as exc:
            yield {chatbot: conversation.shown(), live: "", stats: f"**Error:** {exc}"}
            return
        space.remember_chat(conversation.character, conversation.id)
        try:
            # The reply being written shows in the live box, not (yet) in the chat.
            yield {
                chat_id: conversation.id, chatbot: conversation.shown()[:-1], live: writer.text,
                stats: "Generating…", chats: chat_list(space, conversation.character, conversation.id),
                **({message: ""} if clear_input else {}),
            }
            shown = "Generating…"
            for text in writer:
                if writer.status() != shown:  # only while queued: "N requests ahead of yours"
                    shown = writer.status()
                    yield {live: text, stats: shown}
                else:
                    yield {live: text}
        except GenerationError as exc:
            writer.error = str(exc)
        finally:
            writer.close()  # the tab closed before the first piece: still cancel and save
        note = f"**Error:** {writer.error}" if writer.error else writer.summary()
        yield {chatbot: conversation.shown(), live: "", stats: note,
               branch: branch_note(conversation, None), picked: 0}

    def on_send(text, current, who, mode_name, template_name, system_text, command_text, start_with,
                params, request: gr.Request):
        if not text or not text.strip():
            yield {stats: "Type a message first."}
            return
        space = space_of(request)
        setup = setup_of(space, mode_name, who, template_name, system_text, command_text)
        conversation = open_chat(space, current, who, setup.character)
        if not any(m.role == "user" for m in conversation.messages) and conversation.title == "New chat":
            conversation.title = " ".join(text.split())[:60]
        try:
            add_user_message(runtime, conversation, setup, to_params(params), text, username(request))
        except (*USER_ERRORS, GenerationError) as exc:
            yield {stats: f"**Error:** {exc}"}
            return
        space.chats.save(conversation)  # the message is safe before the model even starts
        yield from write_reply(space, conversation, setup, params, "reply", start_with, request, True)

    def on_action(action: str):
        def run(current, who, mode_name, template_name, system_text, command_text, start_with,
                params, request: gr.Request):
            space = space_of(request)
            setup = setup_of(space, mode_name, who, template_name, system_text, command_text)
            conversation = open_chat(space, current, who, setup.character)
            yield from write_reply(space, conversation, setup, params, action, start_with, request, False)

        return run

    def on_impersonate(current, who, mode_name, template_name, system_text, command_text, start_with,
                       params, request: gr.Request):
        space = space_of(request)
        setup = setup_of(space, mode_name, who, template_name, system_text, command_text)
        conversation = open_chat(space, current, who, setup.character)
        text = start_with or ""
        try:
            for so_far in impersonate(runtime, session_id(request), conversation, setup, to_params(params), text,
                                      username(request)):
                text = so_far
                yield text, gr.skip()
        except (*USER_ERRORS, GenerationError) as exc:
            yield text, f"**Error:** {exc}"
            return
        yield text, "Impersonated: edit the message, then Send."

    # -- wiring ------------------------------------------------------------------------------
    setup_inputs = [chat_id, character, mode, template, system, command, prefix, shared.params]
    stream_outputs = [chat_id, chatbot, live, stats, message, chats, branch, picked]
    send_event = send.click(on_send, [message, *setup_inputs], stream_outputs, api_name="chat_send", **MODEL_GROUP)
    submit_event = message.submit(
        on_send, [message, *setup_inputs], stream_outputs, api_name="chat_submit", **MODEL_GROUP
    )
    regen_event = regenerate.click(
        on_action("regenerate"), setup_inputs, stream_outputs, api_name="chat_regenerate", **MODEL_GROUP
    )
    continue_event = extend.click(
        on_action("continue"), setup_inputs, stream_outputs, api_name="chat_continue", **MODEL_GROUP
    )
    impersonate_event = write_mine.click(
        on_impersonate, setup_inputs, [message, stats], api_name="chat_impersonate", **MODEL_GROUP
    )
    # Stop runs outside the model group (it must not wait for the reply it stops) and
    # also drops this session's not-yet-started requests from Gradio's queue.
    stop.click(
        stop_handler(runtime), None, stats, api_name="chat_stop",
        cancels=[send_event, submit_event, regen_event, continue_event, impersonate_event],
        concurrency_limit=None,
    )
    new_chat.click(on_new, [character], view_outputs, api_name="chat_new")
    # The Chatbot's own trash button starts a new chat too; nothing is deleted.
    chatbot.clear(on_new, [character], view_outputs, api_name="chat_clear")
    chats.input(on_pick_chat, [chats, character, search], view_outputs, api_name="chat_open")
    character.input(on_character, [character], view_outputs, api_name="chat_character")
    search.change(on_search, [search, chat_id, character], chats, api_name="chat_search")
    rename.click(on_rename, [chat_id, title, search], view_outputs, api_name="chat_rename")
    delete.click(on_delete, [chat_id, character], view_outputs, api_name="chat_delete")
    export.click(on_export, [chat_id], exported, api_name="chat_export")
    upload.upload(on_import, [upload, character], view_outputs, api_name="chat_import")
    chatbot.edit(on_edit, [chat_id, character], view_outputs, api_name="chat_edit")
    save_edit.click(on_edit_message, [chat_id, character, picked, edit_text], view_outputs,
                    api_name="chat_edit_message")
    chatbot.select(on_select_message, [chat_id, character], [picked, branch, edit_text],
                   api_name="chat_pick_message")
    previous.click(on_flip(-1), [chat_id, character, picked], view_outputs, api_name="chat_previous_version")
    following.click(on_flip(+1), [chat_id, character, picked], view_outputs, api_name="chat_next_version")
    fork.click(on_fork, [chat_id, character, picked], view_outputs, api_name="chat_fork")
    remove.click(on_remove_last, [chat_id, character], view_outputs, api_name="chat_remove_last")
    shared.on_load.append((on_load, [], [character, *view_outputs], "chat_load"))


def _text_of(value) -> str:
    """Text of an edited message as the Chatbot sends it (a string or a list of parts)."""
    if isinstance(value, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in value)
    if isinstance(value, dict):
        return str(value.get("text", value.get("content", "")))
    return json.dumps(value) if value is not None else ""
