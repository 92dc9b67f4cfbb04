"""A file's text, by pages: what the index and the chat read.

Checked before any parser sees it: the size (MAX_FILE_BYTES), the type (by the name's
suffix, confirmed by the content's signature), then parsed.  Text, Markdown, code and
CSV are decoded here; PDF, DOCX and HTML go to a child process (worker.py) under memory
and CPU limits and a deadline, because their parsers are where a hostile file bites.
Every failure is a DocumentError subclass naming what is wrong (errors.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePath

from webui.documents.errors import (
    DocumentError,
    DocumentTooLarge,
    EncryptedDocument,
    MalformedDocument,
    NoTextFound,
    UnsupportedDocument,
)
from webui.documents.text import NotText, decode_text

MAX_FILE_BYTES = 64 << 20  # a 1,000-page PDF is ~10 MB; generous, and bounds the child's input
MAX_TEXT_CHARS = 20_000_000  # ~10,000 pages of prose
PARSE_SECONDS = 60.0

TEXT_SUFFIXES = frozenset(
    ".txt .text .md .markdown .rst .csv .tsv .json .jsonl .yaml .yml .toml .ini .cfg .log .xml .tex .org "
    ".py .js .mjs .ts .tsx .jsx .java .kt .swift .c .h .cc .cpp .hpp .cs .go .rs .rb .php .pl .lua .r .m "
    ".scala .sh .bash .zsh .ps1 .sql .css .scss .vue .svelte .dart .jl .hs .ex .exs .erl .clj .el .vim "
    ".dockerfile .makefile .gradle .proto".split())
PARSED = {".pdf": "pdf", ".docx": "docx", ".html": "html", ".htm": "html", ".xhtml": "html"}
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
SUPPORTED = "text, Markdown, code, CSV, HTML, PDF and Word (.docx)"


@dataclass(frozen=True)
class Page:
    number: int | None  # 1-based PDF page; None where a format has no pages
    text: str


@dataclass(frozen=True)
class Extracted:
    kind: str  # "text", "pdf", "docx" or "html"
    pages: tuple[Page, ...]

    @property
    def text(self) -> str:
        return "\n\n".join(p.text for p in self.pages)

    @property
    def chars(self) -> int:
        return sum(len(p.text) for p in self.pages)


def kind_of(filename: str) -> str:
    """The kind a file name says, or UnsupportedDocument."""
    suffix = PurePath(filename or "").suffix.lower()
    if suffix in PARSED:
        return PARSED[suffix]
    if suffix in TEXT_SUFFIXES or PurePath(filename or "").name.lower() in ("makefile", "dockerfile", "readme"):
        return "text"
    shown = suffix or "(no suffix)"
    raise UnsupportedDocument(f"{shown} files are not supported; supported: {SUPPORTED}", param="file")


def extract(data: bytes, filename: str, timeout: float = PARSE_SECONDS) -> Extracted:
    if len(data) > MAX_FILE_BYTES:
        raise DocumentTooLarge(f"the file has {len(data):,} bytes; a document may have at most "
                               f"{MAX_FILE_BYTES >> 20} MB", param="file")
    if not data:
        raise NoTextFound("the file is empty", param="file")
    kind = kind_of(filename)
    if kind == "text":
        try:
            text = decode_text(data)
        except NotText as exc:
            raise UnsupportedDocument(f"{exc}; supported: {SUPPORTED}", param="file") from None
        if len(text) > MAX_TEXT_CHARS:
            raise DocumentTooLarge(f"the file holds more than {MAX_TEXT_CHARS:,} characters", param="file")
        if not text.strip():
            raise NoTextFound("the file has no text", param="file")
        return Extracted("text", (Page(None, text),))
    return Extracted(kind, tuple(Page(n, t) for n, t in parse_in_child(kind, data, timeout)))


_ERRORS = {"encrypted": EncryptedDocument, "malformed": MalformedDocument, "no_text": NoTextFound,
           "too_large": DocumentTooLarge}


def parse_in_child(kind: str, data: bytes, timeout: float) -> list[tuple[int | None, str]]:
    command = [sys.executable, "-m", "webui.documents.worker", kind, str(MAX_TEXT_CHARS)]
    # The child imports this very package, wherever the server runs from.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (_PACKAGE_ROOT, os.environ.get("PYTHONPATH"))))}
    try:
        done = subprocess.run(command, input=data, capture_output=True, timeout=timeout, check=False,  # noqa: S603
                              env=env)
    except subprocess.TimeoutExpired:
        raise DocumentError(f"reading this {kind.upper()} file took over {timeout:.0f} s; it was stopped",
                            param="file", code="parse_timeout", status=422) from None
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        # Killed by its limits (memory, CPU) or crashed in native code.
        raise MalformedDocument(f"reading this {kind.upper()} file failed (the reader exited with "
                                f"{done.returncode}): it is damaged or too demanding", param="file") from None
    if "error" in answer:
        raise _ERRORS.get(answer["error"], MalformedDocument)(answer["message"], param="file")
    return [(number, text) for number, text in answer["pages"]]
