"""The chat's documents: attach files to the next message, choose libraries for the
chat, see which passages a reply was given and read one; and the Libraries section
(named collections of documents, per user and private like chats).

Wiring only: indexing is webui/documents/indexer.py, what a message carries is
webui/documents/context.py.  The chat tab calls `enrich` once per sent message (its one
hook here); everything else is this panel's own events.  What a tab has attached and
chosen is kept per browser session on the server (never trusted from the browser), and
the files are the signed-in user's own store (webui/documents/service.py).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from webui.chat.history import Conversation, Message
from webui.documents.context import citation, files_in_play, prepare
from webui.documents.errors import DocumentError
from webui.documents.extract import MAX_FILE_BYTES, PARSED, TEXT_SUFFIXES
from webui.documents.indexer import Cancel, ensure_vectors, ingest
from webui.documents.store import DocumentStore
from webui.errors import AppError
from webui.runtime import Runtime
from webui.ui.common import session_id
from webui.userdata import UserSpace

SESSIONS = 1_000  # browser sessions whose choices are remembered (the oldest are forgotten)
DEFAULT_BUDGET = 2_048
FILE_TYPES = sorted(TEXT_SUFFIXES | set(PARSED))


@dataclass
class Choices:
    pending: list[str] = field(default_factory=list)  # attached, not yet sent
    libraries: list[str] = field(default_factory=list)
    budget: int = DEFAULT_BUDGET
    cancel: Cancel = field(default_factory=Cancel)
    listed: list = field(default_factory=list)  # the sources the list shows now


class SessionChoices:
    def __init__(self) -> None:
        self._by_session: OrderedDict[str, Choices] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: str) -> Choices:
        with self._lock:
            choices = self._by_session.pop(session, None) or Choices()
            self._by_session[session] = choices
            while len(self._by_session) > SESSIONS:
                self._by_session.popitem(last=False)
            return choices


_choices = SessionChoices()


def user_of(request: gr.Request | None) -> str | None:
    return getattr(request, "username", None)


def store_of(runtime: Runtime, request: gr.Request | None) -> DocumentStore:
    return runtime.documents.for_user(user_of(request))


def count_tokens(runtime: Runtime):
    loaded = runtime.models.current
    if loaded is None:
        return lambda text: len(text) // 3 + 1  # no tokenizer: a cautious estimate
    return lambda text: len(loaded.tokenizer(text)["input_ids"])


def budget_of(runtime: Runtime, wanted: int) -> int:
    loaded = runtime.models.current
    context = loaded.context_length if loaded is not None else 4096
    return max(64, min(int(wanted), context // 2))  # the rest stays for the chat and the reply


# -- the chat tab's hook -------------------------------------------------------------------
def enrich(runtime: Runtime, request: gr.Request | None, conversation: Conversation, message: Message) -> str:
    """Put the documents in play into `message` (just added by the chat): its text for the
    model gets the whole documents or the retrieved passages; it keeps the attachments
    and the sources.  Returns a note for the chat's status line ("" when none)."""
    if runtime.documents is None:
        return ""
    choices = _choices.get(session_id(request))
    store = store_of(runtime, request)
    libraries = [*choices.libraries, *(n for n in character_libraries(runtime, request, conversation)
                                       if n not in choices.libraries)]
    files = files_in_play(store, conversation, choices.pending, libraries)
    if not files:
        return ""
    who = user_of(request) or session_id(request)
    embedder = runtime.documents.embedder(runtime, who)
    if embedder is not None:  # another embedding model since: its vectors for these files first
        ensure_vectors(store, embedder, [info.id for info in files])
    prepared = prepare(store, embedder, files, message.content, budget_of(runtime, choices.budget),
                       count_tokens(runtime))
    attached = [f for f in choices.pending if any(info.id == f for info in files)]
    shown = message.visible if message.visible is not None else message.content
    names = [info.name for info in files if info.id in attached]
    if names:
        shown += "\n\n📎 " + ", ".join(f"`{n.replace('`', chr(39))}`" for n in names)
    conversation.set_content(message.id, prepared.model_text, visible=shown)
    conversation.set_documents(message.id, attached, prepared.sources)
    choices.pending = []
    if prepared.how == "whole":
        return f"The whole text of {len(files)} document(s) went into the prompt."
    if prepared.how == "passages":
        return f"{len(prepared.sources)} passage(s) retrieved from {len(files)} document(s)."
    return ""


