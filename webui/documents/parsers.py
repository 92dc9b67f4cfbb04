"""Parsers for the formats that need one: PDF (pypdf), DOCX (a bounded zip read and
defusedxml) and HTML (the standard library's html.parser).

They run in the child process of worker.py, never in the server: a pathological file
can burn CPU or memory there, under that process's limits, and be killed.  Each returns
pages as (page number or None, text) and raises ParseFailure with a code extract.py
turns into the matching DocumentError.
"""

from __future__ import annotations

import io
import zipfile
from html.parser import HTMLParser

# DOCX: a Word file is a zip of XML parts.  Bombs are refused from the zip's directory
# before anything is inflated: too many entries, a part inflating past the cap, or a
# ratio no real document has.  Reads are also cut at the cap (the directory can lie;
# zipfile stops at the declared size and checks the CRC).
DOCX_MAX_ENTRIES = 2_000
DOCX_MAX_PART_BYTES = 64 << 20
DOCX_MAX_TOTAL_BYTES = 256 << 20
DOCX_MAX_RATIO = 200
PDF_MAX_PAGES = 5_000
W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


class ParseFailure(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class TextBudget:
    """Counts characters extracted, and stops a file that yields more than `limit`."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def take(self, text: str) -> str:
        self.used += len(text)
        if self.used > self.limit:
            raise ParseFailure("too_large", f"the file holds more than {self.limit:,} characters of text")
        return text


def pdf_pages(data: bytes, max_chars: int) -> list[tuple[int | None, str]]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    if not data.lstrip()[:5].startswith(b"%PDF-"):
        raise ParseFailure("malformed", "this is not a PDF file (it does not start with %PDF-)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            # Many PDFs are "encrypted" with an empty password only to set permissions.
            try:
                opened = reader.decrypt("")
            except (DependencyError, NotImplementedError) as exc:
                raise ParseFailure("encrypted", f"this PDF is encrypted ({exc}); save an unencrypted copy") from None
            if not opened:
                raise ParseFailure("encrypted", "this PDF is protected by a password; save an unencrypted copy")
        count = len(reader.pages)
        if count > PDF_MAX_PAGES:
            raise ParseFailure("too_large", f"this PDF has {count:,} pages; at most {PDF_MAX_PAGES:,} are read")
        budget = TextBudget(max_chars)
        pages = [(number, budget.take(page.extract_text() or "")) for number, page in enumerate(reader.pages, 1)]
    except ParseFailure:
        raise
    except FileNotDecryptedError:
        raise ParseFailure("encrypted", "this PDF is protected by a password; save an unencrypted copy") from None
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, ZeroDivisionError,
            RecursionError, OSError, AssertionError) as exc:
        raise ParseFailure("malformed", f"this PDF could not be read ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not any(text.strip() for _, text in pages):
        raise ParseFailure("no_text", f"this PDF has {len(pages)} page(s) but no text layer: it looks scanned "
                           "(pictures of pages); run OCR on it first")
    return pages


def docx_pages(data: bytes, max_chars: int) -> list[tuple[int | None, str]]:
    import defusedxml.ElementTree as SafeET
    from defusedxml import DefusedXmlException

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ParseFailure("malformed", f"this is not a Word (.docx) file: {exc}") from None
    entries = archive.infolist()
    if len(entries) > DOCX_MAX_ENTRIES:
        raise ParseFailure("too_large", f"this .docx holds {len(entries):,} parts; at most {DOCX_MAX_ENTRIES:,}")
    total = sum(e.file_size for e in entries)
    if total > DOCX_MAX_TOTAL_BYTES:
        raise ParseFailure("too_large", f"this .docx inflates to {total:,} bytes; at most {DOCX_MAX_TOTAL_BYTES:,}")
    try:
        part = archive.getinfo("word/document.xml")
    except KeyError:
        raise ParseFailure("malformed", "this zip is not a Word document (no word/document.xml)") from None
    if part.file_size > DOCX_MAX_PART_BYTES or part.file_size > DOCX_MAX_RATIO * max(part.compress_size, 1024):
        raise ParseFailure("too_large", f"word/document.xml inflates to {part.file_size:,} bytes from "
                           f"{part.compress_size:,}: refused as a decompression bomb")
    try:
        with archive.open(part) as handle:
            xml = handle.read(DOCX_MAX_PART_BYTES + 1)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as exc:
        raise ParseFailure("malformed", f"this .docx is damaged: {exc}") from None
    if len(xml) > DOCX_MAX_PART_BYTES:
        raise ParseFailure("too_large", "word/document.xml is larger than its directory says")
    try:
        root = SafeET.fromstring(xml)
    except DefusedXmlException as exc:
        raise ParseFailure("malformed", f"this .docx uses forbidden XML ({type(exc).__name__}): refused") from None
    except SafeET.ParseError as exc:
        raise ParseFailure("malformed", f"this .docx's XML is broken: {exc}") from None
    budget = TextBudget(max_chars)
    paragraphs = []
    for paragraph in root.iter(f"{W}p"):
        pieces = []
        for node in paragraph.iter():
            if node.tag == f"{W}t" and node.text:
                pieces.append(node.text)
            elif node.tag == f"{W}tab":
                pieces.append("\t")
            elif node.tag in (f"{W}br", f"{W}cr"):
                pieces.append("\n")
        text = budget.take("".join(pieces))
        if text.strip():
            paragraphs.append(text)
    if not paragraphs:
        raise ParseFailure("no_text", "this Word document has no text")
    return [(None, "\n\n".join(paragraphs))]


# Elements after which HTML text starts a new paragraph, and those whose text is not prose.
_BLOCKS = frozenset("p div br li ul ol h1 h2 h3 h4 h5 h6 tr table section article header footer blockquote pre "
                    "dd dt hr title".split())
_SKIP = frozenset({"script", "style", "noscript", "template", "svg"})


class _TextOf(HTMLParser):
    def __init__(self, budget: TextBudget):
        super().__init__(convert_charrefs=True)
        self.budget, self.parts, self.skipping = budget, [], 0

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP:
            self.skipping += 1
        elif tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag in _SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(self.budget.take(data))


def html_pages(data: bytes, max_chars: int) -> list[tuple[int | None, str]]:
    from webui.documents.text import decode_text

    parser = _TextOf(TextBudget(max_chars))
    parser.feed(decode_text(data))
    parser.close()
    raw = "".join(parser.parts)
    # Collapse the layout whitespace HTML carries, keeping paragraph breaks.
    paragraphs = [" ".join(block.split()) for block in raw.split("\n\n")]
    text = "\n\n".join(p for p in paragraphs if p)
    if not text:
        raise ParseFailure("no_text", "this HTML page has no text")
    return [(None, text)]


PARSERS = {"pdf": pdf_pages, "docx": docx_pages, "html": html_pages}
