"""Chat tab: conversations kept on the server, as trees, in three prompt modes.

Wiring only: the actions live in webui/chat/actions.py (each returns a ChatView),
replies are written by webui/chat/service.py.  This session remembers only which
conversation is open.

While a reply streams it shows as the last message of the chat, but the Chatbot
itself is sent only when the reply starts and when it ends: per piece only the
hidden live box changes (Gradio sends that as a small "append" diff), and
webui/ui/static/page.js copies its rendered text into the reply's bubble.  Sending
the Chatbot per piece would cost the server time in proportion to the chat's
length (bench/bench_chat.py; docs/PERFORMANCE.md).  A thinking model's reply streams its
thinking the same way, into an open block above the answer that folds when the answer
starts (webui/ui/thinking_ui.py, webui/chat/display.py).
"""

from __future__ import annotations

import functools
import json
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr

from webui.chat import actions, display, group, roleplay, settings
from webui.chat.actions import MODES, ChatView
from webui.chat.characters import DEFAULT_CHARACTER
from webui.chat import tool_turns
from webui.chat.history import ChatError, ChatTools, Conversation
from webui.chat.prompt import DEFAULT_COMMAND, ChatPrompt
from webui.errors import AppError
from webui.paths import NameRefused
from webui.chat.service import ReplyWriter, add_user_message, impersonate, withdraw
from webui.runtime import Runtime
from webui.ui.common import MODEL_GROUP, Shared, session_id, stop_handler, to_params
from webui.ui import chat_marks, chat_model, documents_panel, group_panel, thinking_ui, token_view, tool_access
from webui.ui import lore_panel, prompt_inspector
from webui.ui.chat_images import ImageShelf, bubbles, message_box, message_parts, store_uploads
from webui.ui.exports import Exports
from webui.userdata import UserSpace

# Errors a chat action can meet that are the user's to fix, shown as they are.
# AppError: every error written for the user (webui/errors.py), the engine's included;
# ValueError: a value Gradio handed over that an action cannot use.
USER_ERRORS = (AppError, ValueError)
# Shown at the end of the reply while it streams; page.js finds the reply's bubble by it.
CURSOR = display.CURSOR
RECOVER = "recover:"  # chat list values that name an unreadable file, not a conversation
STOPPED_WAIT = 5.0  # seconds Stop waits for the stopped reply to be saved, to show it finished


@dataclass
class Sidebar:
    new_chat: gr.Button
    search: gr.Textbox
    chats: gr.Dropdown
    title: gr.Textbox
    rename: gr.Button
    delete: gr.Button
    export: gr.Button
    exported: gr.File
    upload: gr.UploadButton
    opener: gr.Button


@dataclass
class ChatColumn:
    chatbot: gr.Chatbot
    live: gr.Markdown
    times: gr.Textbox
    message: gr.MultimodalTextbox
    tokens: gr.Markdown
    send: gr.Button
    stop: gr.Button
    regenerate: gr.Button
    extend: gr.Button
    write_mine: gr.Button
    remove: gr.Button
    stats: gr.Markdown
    picked: gr.Number
    branch: gr.Markdown
    previous: gr.Button
    following: gr.Button
    fork: gr.Button
    prefix: gr.Textbox
    edit_text: gr.Textbox
    save_edit: gr.Button
    probs: token_view.TokenView
    # Tool calls waiting for the user's approval (webui/chat/tool_turns.py).
    approval: gr.Column
    approval_note: gr.Markdown
    approve: gr.Button
    deny: gr.Button


@dataclass
class SetupColumn:
    mode: gr.Radio
    character: gr.Dropdown
    template: gr.Dropdown
    system: gr.Textbox
    command: gr.Textbox
    thinking: thinking_ui.ThinkingControls
    tools: gr.CheckboxGroup
    tools_always: gr.CheckboxGroup
    tool_choice: gr.Dropdown
    access: tool_access.AccessPanel  # the owner's choice of each user's tools
    # The panel's values as this session's ChatTools (server-side; what a reply reads),
    # and a note saying what is set (the panel's events end by writing it).
    tool_state: gr.State
    tool_note: gr.Markdown


# Send empties the message box in the page itself, once Gradio has read its value: the
# reply's first update empties it too, but Firefox was seen (in CI, after an unrelated
# error elsewhere in the app) to keep the sent text in the box.  A message that could not
# be sent is put back by the event's last update (ChatTab.write_reply), which comes after.
EMPTY_ON_SEND = """(...args) => {
  setTimeout(() => {
    const box = document.querySelector('#chat-input textarea');
    if (box && box.value) { box.value = ''; box.dispatchEvent(new Event('input', {bubbles: true})); }
  }, 0);
  return args;
}"""


# -- layout ------------------------------------------------------------------------------------
def sidebar() -> Sidebar:
    new_chat = gr.Button("New chat", elem_id="chat-new")
    search = gr.Textbox("", placeholder="Search chats", show_label=False, elem_id="chat-search")
    chats = gr.Dropdown(label="Conversations", choices=[], allow_custom_value=True, elem_id="chat-list")
    # /chat_open for API clients (never shown): opens the conversation named, or says why not.
    # The list itself is lenient (ChatTab.wire_managing): it sends its value on every blur.
    opener = gr.Button("Open", visible=False, elem_id="chat-open")
    with gr.Accordion("Manage conversation", open=False):
        title = gr.Textbox("", label="Title", elem_id="chat-title")
        rename = gr.Button("Rename", elem_id="chat-rename")
        delete = gr.Button("Delete", variant="stop", elem_id="chat-delete")
        export = gr.Button("Export JSON", elem_id="chat-export")
        exported = gr.File(label="Exported", interactive=False, visible=False, elem_id="chat-exported")
        upload = gr.UploadButton("Import JSON", file_types=[".json"], elem_id="chat-import")
    return Sidebar(new_chat, search, chats, title, rename, delete, export, exported, upload, opener)