def character_libraries(runtime: Runtime, request: gr.Request | None, conversation: Conversation) -> list[str]:
    """The libraries the chat's character reads from in every chat (Character tab)."""
    characters = runtime.users.get(user_of(request)).characters
    try:
        return list(characters.load(conversation.character).libraries)
    except (AppError, ValueError, OSError):  # a character deleted since, or one that no longer reads
        return []


def sources_of(conversation: Conversation | None) -> list:
    """The sources given with the last user message that had any, on the shown path."""
    if conversation is None:
        return []
    for message in reversed(conversation.path()):
        if message.role == "user" and message.sources:
            return list(message.sources)
    return []


def _markdown_inert(text: str) -> str:
    """A file name shown inside Markdown: its punctuation escaped, so a name cannot make
    a link, an image or emphasis."""
    return "".join("\\" + ch if ch in "\\`*_[]()<>#!|~" else ch for ch in text)


def cite(conversation: Conversation, view, streaming: bool = False) -> None:
    """Under each reply that was given passages, the list of them ("Sources: [1] atlas.pdf,
    p. 18 · ..."), in the Chatbot's messages (`view`: webui/chat/display.py's Shown);
    *Sources of the last reply* shows one.  Display only: the saved reply is unchanged."""
    path = conversation.path()
    if not any(m.sources for m in path):
        return
    for index, (position, part) in enumerate(zip(view.positions, view.parts, strict=True)):
        if part != "message" or position == 0 or (streaming and position == len(path) - 1):
            continue  # a reply streaming: its bubble is page.js's
        asked, reply = path[position - 1], path[position]
        message = view.messages[index]
        if reply.role == "assistant" and asked.role == "user" and asked.sources and isinstance(
                message.get("content"), str):
            names = " · ".join(_markdown_inert(citation(s)) for s in asked.sources)
            view.messages[index] = {**message, "content": f"{message['content']}\n\n---\n*Sources:* {names}"}


# -- layout and events ---------------------------------------------------------------------
@dataclass
class Panel:
    attach: gr.File
    status: gr.Markdown
    stop: gr.Button
    libraries: gr.Dropdown
    budget: gr.Slider
    sources: gr.Radio
    passage: gr.Textbox
    library_name: gr.Textbox
    create_library: gr.Button
    library_pick: gr.Dropdown
    library_upload: gr.File
    library_files: gr.Markdown
    delete_library: gr.Button


def render() -> Panel:
    with gr.Accordion("Documents", open=False, elem_id="chat-documents"):
        attach = gr.File(label="Attach to the next message", file_count="multiple", file_types=FILE_TYPES,
                         type="filepath", elem_id="chat-attach")
        status = gr.Markdown(elem_id="chat-attach-status")
        stop = gr.Button("Stop indexing", size="sm", elem_id="chat-attach-stop")
        libraries = gr.Dropdown([], value=[], multiselect=True, label="Libraries for this chat",
                                elem_id="chat-libraries")
        budget = gr.Slider(256, 32_768, value=DEFAULT_BUDGET, step=256, label="Documents may take (tokens)",
                           info="A document that fits goes in whole; otherwise the passages found for each "
                                "message (at most half the model's context).", elem_id="chat-doc-budget")
        sources = gr.Radio([], label="Sources of the last reply", elem_id="chat-sources")
        passage = gr.Textbox("", label="Passage", lines=6, interactive=False, elem_id="chat-passage")
    with gr.Accordion("Libraries", open=False, elem_id="libraries"):
        library_name = gr.Textbox("", label="New library name", elem_id="library-name")
        create_library = gr.Button("Create library", size="sm", elem_id="library-create")
        library_pick = gr.Dropdown([], label="Library", elem_id="library-pick")
        library_upload = gr.File(label="Add documents to this library", file_count="multiple",
                                 file_types=FILE_TYPES, type="filepath", elem_id="library-upload")
        library_files = gr.Markdown(elem_id="library-files")
        delete_library = gr.Button("Delete library", size="sm", variant="stop", elem_id="library-delete")
    return Panel(attach, status, stop, libraries, budget, sources, passage, library_name, create_library,
                 library_pick, library_upload, library_files, delete_library)


