"""One owner's documents on disk: a folder with the original files and one SQLite file.

The SQLite file holds the files' metadata, their chunks, a full-text index of the
chunks (SQLite's FTS5, whose `bm25()` ranks them) and each chunk's vector per
embedding model (float32 blobs).  Why SQLite and not a vector database:
docs/DOCUMENTS.md.  In short: it is in Python's standard library; one file per owner;
a file's chunks, index entries and vectors are written in ONE transaction, so a
failure or a cancel leaves nothing half-indexed; and an exact scan of the vectors
(numpy, cached in memory) answers in milliseconds at the sizes one person has
(bench/bench_retrieval.py, docs/SCALING.md).

Owners are users (webui/userdata.py: <user folder>/documents/) or API keys
(user_data/api-documents/<key label>/): nothing here is shared between two owners.
Collections are named sets of files: a user's "libraries" and the API's vector stores.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from webui.documents.chunking import Chunk
from webui.documents.errors import DocumentError
from webui.errors import AppError
from webui.paths import NameRefused, is_plain_name
from webui.storage import atomic_write_bytes

SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS files(
    id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, bytes INTEGER NOT NULL, sha256 TEXT NOT NULL,
    created REAL NOT NULL, purpose TEXT NOT NULL DEFAULT 'assistants',
    pages INTEGER, chars INTEGER, tokens INTEGER, indexed REAL);
CREATE TABLE IF NOT EXISTS pages(file TEXT NOT NULL, seq INTEGER NOT NULL, number INTEGER, text TEXT NOT NULL,
    PRIMARY KEY(file, seq));
CREATE TABLE IF NOT EXISTS collections(
    id TEXT PRIMARY KEY, name TEXT NOT NULL, origin TEXT NOT NULL, created REAL NOT NULL,
    UNIQUE(origin, name));
CREATE TABLE IF NOT EXISTS members(
    collection TEXT NOT NULL, file TEXT NOT NULL, status TEXT NOT NULL, error TEXT, created REAL NOT NULL,
    PRIMARY KEY(collection, file));
CREATE TABLE IF NOT EXISTS chunks(
    id INTEGER PRIMARY KEY, file TEXT NOT NULL, seq INTEGER NOT NULL, page INTEGER,
    start INTEGER NOT NULL, "end" INTEGER NOT NULL, tokens INTEGER NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_file ON chunks(file);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, content='chunks', content_rowid='id', tokenize='porter unicode61');
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text); END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text); END;
CREATE TABLE IF NOT EXISTS vectors(
    embedder TEXT NOT NULL, chunk INTEGER NOT NULL, vector BLOB NOT NULL, PRIMARY KEY(embedder, chunk));
CREATE INDEX IF NOT EXISTS vectors_chunk ON vectors(chunk);
"""

# What one owner may keep: bounds the disk and the memory of the vector cache.
MAX_FILES = 10_000
MAX_STORED_BYTES = 4 << 30
MAX_COLLECTIONS = 1_000
MAX_TERMS = 64  # words of a query sent to the full-text index
COMMON_TERMS_FROM = 5_000  # chunks in a store from which terms found in most chunks are dropped


class NotFound(AppError, LookupError):
    status, code = 404, "not_found"


@dataclass(frozen=True)
class FileInfo:
    id: str
    name: str
    kind: str
    bytes: int
    sha256: str
    created: float
    purpose: str
    pages: int | None
    chars: int | None
    tokens: int | None
    indexed: float | None


@dataclass(frozen=True)
class Collection:
    id: str
    name: str
    origin: str
    created: float


@dataclass(frozen=True)
class Member:
    collection: str
    file: str
    status: str  # "in_progress", "completed", "failed", "cancelled"
    error: str | None
    created: float


@dataclass(frozen=True)
class StoredChunk:
    id: int
    file: str
    name: str  # the file's name, for citations
    page: int | None
    start: int
    end: int
    text: str


_ID = re.compile(r"(?:file-|vs_)[0-9a-f]{24}")


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


