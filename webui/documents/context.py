"""What a chat message carries from the user's documents into the prompt.

When the documents in play (attached to this conversation's messages, and the
libraries chosen for the chat) fit the budget, their whole text goes in; when they do
not, the passages retrieved for this message do (webui/documents/search.py), numbered so
the reply can cite them as [n].  Either way the message keeps what went in
(history.Source), so the chat can list and show it later, and a regenerated reply sees
the same text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from webui.chat.history import MAX_SOURCE_CHARS, MAX_SOURCES, Conversation, Source
from webui.documents.embedders import Embedder
from webui.documents.search import search
from webui.documents.store import DocumentStore, FileInfo

PASSAGES = 5
# Characters per token are at least this many for any tokenizer on prose: a text with
# more characters than budget x this cannot fit, and is not tokenized to find out.
MIN_CHARS_PER_TOKEN = 1


@dataclass(frozen=True)
class Prepared:
    model_text: str  # the message as the model sees it
    sources: list[Source]
    how: str  # "whole", "passages", or "" (no documents in play)


def files_in_play(store: DocumentStore, conversation: Conversation, pending: list[str],
                  libraries: list[str]) -> list[FileInfo]:
    """The indexed files this message may draw on: those attached to earlier messages of
    the conversation's shown path, those attached now, and the chosen libraries' files.
    Ids that are not in this user's store are skipped (never an error: a file deleted
    since is simply gone)."""
    wanted: list[str] = []
    for message in conversation.path():
        wanted += message.attachments
    wanted += pending
    for name in libraries:
        try:
            wanted += store.ready_files(store.library(name).id)
        except LookupError:
            continue
    found = []
    for file_id in dict.fromkeys(wanted):
        try:
            info = store.file(file_id)
        except LookupError:
            continue
        if info.indexed is not None:
            found.append(info)
    return found


def prepare(store: DocumentStore, embedder: Embedder | None, files: list[FileInfo], message: str,
            budget_tokens: int, count_tokens: Callable[[str], int]) -> Prepared:
    if not files:
        return Prepared(message, [], "")
    whole = [(info, "\n\n".join(text for _, text in store.pages(info.id))) for info in files]
    block = "The user attached these documents:\n\n" + "\n\n".join(
        f'<document name="{info.name}">\n{text}\n</document>' for info, text in whole)
    if len(block) <= budget_tokens * 8 and count_tokens(block) <= budget_tokens:
        sources = [Source(n=i, file=info.name, file_id=info.id, text=text[:MAX_SOURCE_CHARS], whole=True)
                   for i, (info, text) in enumerate(whole[:MAX_SOURCES], 1)]
        return Prepared(f"{block}\n\n{message}", sources, "whole")
    hits = search(store, message, [info.id for info in files], embedder, k=PASSAGES)
    sources, parts, used = [], [], count_tokens(message) + 40
    for hit in hits:
        chunk = hit.chunk
        where = f"{chunk.name}, page {chunk.page}" if chunk.page is not None else chunk.name
        part = f"[{len(sources) + 1}] ({where})\n{chunk.text}"
        cost = count_tokens(part)
        if used + cost > budget_tokens and sources:
            break
        used += cost
        parts.append(part)
        sources.append(Source(n=len(sources) + 1, file=chunk.name, file_id=chunk.file, page=chunk.page,
                              start=chunk.start, end=chunk.end, text=chunk.text[:MAX_SOURCE_CHARS]))
    if not sources:
        return Prepared(message, [], "")
    text = ("Passages from the user's documents that may help; cite them by number, like [1]:\n\n"
            + "\n\n".join(parts) + f"\n\n{message}")
    return Prepared(text, sources, "passages")


def citation(source: Source) -> str:
    """One line naming a source: "[2] atlas.pdf, p. 3" (or "whole document")."""
    where = "whole document" if source.whole else (f"p. {source.page}" if source.page is not None else "passage")
    return f"[{source.n}] {source.file}, {where}"