def chat_column() -> ChatColumn:
    chatbot = gr.Chatbot(
        label="Chat", height=520, allow_tags=False, sanitize_html=True, editable="all",
        elem_id="chatbot", feedback_options=None,
        buttons=["copy", "copy_all"],  # no "share": it would post to an outside site
    )
    # The reply while it streams, rendered (and sanitized) by Gradio but not shown:
    # page.js copies it into the reply's bubble in the chat.
    live = gr.Markdown(elem_id="chat-live", sanitize_html=True, visible="hidden")
    # When each shown message was written (seconds since the epoch, JSON): page.js
    # shows them on hover.
    times = gr.Textbox("[]", visible="hidden", elem_id="chat-times")
    with gr.Row(equal_height=True):
        # lines=1 with room to grow: Gradio then sends on Enter and leaves Shift+Enter
        # to the browser, which adds a line (with lines > 1 it is the other way round).
        # Images are attached, pasted or dropped here (webui/ui/chat_images.py).
        message = message_box(
            placeholder="Send a message (Enter); Shift+Enter for a new line; attach, paste or drop images",
            show_label=False, scale=6, lines=1, max_lines=12, elem_id="chat-input",
            file_types=["image"], file_count="multiple", sources=["upload"], submit_btn=False,
        )
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        # In Send's place, shown only while something runs (webui/ui/static/chat_marks.js).
        stop = gr.Button("Stop (Esc)", variant="stop", scale=1, elem_id="chat-stop")
    tokens = gr.Markdown(elem_id="chat-tokens")
    with gr.Column(visible=False, elem_id="chat-tool-approval") as approval:
        approval_note = gr.Markdown(elem_id="chat-tool-approval-note")
        with gr.Row():
            approve = gr.Button("Approve", variant="primary", elem_id="chat-tool-approve")
            deny = gr.Button("Deny", variant="stop", elem_id="chat-tool-deny")
    with gr.Row():
        regenerate = gr.Button("Regenerate (Ctrl+Enter)", elem_id="chat-regenerate")
        extend = gr.Button("Continue (Alt+Enter)", elem_id="chat-continue")
        write_mine = gr.Button("Impersonate (Ctrl+Shift+M)", elem_id="chat-impersonate")
        remove = gr.Button("Remove last (Ctrl+Shift+Backspace)", elem_id="chat-remove-last")
    stats = gr.Markdown(elem_id="chat-stats")
    # Token probabilities of the next replies, shown when each ends (webui/ui/token_view.py).
    probs = token_view.controls("chat")
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
    return ChatColumn(chatbot, live, times, message, tokens, send, stop, regenerate, extend, write_mine,
                      remove, stats, picked, branch, previous, following, fork, prefix, edit_text, save_edit, probs,
                      approval, approval_note, approve, deny)


def setup_column(runtime: Runtime) -> SetupColumn:
    mode = gr.Radio(list(MODES), value="instruct", label="Mode", elem_id="chat-mode")
    character = gr.Dropdown(
        [DEFAULT_CHARACTER], value=DEFAULT_CHARACTER, label="Character", allow_custom_value=True,
        elem_id="chat-character",
    )
    names = runtime.templates.names()
    template = gr.Dropdown(names, value=names[0], label="Instruction template", allow_custom_value=True,
                           elem_id="chat-template")
    system = gr.Textbox("", label="System prompt (instruct)", lines=5, elem_id="chat-system")
    command = gr.Textbox(label="Command (chat-instruct)", value=DEFAULT_COMMAND, lines=4)
    with gr.Accordion("Tools", open=False, elem_id="chat-tools-panel"):
        # Kept with each conversation; a tool not ticked here is off (never offered).
        tools = gr.CheckboxGroup([], label="Tools this chat may use (instruct mode)", elem_id="chat-tools")
        tools_always = gr.CheckboxGroup([], label="Run without asking (the others ask every time)",
                                        elem_id="chat-tools-always")
        tool_choice = gr.Dropdown(["auto", "none", "required"], value="auto", label="tool_choice",
                                  info="auto: the model decides; required or a tool: the first reply calls one",
                                  elem_id="chat-tool-choice")
        tool_note = gr.Markdown("No tools for this chat.", elem_id="chat-tools-note")
        access = tool_access.panel()
    return SetupColumn(mode, character, template, system, command, thinking_ui.controls(), tools, tools_always,
                       tool_choice, access, gr.State(None), tool_note)