def _paths(files) -> list[Path]:
    if not files:
        return []
    items = files if isinstance(files, list) else [files]
    return [Path(f if isinstance(f, str) else getattr(f, "name", "")) for f in items if f]


def _read(path: Path) -> bytes:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DocumentError(f"{path.name}: a document may have at most {MAX_FILE_BYTES >> 20} MB",
                            code="file_too_large", status=413)
    return path.read_bytes()


def _index(runtime: Runtime, request: gr.Request, files, progress: gr.Progress) -> tuple[list[str], list[str]]:
    """Index uploaded files into the user's store: (ids indexed, error lines)."""
    choices = _choices.get(session_id(request))
    choices.cancel = Cancel()
    store = store_of(runtime, request)
    embedder = runtime.documents.embedder(runtime, user_of(request) or session_id(request))
    done, errors = [], []
    for path in _paths(files):
        name = _original_name(path)
        try:
            info = ingest(store, name, _read(path), embedder, choices.cancel,
                          lambda fraction, text, n=name: progress(fraction, desc=f"{n}: {text}"))
            done.append(info.id)
        except (AppError, OSError) as exc:
            errors.append(f"**{name}**: {exc}")
            if choices.cancel.is_set():
                break
    return done, errors


def _original_name(path: Path) -> str:
    return path.name  # Gradio keeps the uploaded file's own name in its cache folder


def _library_listing(store: DocumentStore, name: str | None) -> str:
    if not name:
        return ""
    try:
        collection = store.library(name)
    except LookupError:
        return ""
    files = [store.file(f) for f in store.ready_files(collection.id)]
    if not files:
        return "_No documents yet._"
    return "\n".join(f"- `{f.name.replace('`', chr(39))}` ({f.pages or 0} page(s), {f.chars or 0:,} characters)"
                     for f in files)