class DocumentStore:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._generation = 0  # bumped by every write that changes chunks or vectors
        self._matrix: dict[str, tuple] = {}

    # -- plumbing --------------------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            (self.folder / "files").mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.folder / "index.sqlite", check_same_thread=False, isolation_level=None)
            db.executescript(SCHEMA)
            self._db = db
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _rows(self, sql: str, args: Sequence = ()) -> list[tuple]:
        """A read: on an owner who has never stored anything it finds nothing, and creates
        nothing (a request naming some id must not leave a folder behind)."""
        with self._lock:
            if self._db is None and not (self.folder / "index.sqlite").exists():
                return []
            return self.db.execute(sql, args).fetchall()

    def _write(self, statements: Iterable[tuple[str, Sequence]]) -> None:
        """Run statements in one transaction: all of them happen, or none."""
        with self._lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    db.execute(sql, args)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._generation += 1

    # -- files -----------------------------------------------------------------------
    def add_file(self, name: str, data: bytes, kind: str, purpose: str = "assistants") -> FileInfo:
        """Keep an uploaded file (its bytes under a generated name, never its own)."""
        name = clean_name(name)
        with self._lock:
            self.db  # noqa: B018 - created on the first write
            count, used = self._rows("SELECT count(*), coalesce(sum(bytes), 0) FROM files")[0]
            if count >= MAX_FILES:
                raise DocumentError(f"you keep {count:,} files, the most one may; delete some first",
                                    code="quota_exceeded", status=429)
            if used + len(data) > MAX_STORED_BYTES:
                raise DocumentError(f"your documents would take over {MAX_STORED_BYTES >> 30} GB; delete some "
                                    "first", code="quota_exceeded", status=429)
            info = FileInfo(new_id("file-"), name, kind, len(data), hashlib.sha256(data).hexdigest(), time.time(),
                            purpose, None, None, None, None)
            atomic_write_bytes(self._blob(info.id), data)
            try:
                self._write([("INSERT INTO files(id, name, kind, bytes, sha256, created, purpose) VALUES (?,?,?,?,?,?,?)",
                              (info.id, info.name, info.kind, info.bytes, info.sha256, info.created, info.purpose))])
            except BaseException:
                self._blob(info.id).unlink(missing_ok=True)
                raise
            return info

    def _blob(self, file_id: str) -> Path:
        return self.folder / "files" / file_id

    def files(self) -> list[FileInfo]:
        return [FileInfo(*row) for row in self._rows(f"SELECT {_FILE_COLUMNS} FROM files ORDER BY created")]

    def file(self, file_id: object) -> FileInfo:
        rows = self._rows(f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ?", (file_id,)) if isinstance(
            file_id, str) else []
        if not rows:
            # The id is named only when it looks like one of ours: nothing a request sent is echoed.
            shown = file_id if isinstance(file_id, str) and _ID.fullmatch(file_id) else "(not a file id)"
            raise NotFound(f"no such file: {shown}", param="file_id")
        return FileInfo(*rows[0])

    def content(self, file_id: str) -> bytes:
        return self._blob(self.file(file_id).id).read_bytes()

    def find_same(self, sha256: str, name: str) -> FileInfo | None:
        """An indexed file with the same bytes and name (indexing it again would change nothing)."""
        rows = self._rows(f"SELECT {_FILE_COLUMNS} FROM files WHERE sha256 = ? AND name = ? AND indexed IS NOT NULL",
                          (sha256, name))
        return FileInfo(*rows[0]) if rows else None

    def delete_file(self, file_id: str) -> None:
        info = self.file(file_id)
        self._write([("DELETE FROM vectors WHERE chunk IN (SELECT id FROM chunks WHERE file = ?)", (info.id,)),
                     ("DELETE FROM chunks WHERE file = ?", (info.id,)),
                     ("DELETE FROM pages WHERE file = ?", (info.id,)),
                     ("DELETE FROM members WHERE file = ?", (info.id,)),
                     ("DELETE FROM files WHERE id = ?", (info.id,))])
        self._blob(info.id).unlink(missing_ok=True)

    def save_index(self, file_id: str, pages: Sequence[tuple[int | None, str]], chunks: Sequence[Chunk],
                   vectors: dict[str, np.ndarray] | None = None) -> None:
        """A file's pages, chunks and (optionally) their vectors, replacing any it had, in
        one transaction."""
        info = self.file(file_id)
        statements: list[tuple[str, Sequence]] = [
            ("DELETE FROM vectors WHERE chunk IN (SELECT id FROM chunks WHERE file = ?)", (info.id,)),
            ("DELETE FROM chunks WHERE file = ?", (info.id,)),
            ("DELETE FROM pages WHERE file = ?", (info.id,)),
        ]
        statements += [("INSERT INTO pages(file, seq, number, text) VALUES (?,?,?,?)", (info.id, i, number, text))
                       for i, (number, text) in enumerate(pages)]
        with self._lock:
            first = self._rows("SELECT coalesce(max(id), 0) + 1 FROM chunks")[0][0]
            for i, chunk in enumerate(chunks):
                statements.append(('INSERT INTO chunks(id, file, seq, page, start, "end", tokens, text) '
                                   "VALUES (?,?,?,?,?,?,?,?)",
                                   (first + i, info.id, i, chunk.page, chunk.start, chunk.end, chunk.tokens,
                                    chunk.text)))
            for embedder, matrix in (vectors or {}).items():
                statements += [("INSERT INTO vectors(embedder, chunk, vector) VALUES (?,?,?)",
                                (embedder, first + i, _blob_of(row))) for i, row in enumerate(matrix)]
            statements.append(("UPDATE files SET pages = ?, chars = ?, tokens = ?, indexed = ? WHERE id = ?",
                               (len(pages), sum(len(t) for _, t in pages), sum(c.tokens for c in chunks),
                                time.time(), info.id)))
            self._write(statements)

    def pages(self, file_id: str) -> list[tuple[int | None, str]]:
        return [(n, t) for n, t in self._rows("SELECT number, text FROM pages WHERE file = ? ORDER BY seq",
                                               (file_id,))]

    # -- vectors ---------------------------------------------------------------------
    def missing_vectors(self, embedder: str, files: Sequence[str]) -> list[tuple[int, str]]:
        """(chunk id, text) of the files' chunks that have no vector from `embedder` yet."""
        marks = ",".join("?" * len(files))
        return self._rows(f"SELECT c.id, c.text FROM chunks c WHERE c.file IN ({marks}) AND NOT EXISTS "
                          "(SELECT 1 FROM vectors v WHERE v.embedder = ? AND v.chunk = c.id) ORDER BY c.id",
                          (*files, embedder)) if files else []

    def save_vectors(self, embedder: str, ids: Sequence[int], matrix: np.ndarray) -> None:
        self._write([("INSERT OR REPLACE INTO vectors(embedder, chunk, vector) VALUES (?,?,?)",
                      (embedder, int(i), _blob_of(row))) for i, row in zip(ids, matrix, strict=True)])

    def vector_matrix(self, embedder: str) -> tuple[np.ndarray, np.ndarray, dict[str, int], np.ndarray]:
        """(chunk ids, each chunk's file as a number, file id -> that number, the unit
        vectors as rows) of every chunk `embedder` has embedded; cached until the next
        write.  Files are numbers so that choosing a few files' rows is one integer
        comparison per row, not a string comparison."""
        with self._lock:
            cached = self._matrix.get(embedder)
            if cached and cached[0] == self._generation:
                return cached[1:]
            rows = self._rows("SELECT v.chunk, c.file, v.vector FROM vectors v JOIN chunks c ON c.id = v.chunk "
                              "WHERE v.embedder = ? ORDER BY v.chunk", (embedder,))
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            numbers: dict[str, int] = {}
            files = np.array([numbers.setdefault(r[1], len(numbers)) for r in rows], dtype=np.int32)
            matrix = (np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), -1) if rows
                      else np.zeros((0, 0), dtype=np.float32))
            self._matrix = {embedder: (self._generation, ids, files, numbers, matrix)}  # one model's at a time
            return ids, files, numbers, matrix

    # -- chunks and full text --------------------------------------------------------
    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._rows(f'SELECT c.id, c.file, f.name, c.page, c.start, c."end", c.text FROM chunks c '
                          f"JOIN files f ON f.id = c.file WHERE c.id IN ({marks})", [int(i) for i in ids])
        return {row[0]: StoredChunk(*row) for row in rows}

    def chunk_count(self, files: Sequence[str] | None = None) -> int:
        if files is None:
            rows = self._rows("SELECT count(*) FROM chunks")
        else:
            marks = ",".join("?" * len(files))
            rows = self._rows(f"SELECT count(*) FROM chunks WHERE file IN ({marks})", list(files)) if files else []
        return rows[0][0] if rows else 0

    def bm25(self, words: Sequence[str], files: Sequence[str], limit: int) -> list[tuple[int, float]]:
        """(chunk id, score) of the best `limit` chunks of `files` for any of `words`,
        best first (FTS5's bm25: lower is better, so it is negated)."""
        if not words or not files:
            return []
        words = self._telling(["\"" + w.replace('"', "") + '"' for w in words[:MAX_TERMS]])
        query = " OR ".join(words)
        marks = ",".join("?" * len(files))
        rows = self._rows(f"SELECT chunks_fts.rowid, bm25(chunks_fts) AS s FROM chunks_fts JOIN chunks c ON "
                          f"c.id = chunks_fts.rowid WHERE chunks_fts MATCH ? AND c.file IN ({marks}) "
                          "ORDER BY s LIMIT ?", (query, *files, limit))
        return [(row[0], -row[1]) for row in rows]

    def _telling(self, terms: list[str]) -> list[str]:
        """The terms that tell chunks apart: in a large store, a term found in more than a
        quarter of all chunks is dropped (unless every term is), because ranking the
        chunks it matches costs time in proportion to them (bench/bench_retrieval.py) and
        its BM25 weight is near nothing anyway.  Counting stops at that quarter, so the
        check reads at most that many entries of each term's list."""
        total = self.chunk_count()
        if total < COMMON_TERMS_FROM:
            return terms
        cap = total // 4
        kept = [t for t in terms if self._rows("SELECT count(*) FROM (SELECT rowid FROM chunks_fts WHERE chunks_fts "
                                               "MATCH ? LIMIT ?)", (t, cap + 1))[0][0] <= cap]
        return kept or terms

    # -- collections -----------------------------------------------------------------
    def create_collection(self, name: str, origin: str) -> Collection:
        if origin == "library" and not is_plain_name(name):
            # A library is chosen by its name in the browser: names are plain, as every
            # name the UI takes is (webui/paths.py).
            raise NameRefused("invalid library name: use letters, digits, spaces, '.', '-' or '_' (at most 128, no "
                              "leading dot, no trailing dot or space)", param="name", status=400, code="invalid_value")
        name = clean_name(name)
        with self._lock:
            self.db  # noqa: B018 - created on the first write
            if self._rows("SELECT count(*) FROM collections")[0][0] >= MAX_COLLECTIONS:
                raise DocumentError(f"you keep {MAX_COLLECTIONS:,} collections, the most one may",
                                    code="quota_exceeded", status=429)
            if origin == "library" and self._rows("SELECT 1 FROM collections WHERE origin = ? AND name = ?",
                                                  (origin, name)):
                raise DocumentError(f"a library named {name!r} exists already", param="name", code="exists",
                                    status=409)
            collection = Collection(new_id("vs_"), name, origin, time.time())
            if origin != "library":  # the API's names need not be unique: suffix the id
                collection = Collection(collection.id, f"{name}\x00{collection.id}", origin, collection.created)
            self._write([("INSERT INTO collections(id, name, origin, created) VALUES (?,?,?,?)",
                          (collection.id, collection.name, origin, collection.created))])
            return self.collection(collection.id)

    def collections(self, origin: str) -> list[Collection]:
        return [_collection(r) for r in self._rows("SELECT id, name, origin, created FROM collections "
                                                   "WHERE origin = ? ORDER BY created", (origin,))]

    def collection(self, collection_id: object) -> Collection:
        rows = self._rows("SELECT id, name, origin, created FROM collections WHERE id = ?",
                          (collection_id,)) if isinstance(collection_id, str) else []
        if not rows:
            raise NotFound("no such vector store or library", param="vector_store_id")
        return _collection(rows[0])

    def library(self, name: object) -> Collection:
        found = [c for c in self.collections("library") if c.name == name] if is_plain_name(name) else []
        if not found:
            raise NotFound(f"unknown library: {name if is_plain_name(name) else '(invalid name)'}", param="library")
        return found[0]

    def rename_collection(self, collection_id: str, name: str) -> Collection:
        collection = self.collection(collection_id)
        stored = clean_name(name) if collection.origin == "library" else f"{clean_name(name)}\x00{collection.id}"
        self._write([("UPDATE collections SET name = ? WHERE id = ?", (stored, collection.id))])
        return self.collection(collection.id)

    def delete_collection(self, collection_id: str) -> None:
        collection = self.collection(collection_id)
        self._write([("DELETE FROM members WHERE collection = ?", (collection.id,)),
                     ("DELETE FROM collections WHERE id = ?", (collection.id,))])

    def set_member(self, collection_id: str, file_id: str, status: str, error: str | None = None) -> Member:
        collection, info = self.collection(collection_id), self.file(file_id)
        now = time.time()
        self._write([("INSERT INTO members(collection, file, status, error, created) VALUES (?,?,?,?,?) "
                      "ON CONFLICT(collection, file) DO UPDATE SET status = excluded.status, error = excluded.error",
                      (collection.id, info.id, status, error, now))])
        return self.member(collection.id, info.id)

    def member(self, collection_id: str, file_id: object) -> Member:
        rows = self._rows("SELECT collection, file, status, error, created FROM members WHERE collection = ? AND "
                          "file = ?", (collection_id, file_id)) if isinstance(file_id, str) else []
        if not rows:
            raise NotFound("that file is not in this vector store", param="file_id")
        return Member(*rows[0])

    def members(self, collection_id: str) -> list[Member]:
        return [Member(*r) for r in self._rows("SELECT collection, file, status, error, created FROM members "
                                               "WHERE collection = ? ORDER BY created", (collection_id,))]

    def remove_member(self, collection_id: str, file_id: str) -> None:
        self.member(collection_id, file_id)
        self._write([("DELETE FROM members WHERE collection = ? AND file = ?", (collection_id, file_id))])

    def ready_files(self, collection_id: str) -> list[str]:
        return [r[0] for r in self._rows("SELECT m.file FROM members m JOIN files f ON f.id = m.file WHERE "
                                         "m.collection = ? AND m.status = 'completed' AND f.indexed IS NOT NULL",
                                         (collection_id,))]


_FILE_COLUMNS = "id, name, kind, bytes, sha256, created, purpose, pages, chars, tokens, indexed"


def _collection(row: tuple) -> Collection:
    id_, name, origin, created = row
    return Collection(id_, name.split("\x00")[0], origin, created)


def _blob_of(row: np.ndarray) -> bytes:
    return np.ascontiguousarray(row, dtype="<f4").tobytes()


def clean_name(name: object) -> str:
    """A display name: printable, one line, at most 200 characters (never a path here)."""
    text = name if isinstance(name, str) else ""
    text = "".join(ch for ch in text.replace("\\", "/").rsplit("/", 1)[-1] if ch.isprintable())
    text = " ".join(text.split())[:200]
    return text or "untitled"