def render(runtime: Runtime, shared: Shared) -> None:
    chat_id = gr.State(None)  # the open conversation (server-side; never sent by the browser)
    with gr.Row():
        with gr.Column(scale=1, min_width=220):
            side = sidebar()
        with gr.Column(scale=4, elem_id="chat-main"):  # first at phone width (chat_marks.css)
            col = chat_column()
            marks = chat_marks.box()
            inspector = prompt_inspector.render()  # the last reply's prompt, its parts marked
        with gr.Column(scale=1, min_width=240):
            chat_model.render(runtime, shared)  # which model answers; load another (webui/ui/chat_model.py)
            setup = setup_column(runtime)
            cast = group_panel.render()
            lore = lore_panel.render()  # lorebooks and the author's note (webui/ui/lore_panel.py)
            documents = documents_panel.render()
    shared.character_picker = setup.character
    tab = ChatTab(runtime, shared.params, chat_id, side, col, setup)
    tab.cast = cast
    tab.wire_managing()
    tab.wire_tree()
    tab.wire_model()
    tab.wire_token_count()
    tab.wire_thinking()
    tab.wire_tools()
    tool_access.wire(runtime, setup.access, shared.on_load)
    shared.on_load.append((tab.on_load, [setup.character, *tab.view_outputs]))
    shared.on_load.append((tab.on_load_thinking, [setup.thinking.enable, setup.thinking.effort]))
    shared.on_load += documents_panel.wire(runtime, documents, chat_id, col.chatbot, tab.space)
    chat_marks.wire(runtime, col.chatbot, chat_id, setup.character, marks)  # names, avatar, ◀ 2/3 ▶
    group_panel.wire(tab, cast)  # a group chat's cast and reply order
    lore_panel.wire(runtime, lore, chat_id, setup.character)
    prompt_inspector.wire(runtime, *inspector, chat_id)


# -- behaviour -----------------------------------------------------------------------------
def username(request: gr.Request | None) -> str | None:
    return getattr(request, "username", None)


def shown_messages(conversation: Conversation, streaming: bool | display.Phase = False,
                   thought=None, pictures=None) -> list[dict]:
    """What the Chatbot gets (a reply's thinking as a folded block above it, tool calls as
    blocks, the passages a reply used listed under it); while a reply streams its last
    message carries the cursor (webui/chat/display.py).  `pictures`
    (ImageShelf.for_store) shows each message's images in its bubble."""
    phase = ("answer" if streaming is True else streaming) or None
    view = display.shown(conversation, phase, thought)
    documents_panel.cite(conversation, view, streaming=phase is not None)
    return bubbles(conversation, view, pictures)


def times_of(conversation: Conversation) -> str:
    """When each shown message was written (a thinking block: its reply's time)."""
    return display.shown(conversation).times()


def user_errors(fn):
    """Run a chat action; an error the user can fix becomes a message in the browser."""
    @functools.wraps(fn)  # with its annotations: Gradio reads them to pass gr.Request, gr.EditData
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from exc

    return run