def wire(runtime: Runtime, panel: Panel, chat_id: gr.State, chatbot: gr.Chatbot, user_space) -> list:
    """The panel's events; returns (fn, outputs) for the page-load event."""

    def library_names(request: gr.Request) -> list[str]:
        return [c.name for c in store_of(runtime, request).collections("library")]

    def on_attach(files, request: gr.Request, progress=gr.Progress()):  # noqa: B008 - Gradio's way
        done, errors = _index(runtime, request, files, progress)
        choices = _choices.get(session_id(request))
        choices.pending = list(dict.fromkeys(choices.pending + done))
        store = store_of(runtime, request)
        names = [store.file(f).name for f in choices.pending]
        lines = ([f"Attached to your next message: {', '.join(f'`{n}`' for n in names)}"] if names else []) + errors
        return "\n\n".join(lines), None

    def on_stop(request: gr.Request):
        _choices.get(session_id(request)).cancel.set()
        return "Stopping…"

    def on_libraries(chosen, request: gr.Request):
        known = set(library_names(request))
        _choices.get(session_id(request)).libraries = [n for n in (chosen or []) if n in known]

    def on_budget(value, request: gr.Request):
        try:
            _choices.get(session_id(request)).budget = max(256, min(32_768, int(value)))
        except (TypeError, ValueError):
            pass

    def on_chat_change(current, request: gr.Request):
        conversation = _load(user_space(request), current)
        listed = [(citation(s), s.n) for s in sources_of(conversation)]
        choices = _choices.get(session_id(request))
        if listed == choices.listed:  # the chat changed, its sources did not: leave the passage shown
            return gr.skip(), gr.skip()
        choices.listed = listed
        return gr.update(choices=listed, value=None), ""

    def on_source(picked, current, request: gr.Request):
        found = {s.n: s for s in sources_of(_load(user_space(request), current))}
        source = found.get(picked) if isinstance(picked, int) else None
        return "" if source is None else f"{citation(source)}\n\n{source.text}"

    def on_create(name, request: gr.Request):
        store = store_of(runtime, request)
        try:
            store.create_collection(name, "library")
        except AppError as exc:
            raise gr.Error(str(exc)) from exc
        names = library_names(request)
        created = names[-1] if names else None
        return gr.update(choices=names, value=created), gr.update(choices=names), "", _library_listing(store, created)

    def on_pick_library(name, request: gr.Request):
        store = store_of(runtime, request)
        if name:
            _library(store, name)  # an unknown or invalid name is refused, not shown as empty
        return _library_listing(store, name)

    def on_library_upload(name, files, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        store = store_of(runtime, request)
        collection = _library(store, name)
        done, errors = _index(runtime, request, files, progress)
        for file_id in done:
            store.set_member(collection.id, file_id, "completed")
        return _library_listing(store, name) + ("\n\n" + "\n\n".join(errors) if errors else ""), None

    def on_delete_library(name, request: gr.Request):
        store = store_of(runtime, request)
        collection = _library(store, name)
        for file_id in store.ready_files(collection.id):
            store.delete_file(file_id)
        store.delete_collection(collection.id)
        names = library_names(request)
        return gr.update(choices=names, value=None), gr.update(choices=names, value=[]), ""

    panel.attach.upload(on_attach, [panel.attach], [panel.status, panel.attach], api_name="documents_attach")
    panel.stop.click(on_stop, None, panel.status, api_name="documents_stop")
    panel.libraries.change(on_libraries, [panel.libraries], None, api_name="documents_libraries")
    panel.budget.change(on_budget, [panel.budget], None, api_name="documents_budget")
    # Quick reads: no progress overlay on the list (it would sit over the choices, under
    # the user's pointer, while the chat's updates queue the next refresh).
    chatbot.change(on_chat_change, [chat_id], [panel.sources, panel.passage], api_name="documents_sources",
                   show_progress="hidden")
    panel.sources.select(on_source, [panel.sources, chat_id], panel.passage, api_name="documents_passage",
                         show_progress="hidden")
    panel.create_library.click(on_create, [panel.library_name],
                               [panel.library_pick, panel.libraries, panel.library_name, panel.library_files],
                               api_name="library_create")
    panel.library_pick.change(on_pick_library, [panel.library_pick], panel.library_files, api_name="library_show")
    panel.library_upload.upload(on_library_upload, [panel.library_pick, panel.library_upload],
                                [panel.library_files, panel.library_upload], api_name="library_add")
    panel.delete_library.click(on_delete_library, [panel.library_pick], [panel.library_pick, panel.libraries,
                                                                         panel.library_files],
                               api_name="library_delete")

    def on_load(request: gr.Request) -> dict:
        names = library_names(request)
        return {panel.libraries: gr.update(choices=names, value=[]), panel.library_pick: gr.update(choices=names)}

    return [(on_load, [panel.libraries, panel.library_pick])]


def _library(store: DocumentStore, name):
    """The user's library called `name`, or the refusal shown in the browser."""
    try:
        return store.library(name)
    except AppError as exc:
        raise gr.Error(str(exc) if name else "choose or create a library first") from None


def _load(space: UserSpace, current) -> Conversation | None:
    try:
        return space.chats.load(current) if current else None
    except (AppError, ValueError):
        return None


# -- the Model tab's embedding choice ------------------------------------------------------------
LOADED_LABEL = "the loaded model's own embeddings"


def render_embedding_choice(runtime: Runtime) -> None:
    """Which model embeds documents: a sentence-transformers folder in models/ (the hub
    panel above downloads one), or the loaded language model's own embeddings."""
    if runtime.documents is None:
        return
    documents = runtime.documents

    def choices() -> list[tuple[str, str]]:
        return [(LOADED_LABEL, "")] + [(name, name) for name in documents.embedding_choices()]

    with gr.Accordion("Embedding model for documents", open=False):
        with gr.Row():
            pick = gr.Dropdown(choices(), value=documents.chosen(), label="Embedding model", scale=3,
                               info="A sentence-transformers folder in models/; vectors of another model are "
                                    "computed again when a document is next used.", elem_id="embedding-model")
            refresh = gr.Button("↻", scale=0, min_width=40)
        note = gr.Markdown()

    def on_pick(name):
        try:
            chosen = documents.choose(name or "")
        except AppError as exc:
            raise gr.Error(str(exc)) from exc
        return f"Documents are embedded with **{chosen or LOADED_LABEL}**."

    pick.input(on_pick, [pick], note, api_name="embedding_model")
    refresh.click(lambda: gr.update(choices=choices(), value=documents.chosen()), None, pick,
                  api_name="embedding_model_refresh")
