"""Indexing: a file's text extracted, chunked, embedded and stored, with progress and
cancel; and the job board the UI and the API run it on.

A file is stored whole or not at all: its pages, chunks and vectors go into the store
in one transaction at the end (DocumentStore.save_index), so a bad file, a failure or a
cancel leaves nothing of it in the index.  Incremental: a file already indexed with the
same bytes is not read again, and only chunks without a vector from the current
embedding model are embedded (`ensure_vectors`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from webui.documents.chunking import OVERLAP, SIZE, chunk_pages, word_spans
from webui.documents.embedders import BATCH, Embedder
from webui.documents.errors import DocumentError, IndexCancelled
from webui.documents.extract import extract, kind_of
from webui.documents.store import DocumentStore, FileInfo, clean_name

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]


def _quiet(fraction: float, text: str) -> None:
    pass


class Cancel:
    """Set by Stop; checked between steps (and it stops a model embedder's queued batch)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._hooks: list[Callable[[], None]] = []

    def set(self) -> None:
        self._event.set()
        for hook in list(self._hooks):
            hook()

    def on_cancel(self, hook: Callable[[], None]) -> None:
        self._hooks.append(hook)

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise IndexCancelled("indexing was cancelled; nothing of the file was kept")


def embed_texts(embedder: Embedder, texts: list[str], cancel: Cancel, progress: Progress = _quiet,
                start: float = 0.0, span: float = 1.0) -> np.ndarray:
    hook = getattr(embedder, "cancel", None)
    if hook is not None:
        cancel.on_cancel(hook)
    parts = []
    for first in range(0, len(texts), BATCH):
        cancel.check()
        parts.append(embedder.embed(texts[first:first + BATCH]))
        done = min(first + BATCH, len(texts))
        progress(start + span * done / max(1, len(texts)), f"embedded {done} of {len(texts)} passages")
    cancel.check()
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def index_file(store: DocumentStore, file_id: str, embedder: Embedder | None, cancel: Cancel | None = None,
               progress: Progress = _quiet, chunk_tokens: int = SIZE, overlap: int = OVERLAP) -> FileInfo:
    """Extract, chunk, embed and store one stored file (all or nothing)."""
    cancel = cancel or Cancel()
    info = store.file(file_id)
    if info.indexed is not None:
        if embedder is not None:
            ensure_vectors(store, embedder, [info.id], cancel, progress)
        return store.file(info.id)
    progress(0.0, f"reading {info.name}")
    extracted = extract(store.content(info.id), info.name)
    cancel.check()
    spans = embedder.token_spans if embedder is not None else word_spans
    chunks = chunk_pages(extracted.pages, spans, chunk_tokens, overlap)
    progress(0.1, f"{len(extracted.pages)} page(s), {len(chunks)} passages")
    vectors = None
    if embedder is not None and chunks:
        vectors = {embedder.name: embed_texts(embedder, [c.text for c in chunks], cancel, progress, 0.1, 0.85)}
    cancel.check()
    store.save_index(info.id, [(p.number, p.text) for p in extracted.pages], chunks, vectors)
    progress(1.0, f"indexed {info.name}")
    return store.file(info.id)


def ingest(store: DocumentStore, name: str, data: bytes, embedder: Embedder | None, cancel: Cancel | None = None,
           progress: Progress = _quiet, chunk_tokens: int = SIZE, overlap: int = OVERLAP) -> FileInfo:
    """An uploaded file kept and indexed; on any failure nothing of it stays.  The same
    bytes under the same name, indexed before, are not read again: that file is the
    answer (with vectors from `embedder` added where it lacks them)."""
    kind = kind_of(name)
    same = store.find_same(hashlib.sha256(data).hexdigest(), clean_name(name))
    if same is not None:
        if embedder is not None:
            ensure_vectors(store, embedder, [same.id], cancel, progress)
        progress(1.0, f"{same.name} was indexed already")
        return same
    info = store.add_file(name, data, kind)
    try:
        return index_file(store, info.id, embedder, cancel, progress, chunk_tokens, overlap)
    except BaseException:
        store.delete_file(info.id)
        raise


def ensure_vectors(store: DocumentStore, embedder: Embedder, files: list[str], cancel: Cancel | None = None,
                   progress: Progress = _quiet) -> int:
    """Embed the files' chunks that lack a vector from `embedder`; returns how many.
    Saved batch by batch: a cancel keeps the batches done (each is whole), which the
    next run does not redo."""
    cancel = cancel or Cancel()
    missing = store.missing_vectors(embedder.name, files)
    for first in range(0, len(missing), BATCH * 8):
        batch = missing[first:first + BATCH * 8]
        vectors = embed_texts(embedder, [text for _, text in batch], cancel)
        store.save_vectors(embedder.name, [i for i, _ in batch], vectors)
        progress(min(first + len(batch), len(missing)) / len(missing), f"embedded {first + len(batch)} of "
                 f"{len(missing)} passages")
    return len(missing)


@dataclass
class Job:
    id: str
    label: str
    cancel: Cancel = field(default_factory=Cancel)
    fraction: float = 0.0
    text: str = "queued"
    done: bool = False
    error: DocumentError | None = None
    started: float = field(default_factory=time.time)

    def progress(self, fraction: float, text: str) -> None:
        self.fraction, self.text = fraction, text


class JobBoard:
    """Index jobs run on a small pool of threads (never the event loop, never the
    engine's thread); each can be watched and cancelled by its id."""

    def __init__(self, workers: int = 2):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="index")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, job_id: str, label: str, work: Callable[[Job], None]) -> Job:
        job = Job(job_id, label)
        with self._lock:
            self._jobs = {k: j for k, j in self._jobs.items() if not j.done or time.time() - j.started < 3600}
            self._jobs[job_id] = job

        def run() -> None:
            try:
                work(job)
            except DocumentError as exc:
                job.error = exc
            except IndexCancelled:
                job.error = DocumentError("cancelled", code="cancelled")
            except Exception as exc:  # a bug, not the file's fault: logged, and the job says so
                log.exception("indexing %s failed", label)
                job.error = DocumentError(f"indexing failed: {type(exc).__name__}", code="server_error", status=500)
            finally:
                job.done = True

        self._pool.submit(run)
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> bool:
        job = self._jobs.get(job_id)
        if job is None or job.done:
            return False
        job.cancel.set()
        return True