class ChatTab:
    """The chat's event handlers, over the components built above."""

    def __init__(self, runtime: Runtime, params: gr.State, chat_id: gr.State, side: Sidebar, col: ChatColumn,
                 setup: SetupColumn):
        self.runtime, self.params, self.chat_id = runtime, params, chat_id
        self.side, self.col, self.setup = side, col, setup
        self.view_outputs = [chat_id, col.chatbot, side.chats, side.title, col.branch, col.stats, col.picked,
                             col.times, setup.tools, setup.tools_always, setup.tool_choice, col.approval,
                             col.approval_note, setup.tool_state, setup.tool_note, *self.settings_outputs(setup)]
        self.tool_stops: dict[str, threading.Event] = {}  # session -> Stop for the tool call it runs
        self.setup_inputs = [chat_id, setup.character, setup.mode, setup.template, setup.system, setup.command,
                             col.prefix]
        self.shelf = ImageShelf(col.chatbot.GRADIO_CACHE)  # the messages' images, for their bubbles

    def space(self, request: gr.Request) -> UserSpace:
        return self.runtime.users.get(username(request))

    def chat_list(self, space: UserSpace, who: str, current: str | None, query: str = ""):
        summaries = actions.listing(space, who, query)
        choices = [(s.label, s.id) for s in summaries]
        # Files that could not be read stay listed (under every character: which one they
        # belong to is unknown); picking one recovers what it holds (webui/chat/store.py).
        choices += [(f"⚠️ unreadable: {label} (pick to recover)", RECOVER + label)
                    for label in space.chats.unreadable()]
        listed = current in {s.id for s in summaries}
        return gr.update(choices=choices, value=current if listed else None)

    def show(self, space: UserSpace, view: ChatView, request: gr.Request | None = None) -> dict:
        """A ChatView as the values of the components that show a conversation."""
        conversation = view.conversation
        return {
            self.chat_id: conversation.id,
            self.col.chatbot: shown_messages(conversation, pictures=self.shelf.for_store(space.images)),
            self.side.chats: self.chat_list(space, conversation.character, conversation.id, view.query),
            self.side.title: conversation.title, self.col.branch: view.branch, self.col.stats: view.note,
            self.col.picked: view.picked, self.col.times: times_of(conversation),
            **self.tool_view(conversation, request),
            **self.settings_view(conversation),
        }

    # -- the conversation's prompt settings (webui/chat/settings.py) -------------------------------
    @staticmethod
    def settings_outputs(setup: SetupColumn) -> list:
        return [setup.mode, setup.template, setup.thinking.enable, setup.thinking.effort]

    def settings_view(self, conversation: Conversation) -> dict:
        """The controls as the conversation keeps them (unchanged when it keeps none)."""
        kept = settings.restored(conversation, self.runtime.templates.names())
        outputs = self.settings_outputs(self.setup)
        if kept is None:
            return dict.fromkeys(outputs, gr.skip())
        mode, template, enable, effort = outputs
        return {mode: kept.mode, template: kept.template or gr.skip(), enable: gr.update(value=kept.enable_thinking),
                effort: gr.update(value=kept.effort)}

    def showing(self, request: gr.Request, action, *args) -> dict:
        """Run `action(space, *args)` for this user and show the ChatView it returns."""
        space = self.space(request)
        return self.show(space, action(space, *args), request)

    # -- tools ------------------------------------------------------------------------------------
    def tool_names(self, request: gr.Request | None) -> list[str]:
        """The tools this user may use (the owner decides: webui/tools/access.py)."""
        registry = self.runtime.tools
        return [spec.name for spec in registry.available(username(request))] if registry is not None else []

    def tool_view(self, conversation: Conversation, request: gr.Request | None) -> dict:
        """The Tools panel for this conversation, and its calls waiting for approval."""
        names = self.tool_names(request)
        chosen = conversation.tools or ChatTools()
        return {
            self.setup.tools: gr.update(choices=names, value=[n for n in chosen.allowed if n in names]),
            self.setup.tools_always: gr.update(choices=names, value=[n for n in chosen.always if n in names]),
            self.setup.tool_choice: gr.update(choices=["auto", "none", "required", *names], value=chosen.choice),
            self.setup.tool_state: conversation.tools, self.setup.tool_note: tools_note(conversation.tools),
            **self.approval_view(conversation),
        }

    def approval_view(self, conversation: Conversation) -> dict:
        waiting = tool_turns.needs_approval(tool_turns.pending(conversation), conversation.tools)
        names = ", ".join(f"`{call.tool_name}`" for call in waiting)
        note = f"The model wants to run {names}. Approve to run it, or Deny to tell the model no." if waiting else ""
        return {self.col.approval: gr.update(visible=bool(waiting)), self.col.approval_note: note}

    def offered(self, request: gr.Request, conversation: Conversation, setup) -> tuple:
        """The tools the next reply is offered (instruct mode only: the other modes' prompts
        are scripts without tool turns)."""
        registry = self.runtime.tools
        if registry is None or setup.mode != "instruct" or conversation.tools is None:
            return ()
        available = [spec.tool() for spec in registry.available(username(request))]
        return tool_turns.offered(available, conversation.tools, conversation)

    def run_calls(self, space: UserSpace, conversation: Conversation, request: gr.Request, approve: bool):
        """Run (or deny) the calls waiting at the end of the chat, showing each as it goes.
        Calls the chat lets run without asking always run.  Returns False once Stop was pressed."""
        col = self.col
        stop = self.tool_stops.setdefault(session_id(request), threading.Event())
        stop.clear()
        always = set(conversation.tools.always) if conversation.tools else set()
        pictures = self.shelf.for_store(space.images)
        for call in tool_turns.pending(conversation):
            if stop.is_set():
                approve = False
            yield {col.chatbot: shown_messages(conversation, pictures=pictures), col.stats: f"Running {call.tool_name}…",
                   col.approval: gr.update(visible=False)}
            tool_turns.resolve(self.runtime.tools, username(request), conversation, call,
                               (approve or call.tool_name in always) and not stop.is_set(), cancel=stop)
            space.chats.save(conversation)
        yield {col.chatbot: shown_messages(conversation, pictures=pictures), col.times: times_of(conversation)}
        return not stop.is_set()

    def reply_loop(self, space, conversation, setup, params, action, start_with, request, clear_input,
                   show_tokens=False, sent=None):
        """A reply, then its tool calls (asking first where the chat says so) and the reply
        going on from their results, until it answers without calls or a call waits.
        `sent`: the user's message just sent (not saved yet: write_reply saves it once the
        reply starts, or withdraws it when none can be written)."""
        writer = yield from self.write_reply(space, conversation, setup, params, action, start_with, request,
                                             clear_input, show_tokens, sent)
        while writer is not None and tool_turns.pending(conversation):
            if tool_turns.needs_approval(tool_turns.pending(conversation), conversation.tools):
                pictures = self.shelf.for_store(space.images)
                yield {self.col.chatbot: shown_messages(conversation, pictures=pictures),
                       **self.approval_view(conversation),
                       self.col.stats: "A tool call is waiting for your approval."}
                return
            if not (yield from self.run_calls(space, conversation, request, True)):
                return
            writer = yield from self.write_reply(space, conversation, setup, params, "reply", "", request, False,
                                                 show_tokens)

    # -- page load ------------------------------------------------------------------------------
    def on_load(self, request: gr.Request) -> dict:
        space = self.space(request)
        view = actions.page_load(space)
        return {**self.show(space, view, request),
                self.setup.character: gr.update(choices=space.characters.names(), value=view.conversation.character)}

    # -- opening, listing, managing ---------------------------------------------------------------
    def wire_managing(self) -> None:
        side, setup, chat_id, outputs = self.side, self.setup, self.chat_id, self.view_outputs
        show = self.showing
        exports = Exports(side.exported.GRADIO_CACHE)  # private per user (webui/ui/exports.py)

        @user_errors
        def on_new(who, request: gr.Request):
            return show(request, actions.new, who)

        @user_errors
        def on_open_chat(chat, query, request: gr.Request):
            if isinstance(chat, str) and chat.startswith(RECOVER):
                return show(request, actions.recover, chat.removeprefix(RECOVER), query)
            return show(request, actions.pick, chat, query)

        @user_errors
        def on_pick_chat(chat, query, current, who, request: gr.Request):
            """A conversation picked from the list.  Gradio's Dropdown also sends its value
            each time it loses focus: nothing picked (None: a search hid the open chat), the
            open chat again, or text typed into it that names no conversation.  Those leave
            the chat as it is (issue 31: no error, the open chat keeps working)."""
            if chat is None or chat == current:
                return {side.chats: gr.skip()}
            try:
                return on_open_chat(chat, query, request)
            except gr.Error as exc:
                if not isinstance(exc.__cause__, NameRefused):
                    raise
            return {side.chats: self.chat_list(self.space(request), who, current, query)}

        @user_errors
        def on_character(who, request: gr.Request):
            return show(request, actions.switch_character, who)

        @user_errors
        def on_rename(current, new_title, query, request: gr.Request):
            return show(request, actions.rename, current, new_title, query)

        @user_errors
        def on_delete(current, who, request: gr.Request):
            shown = show(request, actions.delete, current, who)
            exports.forget(username(request), f"chat-{current}.json")  # its download goes too
            return shown

        @user_errors
        def on_import(file, who, request: gr.Request):
            return show(request, actions.import_file, _upload_path(file), who)

        @user_errors
        def on_search(query, current, who, request: gr.Request):
            return self.chat_list(self.space(request), who, current, query)

        @user_errors
        def on_export(current, request: gr.Request):
            name, text = actions.export(self.space(request), current)
            return gr.update(value=exports.write(username(request), name, text), visible=True)

        side.new_chat.click(on_new, [setup.character], outputs, api_name="chat_new")
        # The page's own (API clients open a chat with /chat_open, which says when a name is unknown).
        side.chats.input(on_pick_chat, [side.chats, side.search, chat_id, setup.character], outputs,
                         api_name="chat_pick", api_visibility="private")
        side.opener.click(on_open_chat, [side.chats, side.search], outputs, api_name="chat_open")
        setup.character.input(on_character, [setup.character], outputs, api_name="chat_character")
        side.rename.click(on_rename, [chat_id, side.title, side.search], outputs, api_name="chat_rename")
        side.delete.click(on_delete, [chat_id, setup.character], outputs, api_name="chat_delete")
        side.upload.upload(on_import, [side.upload, setup.character], outputs, api_name="chat_import")
        side.search.change(on_search, [side.search, chat_id, setup.character], side.chats, api_name="chat_search")
        side.export.click(on_export, [chat_id], side.exported, api_name="chat_export")

    # -- editing the tree ---------------------------------------------------------------------
    def wire_tree(self) -> None:
        col, who, chat_id, outputs, show = self.col, self.setup.character, self.chat_id, self.view_outputs, self.showing

        @user_errors
        def on_edit(current, who, data: gr.EditData, request: gr.Request):
            """An edit made in the chat itself."""
            self.space(request).characters.load(who)  # the name first, whatever else is wrong
            if data is None or data.index is None:
                raise ChatError("nothing was edited")
            index = data.index[0] if isinstance(data.index, list) else data.index
            text = data.value if isinstance(data.value, str) else _text_of(data.value)
            return show(request, actions.edit_shown, current, who, int(index), text)

        @user_errors
        def on_edit_message(current, who, number, text, request: gr.Request):
            return show(request, actions.edit, current, who, number, text)

        @user_errors
        def on_select_message(current, who, data: gr.SelectData, request: gr.Request):
            index = data.index[0] if isinstance(data.index, list) else data.index
            picked = actions.pick_message(self.space(request), current, who, index)
            return picked.number, picked.branch, picked.text

        def on_flip(step: int):
            @user_errors
            def flip(current, who, number, request: gr.Request):
                return show(request, actions.flip, current, who, number, step)

            return flip

        @user_errors
        def on_fork(current, who, number, request: gr.Request):
            return show(request, actions.fork, current, who, number)

        @user_errors
        def on_remove_last(current, who, request: gr.Request):
            return show(request, actions.remove_last, current, who)

        # An edited message of the user's is then sent again, on its new branch (wire_model).
        self.edits = [
            col.chatbot.edit(on_edit, [chat_id, who], outputs, api_name="chat_edit"),
            col.save_edit.click(on_edit_message, [chat_id, who, col.picked, col.edit_text], outputs,
                                api_name="chat_edit_message"),
        ]
        col.chatbot.select(on_select_message, [chat_id, who], [col.picked, col.branch, col.edit_text],
                           api_name="chat_pick_message")
        col.previous.click(on_flip(-1), [chat_id, who, col.picked], outputs, api_name="chat_previous_version")
        col.following.click(on_flip(+1), [chat_id, who, col.picked], outputs, api_name="chat_next_version")
        col.fork.click(on_fork, [chat_id, who, col.picked], outputs, api_name="chat_fork")
        col.remove.click(on_remove_last, [chat_id, who], outputs, api_name="chat_remove_last")

    # -- running the model ------------------------------------------------------------------------
    def setup_of(self, space: UserSpace, who, mode, template, system, command, thinking=(None, None)):
        """thinking: the values of the template's switches (webui/ui/thinking_ui.py)."""
        try:
            setup = actions.chat_setup(space, self.runtime.templates, mode, who, template, system, command)
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from exc
        return thinking_ui.with_switches(self.runtime, setup, *thinking)

    def write_reply(self, space, conversation, setup, params, action, start_with, request, clear_input,
                    show_tokens=False, sent=None):
        """Yield updates while a reply streams (the live box only), then show the result.
        With show_tokens, the reply's token probabilities go to this session's state at
        the end (rendered after the event: token_view.wire_reply).  An error shows in the
        chat, in the reply's place (display.failed); when no reply could be written to the
        message just `sent`, that message is withdrawn (service.withdraw) and its text
        stays in (or goes back to) the message box: no half turn is kept."""
        col, probs = self.col, self.col.probs.shown
        # A message withdrawn from a conversation first saved for it takes the file with it.
        existed = sent is not None and space.chats.has(conversation.id)
        top, refused = token_view.wanted(self.runtime, session_id(request), bool(show_tokens))
        pictures = self.shelf.for_store(space.images)
        try:
            tools = self.offered(request, conversation, setup)
            sampling = tool_turns.forced(to_params(params), tools, conversation.tools, conversation)
            setup, speaker = group.for_reply(space.characters.load, conversation, setup, action)  # a group's member
            setup = with_lore(space, conversation, setup)  # the speaker's own card's lore
            writer = ReplyWriter(self.runtime, session_id(request), space.chats, conversation, setup,
                                 sampling, action, start_with or "", username(request), token_view=top, tools=tools,
                                 speaker=speaker)
        except USER_ERRORS as exc:
            unsent = withdraw(conversation, sent)  # never saved: the box still holds it
            yield {col.chatbot: shown_messages(conversation, pictures=pictures) + display.failed(str(exc), unsent),
                   col.live: "", col.stats: f"**Error:** {exc}", probs: token_view.Shown()}
            return None
        try:
            if sent is not None:
                space.chats.save(conversation)  # the message is safe once its reply has started
            space.remember_chat(conversation.character, conversation.id)
            # The Chatbot gets the reply's (empty) bubble once; the text goes to the live box.
            phase = thinking_ui.phase(writer)  # a continued reply may go on thinking
            yield {
                self.chat_id: conversation.id,
                col.chatbot: shown_messages(conversation, phase, thinking_ui.thought_so_far(writer), pictures),
                col.live: thinking_ui.live_text(writer, phase), col.stats: "Generating…",
                col.times: times_of(conversation),
                self.side.chats: self.chat_list(space, conversation.character, conversation.id),
                probs: token_view.starting(bool(show_tokens)),
                **({col.message: ""} if clear_input else {}),
            }
            shown = "Generating…"
            for _ in writer:
                update = {col.live: thinking_ui.live_text(writer, thinking_ui.phase(writer))}
                if thinking_ui.phase(writer) != phase:  # thinking started, or the answer did
                    phase = thinking_ui.phase(writer)
                    update[col.chatbot] = shown_messages(conversation, phase, thinking_ui.thought_so_far(writer),
                                                            pictures)
                    update[col.times] = times_of(conversation)
                if writer.status() != shown:  # only while queued: "N requests ahead of yours"
                    shown = update[col.stats] = writer.status()
                yield update
        except AppError as exc:  # a refused grammar or prompt (its field named), a full queue...
            writer.error = str(exc)
        finally:
            writer.close()  # the tab closed before the first piece: still cancel and save
        note = f"**Error:** {writer.error}" if writer.error else writer.summary()
        tokens = token_view.reply_value(writer.stream.logprobs, refused) if show_tokens else None
        unsent = withdraw(conversation, sent) if writer.error else None  # it failed before writing anything
        if unsent is not None and existed:
            space.chats.save(conversation)
        elif unsent is not None:
            space.chats.delete(conversation.id)
        chat = shown_messages(conversation, pictures=pictures)
        yield {col.chatbot: chat + display.failed(writer.error, unsent) if writer.error else chat, col.live: "",
               col.stats: note, col.branch: actions.branch_note(conversation, None), col.picked: 0,
               col.times: times_of(conversation), probs: token_view.Shown(tokens),
               **({col.message: {"text": unsent, "files": []},
                   self.side.chats: self.chat_list(space, conversation.character, conversation.id)}
                  if unsent is not None else {})}
        return writer

    def opened(self, request, current, who, mode, template, system, command, enable_thinking, effort):
        """(user space, prompt setup with the thinking switches, the open conversation) of a chat event."""
        space = self.space(request)
        setup = self.setup_of(space, who, mode, template, system, command, (enable_thinking, effort))
        conversation = _open(space, current, who, setup.character)
        settings.remember(conversation, mode, template, enable_thinking, effort)  # saved with the reply
        return space, setup, conversation

    def wire_model(self) -> None:
        runtime, col, setup_inputs = self.runtime, self.col, self.setup_inputs
        def on_send(value, current, who, mode_name, template_name, system_text, command_text, start_with, params,
                    show_tokens, enable_thinking, effort, chosen, request: gr.Request):
            try:
                text, files = message_parts(value)
            except USER_ERRORS as exc:
                yield {col.stats: f"**Error:** {exc}"}
                return
            if not text.strip() and not files:
                yield {col.stats: "Type a message first."}
                return
            space = self.space(request)
            setup = self.setup_of(space, who, mode_name, template_name, system_text, command_text,
                                  (enable_thinking, effort))
            conversation = _open(space, current, who, setup.character)
            conversation.tools = chosen
            settings.remember(conversation, mode_name, template_name, enable_thinking, effort)
            if not any(m.role == "user" for m in conversation.messages) and conversation.title == "New chat":
                conversation.title = " ".join(text.split())[:60]
            try:
                images = store_uploads(space.images, files) if files else None
                message = add_user_message(runtime, conversation, setup, to_params(params), text, username(request),
                                           images)
                documents_panel.enrich(runtime, request, conversation, message)  # attached documents, passages
            except USER_ERRORS as exc:
                yield {col.stats: f"**Error:** {exc}"}
                return
            yield from self.reply_loop(space, conversation, setup, params, "reply", start_with, request, True,
                                       show_tokens, sent=message)

        def on_action(action: str):
            def run(current, who, mode_name, template_name, system_text, command_text, start_with, params,
                    show_tokens, enable_thinking, effort, chosen, request: gr.Request):
                space, setup, conversation = self.opened(request, current, who, mode_name, template_name,
                                                         system_text, command_text, enable_thinking, effort)
                if action == "resubmit" and not actions.awaits_reply(conversation):
                    yield {col.stats: gr.skip()}  # a reply was edited: nothing to send
                    return
                conversation.tools = chosen
                yield from self.reply_loop(space, conversation, setup, params,
                                           "reply" if action == "resubmit" else action, start_with, request, False,
                                           show_tokens)

            return run

        def on_decide(approve: bool):
            """Approve or Deny the calls waiting; the reply then goes on from their results."""
            def run(current, who, mode_name, template_name, system_text, command_text, start_with, params,
                    show_tokens, enable_thinking, effort, chosen, request: gr.Request):
                space, setup, conversation = self.opened(request, current, who, mode_name, template_name,
                                                         system_text, command_text, enable_thinking, effort)
                if not tool_turns.pending(conversation):
                    yield {col.stats: "No tool call is waiting.", col.approval: gr.update(visible=False)}
                    return
                if not (yield from self.run_calls(space, conversation, request, approve)):
                    yield {col.stats: "Stopped."}
                    return
                yield from self.reply_loop(space, conversation, setup, params, "reply", "", request, False,
                                           show_tokens)

            return run

        def on_impersonate(current, who, mode_name, template_name, system_text, command_text, start_with, params,
                           request: gr.Request):
            space = self.space(request)
            setup = self.setup_of(space, who, mode_name, template_name, system_text, command_text)
            conversation = _open(space, current, who, setup.character)
            text = start_with or ""
            try:
                setup = group.for_reply(space.characters.load, conversation, setup, "impersonate")[0]
                setup = with_lore(space, conversation, setup)
                for so_far in impersonate(runtime, session_id(request), conversation, setup, to_params(params),
                                          text, username(request)):
                    text = so_far
                    yield text, gr.skip()
            except USER_ERRORS as exc:
                yield text, f"**Error:** {exc}"
                return
            yield text, "Impersonated: edit the message, then Send."

        inputs = [*setup_inputs, self.params]
        # The token view's switch and state come last: the outputs a client reads keep their places;
        # then the thinking switches (a client that leaves them out gets their defaults), then the
        # chat's tools as this session holds them (a State: not a value a client sends).
        reply_inputs = [*inputs, col.probs.show, self.setup.thinking.enable, self.setup.thinking.effort,
                        self.setup.tool_state]
        outputs = [self.chat_id, col.chatbot, col.live, col.stats, col.message, self.side.chats, col.branch,
                   col.picked, col.times, col.probs.shown, col.approval, col.approval_note]
        events = [
            col.send.click(on_send, [col.message, *reply_inputs], outputs, api_name="chat_send", js=EMPTY_ON_SEND,
                           **MODEL_GROUP),
            col.message.submit(on_send, [col.message, *reply_inputs], outputs, api_name="chat_submit",
                               js=EMPTY_ON_SEND, **MODEL_GROUP),
            col.regenerate.click(on_action("regenerate"), reply_inputs, outputs, api_name="chat_regenerate",
                                 **MODEL_GROUP),
            col.extend.click(on_action("continue"), reply_inputs, outputs, api_name="chat_continue", **MODEL_GROUP),
            col.write_mine.click(on_impersonate, inputs, [col.message, col.stats], api_name="chat_impersonate",
                                 **MODEL_GROUP),
            col.approve.click(on_decide(True), reply_inputs, outputs, api_name="chat_tool_approve", **MODEL_GROUP),
            col.deny.click(on_decide(False), reply_inputs, outputs, api_name="chat_tool_deny", **MODEL_GROUP),
            # An edited message of the user's is sent again: its reply is written on the new branch.
            *(edited.success(on_action("resubmit"), reply_inputs, outputs, api_name=f"{name}_resubmit", **MODEL_GROUP)
              for edited, name in zip(self.edits, ("chat_edit", "chat_edit_message"), strict=True)),
            # A group chat's "Speak now": the member chosen writes the next reply (webui/ui/group_panel.py).
            group_panel.wire_speak(self, on_action("reply"), reply_inputs, outputs, MODEL_GROUP),
        ]
        token_view.wire_reply(col.probs, "chat")
        # Stop runs outside the model group (it must not wait for the reply it stops) and
        # also drops this session's not-yet-started requests from Gradio's queue.
        stop_model = stop_handler(runtime)

        def on_stop(request: gr.Request) -> str:
            running = self.tool_stops.get(session_id(request))
            if running is not None:
                running.set()  # a tool call in progress is stopped too (webui/tools/registry.py)
            return stop_model(request)

        col.stop.click(on_stop, None, col.stats, api_name="chat_stop", cancels=events, concurrency_limit=None).then(
            self.on_stopped, [self.chat_id, self.setup.character], [col.chatbot, col.live, col.times],
            api_name="chat_stopped", concurrency_limit=None, show_progress="hidden")

    @user_errors
    def on_stopped(self, current, who, request: gr.Request):
        """A stopped reply shown finished (issue 31's direction: no cursor, no spinning
        thinking block left): `cancels=` ends the streaming handler before its last update,
        so once the reply has been saved as it ends, the chat is shown again from the
        store.  Nothing changes if the save is not seen within a few seconds."""
        owner, deadline = session_id(request), time.monotonic() + STOPPED_WAIT
        while self.runtime.requests.running(owner) and time.monotonic() < deadline:
            time.sleep(0.05)
        space = self.space(request)
        conversation = actions.open_chat(space, current, who)  # names checked, as everywhere
        path = conversation.path()
        if not path or path[-1].role != "assistant" or not path[-1].note:  # not saved as ended (yet)
            return gr.skip(), gr.skip(), gr.skip()
        return shown_messages(conversation, pictures=self.shelf.for_store(space.images)), "", times_of(conversation)

    # -- the thinking switches ----------------------------------------------------------------------
    def on_load_thinking(self, request: gr.Request) -> dict:
        enable, effort = thinking_ui.shown_for(self.runtime, self.runtime.templates.load(self.setup.template.value))
        return {self.setup.thinking.enable: enable, self.setup.thinking.effort: effort}

    def wire_thinking(self) -> None:
        """Show the switches the template in use reads: when the instruction template
        changes, and whenever the chat changes (a model loaded in the Model tab meanwhile)."""
        setup, col = self.setup, self.col

        @user_errors
        def shown(template_name):
            return thinking_ui.shown_for(self.runtime, self.runtime.templates.load(template_name))

        gr.on([setup.template.change, col.chatbot.change], shown, [setup.template],
              [setup.thinking.enable, setup.thinking.effort], api_name="chat_thinking_switches",
              trigger_mode="always_last", show_progress="hidden")

    # -- the Tools panel ------------------------------------------------------------------------
    def wire_tools(self) -> None:
        setup = self.setup

        def on_tools(tools, always, choice, request: gr.Request):
            known = set(self.tool_names(request))
            for name in [*(tools or []), *(always or []), *([] if choice in ("auto", "none", "required") else [choice])]:
                if name not in known:  # the choices are the browser's; this is the check
                    raise gr.Error(f"unknown tool: {str(name)[:64]!r} is not one of the tools you may use")
            chosen = chat_tools(tools, always, choice)
            return chosen, tools_note(chosen)

        gr.on([setup.tools.input, setup.tools_always.input, setup.tool_choice.input], on_tools,
              [setup.tools, setup.tools_always, setup.tool_choice], [setup.tool_state, setup.tool_note],
              api_name="chat_tools_set", show_progress="hidden")

    # -- the token counter ------------------------------------------------------------------------
    def wire_token_count(self) -> None:
        """Prompt tokens (the chat so far plus the message being typed) / the context."""
        runtime = self.runtime

        def count(value, current, who, mode, template, system, command, enable_thinking, effort,
                  request: gr.Request):
            loaded = runtime.models.current
            if loaded is None:
                return ""
            try:
                text, _ = message_parts(value)
                space = self.space(request)
                setup = actions.chat_setup(space, runtime.templates, mode, who, template, system, command)
                setup = thinking_ui.with_switches(runtime, setup, enable_thinking, effort)
                conversation = _open(space, current, who, setup.character)
                turns = conversation.turns() + ([{"role": "user", "content": text}] if text else [])
                prompt = ChatPrompt(setup, turns, "reply")
                # Rendered whole (room larger than any prompt): the count before truncation.
                prompt(loaded.tokenizer, 1 << 30)
            except USER_ERRORS:
                return ""
            except RuntimeError:
                # A fast tokenizer in use by the model thread refuses a second borrower;
                # the next keystroke counts again.
                return gr.skip()
            return f"{prompt.info.tokens} / {loaded.context_length} tokens"

        col, setup = self.col, self.setup
        inputs = [col.message, self.chat_id, setup.character, setup.mode, setup.template, setup.system,
                  setup.command, setup.thinking.enable, setup.thinking.effort]
        # always_last: while one count runs, only the newest text waits (typing stays cheap).
        gr.on([col.message.change, col.chatbot.change], count, inputs, col.tokens, api_name="chat_count_tokens",
              trigger_mode="always_last", show_progress="hidden")


def chat_tools(allowed, always, choice) -> ChatTools | None:
    """The Tools panel's values as the chat's ChatTools (None: no tools); every name is
    checked again against what the user may use when a reply is offered tools."""
    allowed = [n for n in (allowed or []) if isinstance(n, str)]
    if not allowed:
        return None
    try:
        return ChatTools(allowed=allowed, always=[n for n in (always or []) if n in allowed],
                         choice=choice if isinstance(choice, str) and choice else "auto")
    except ValueError as exc:
        raise gr.Error(f"tools: {exc}") from exc


def tools_note(chosen: ChatTools | None) -> str:
    """What the Tools panel has set for this chat, in words."""
    if chosen is None:
        return "No tools for this chat."
    asks = [name for name in chosen.allowed if name not in chosen.always]
    parts = [f"Tools: {', '.join(chosen.allowed)}"]
    if asks:
        parts.append(f"asking before running {', '.join(asks)}")
    return "; ".join(parts) + f"; tool_choice {chosen.choice}."


def with_lore(space: UserSpace, conversation: Conversation, setup):
    """`setup` with what the chat's reply reads besides its messages: lore, the author's
    note, the passages retrieved for it (webui/chat/roleplay.py)."""
    return replace(setup, roleplay=roleplay.for_chat(space, conversation, setup.character))


def _open(space: UserSpace, current, who, character) -> Conversation:
    try:
        return actions.open_chat(space, current, who, character)
    except USER_ERRORS as exc:
        raise gr.Error(str(exc)) from exc


def _upload_path(file) -> Path | None:
    name = file if isinstance(file, str) else getattr(file, "name", None)
    return Path(name) if name else None


def _text_of(value) -> str:
    """Text of an edited message as the Chatbot sends it (a string or a list of parts)."""
    if isinstance(value, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in value)
    if isinstance(value, dict):
        return str(value.get("text", value.get("content", "")))
    return json.dumps(value) if value is not None else ""
