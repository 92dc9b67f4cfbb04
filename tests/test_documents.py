"""Documents: extraction and every bad input, chunking, the per-owner store, and
retrieval quality on the town fixture (tests/doc_fixtures.py says what it shows)."""

from __future__ import annotations

import io
import threading
import zipfile

import numpy as np
import pytest

from tests.doc_fixtures import corpus_text, docx_bytes, passage, pdf_bytes, questions, towns
from webui.documents import extract as extract_module
from webui.documents.chunking import chunk_pages, word_spans
from webui.documents.embedders import FolderEmbedder, is_sentence_transformers_folder
from webui.documents.errors import (
    DocumentError,
    DocumentTooLarge,
    EncryptedDocument,
    IndexCancelled,
    MalformedDocument,
    NoTextFound,
    UnsupportedDocument,
)
from webui.documents.extract import Page, extract
from webui.documents.indexer import Cancel, ingest
from webui.documents.search import RRF_K, search
from webui.documents.store import DocumentStore, NotFound

TOWNS = towns()


@pytest.fixture(scope="module")
def embedder(town_embedder_folder):
    return FolderEmbedder(town_embedder_folder)


@pytest.fixture(scope="module")
def corpus_store(tmp_path_factory, embedder):
    store = DocumentStore(tmp_path_factory.mktemp("docs") / "documents")
    info = ingest(store, "towns.txt", corpus_text(TOWNS).encode(), embedder, chunk_tokens=128, overlap=16)
    return store, info


# -- extraction -------------------------------------------------------------------------
def test_text_markdown_code_csv_and_encodings():
    assert extract(b"# Title\n\nSome *markdown*.", "notes.md").text == "# Title\n\nSome *markdown*."
    assert "def f():" in extract(b"def f():\n    return 1\n", "x.py").text
    assert extract(b"name,age\nAda,36\n", "people.csv").kind == "text"
    assert extract("caf\u00e9".encode("cp1252"), "old.txt").text == "caf\u00e9"  # not UTF-8: Windows-1252
    assert extract("hi".encode("utf-16"), "wide.txt").text == "hi"  # a BOM says the encoding


def test_pdf_pages_keep_their_numbers():
    got = extract(pdf_bytes(["The first page (one).", "Page two speaks of lanterns."]), "book.pdf")
    assert got.kind == "pdf"
    assert [(p.number, p.text) for p in got.pages] == [(1, "The first page (one)."), (2, "Page two speaks of lanterns.")]


def test_docx_and_html_text():
    got = extract(docx_bytes(["First paragraph", "Tom & Jerry <3"]), "letter.docx")
    assert got.text == "First paragraph\n\nTom & Jerry <3"
    html = b"<html><head><style>p{}</style><script>alert(1)</script></head><body><h1>Head</h1><p>Hello <b>you</b></p></body>"
    assert extract(html, "page.html").text == "Head\n\nHello you"


def test_unsupported_types_and_binary_refused():
    for data, name in [(b"MZ\x90\x00", "tool.exe"), (b"abc", "noext"), (b"\x89PNG\r\n", "image.png")]:
        with pytest.raises(UnsupportedDocument) as caught:
            extract(data, name)
        assert caught.value.status == 415 and "supported" in str(caught.value)
    with pytest.raises(UnsupportedDocument):
        extract(b"text then \x00\x01\x02 binary", "sneaky.txt")


def test_huge_and_empty_files_refused_before_parsing(monkeypatch):
    monkeypatch.setattr(extract_module, "MAX_FILE_BYTES", 1000)
    with pytest.raises(DocumentTooLarge) as caught:
        extract(b"%PDF-" + b"x" * 2000, "big.pdf")
    assert caught.value.status == 413
    with pytest.raises(NoTextFound):
        extract(b"", "empty.txt")
    with pytest.raises(NoTextFound):
        extract(b"   \n\n ", "blank.md")


def test_malformed_and_fake_pdfs():
    for data in (b"%PDF-1.7\n garbage that is no PDF", b"not a pdf at all", pdf_bytes(["ok"])[:80]):
        with pytest.raises(MalformedDocument) as caught:
            extract(data, "broken.pdf")
        assert caught.value.status == 400 and caught.value.param == "file"


def test_encrypted_pdf_says_so():
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(pdf_bytes(["secret text"]))).pages:
        writer.add_page(page)
    writer.encrypt(user_password="hunter2", owner_password="owner", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    with pytest.raises(EncryptedDocument) as caught:
        extract(buffer.getvalue(), "locked.pdf")
    assert "password" in str(caught.value)


def test_scanned_pdf_without_text_says_so():
    with pytest.raises(NoTextFound) as caught:
        extract(pdf_bytes(["", ""]), "scan.pdf")
    assert "scanned" in str(caught.value) and "OCR" in str(caught.value)


def test_docx_zip_bomb_refused_from_the_directory():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"<a>" + b" " * (80 << 20) + b"</a>")  # 80 MB of spaces
    assert len(buffer.getvalue()) < 1 << 20
    with pytest.raises(DocumentTooLarge) as caught:
        extract(buffer.getvalue(), "bomb.docx")
    assert "bomb" in str(caught.value) or "inflates" in str(caught.value)


def test_docx_with_too_many_parts_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(2001):
            archive.writestr(f"junk/{i}.xml", b"")
    with pytest.raises(DocumentTooLarge):
        extract(buffer.getvalue(), "many.docx")


def test_docx_xml_entity_bomb_refused():
    lol = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
           '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;">]><w:document xmlns:w="http://schemas.openxmlformats.org/'
           'wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>&lol3;</w:t></w:r></w:p></w:body></w:document>')
    with pytest.raises(MalformedDocument) as caught:
        extract(docx_bytes([], document_xml=lol), "lol.docx")
    assert "forbidden XML" in str(caught.value)
    external = ('<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><w:document xmlns:w='
                '"http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>&x;</w:t>'
                "</w:r></w:p></w:body></w:document>")
    with pytest.raises(MalformedDocument):
        extract(docx_bytes([], document_xml=external), "xxe.docx")


def test_not_a_word_document_and_broken_xml():
    with pytest.raises(MalformedDocument):
        extract(b"PK\x03\x04 not really a zip", "fake.docx")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("other.xml", "<x/>")
    with pytest.raises(MalformedDocument) as caught:
        extract(buffer.getvalue(), "nodoc.docx")
    assert "word/document.xml" in str(caught.value)
    with pytest.raises(MalformedDocument):
        extract(docx_bytes([], document_xml="<w:document><unclosed>"), "broken.docx")


def test_a_parser_past_its_deadline_is_killed():
    with pytest.raises(DocumentError) as caught:
        extract(pdf_bytes(["fine"]), "slow.pdf", timeout=0.01)  # the child cannot even start in time
    assert caught.value.code == "parse_timeout" and caught.value.status == 422


def test_a_self_referencing_pdf_is_a_typed_error():
    # A PDF whose page tree points at itself: the parser may loop or fail; the child is
    # bounded (here: a 10 s deadline) and the server gets a typed error either way.
    loop = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
            b"2 0 obj << /Type /Pages /Kids [2 0 R] /Count 1 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF")
    with pytest.raises(DocumentError) as caught:
        extract(loop, "loop.pdf", timeout=10.0)
    assert caught.value.status in (400, 422)


# -- chunking ---------------------------------------------------------------------------
def test_chunks_respect_paragraphs_pages_and_overlap():
    paragraphs = [" ".join(f"w{p}_{i}" for i in range(30)) + "." for p in range(10)]
    page = Page(3, "\n\n".join(paragraphs))
    chunks = chunk_pages([page, Page(4, "short last page.")], size=80, overlap=10)
    assert all(c.tokens <= 80 for c in chunks)
    assert chunks[-1].page == 4 and chunks[-1].text == "short last page."  # never across pages
    for chunk in chunks[:-1]:
        assert chunk.page == 3 and page.text[chunk.start:chunk.end] == chunk.text  # offsets are exact
        assert chunk.text.endswith(".")  # ended at a paragraph break, not mid-paragraph
    # Each paragraph sits whole in some chunk.
    assert all(any(p in c.text for c in chunks) for p in paragraphs)


def test_long_paragraph_is_cut_with_overlap():
    text = " ".join(f"word{i}" for i in range(500))
    chunks = chunk_pages([Page(None, text)], size=100, overlap=20)
    assert len(chunks) >= 6
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.start < before.end  # the windows overlap
    assert chunks[-1].text.endswith("word499")
    assert sum(1 for _ in word_spans(chunks[0].text)) == 100


def test_chunk_settings_validated():
    with pytest.raises(ValueError):
        chunk_pages([Page(None, "x")], size=4)
    with pytest.raises(ValueError):
        chunk_pages([Page(None, "x")], size=100, overlap=60)


# -- the store ----------------------------------------------------------------------------
def test_a_failed_file_leaves_nothing(tmp_path, embedder):
    store = DocumentStore(tmp_path / "docs")
    for data, name in [(b"%PDF-1.4 junk", "bad.pdf"), (pdf_bytes([""]), "scan.pdf"), (b"x", "tool.exe")]:
        with pytest.raises(DocumentError):
            ingest(store, name, data, embedder)
    assert store.files() == [] and store.chunk_count() == 0
    assert list((tmp_path / "docs" / "files").iterdir()) == []


def test_cancel_mid_embedding_leaves_nothing(tmp_path, embedder):
    store = DocumentStore(tmp_path / "docs")
    cancel = Cancel()
    seen = []

    def progress(fraction, text):
        seen.append(fraction)
        if "embedded" in text:
            cancel.set()  # Stop pressed while the passages embed

    with pytest.raises(IndexCancelled):
        ingest(store, "towns.txt", corpus_text(TOWNS).encode(), embedder, cancel, progress)
    assert seen and store.files() == [] and store.chunk_count() == 0


def test_incremental_vectors_for_a_new_model(tmp_path, embedder):
    store = DocumentStore(tmp_path / "docs")
    info = ingest(store, "some.txt", corpus_text(TOWNS[:20]).encode(), None)  # no model: BM25 only
    assert store.chunk_count([info.id]) > 0 and len(store.vector_matrix(embedder.name)[0]) == 0
    from webui.documents.indexer import ensure_vectors

    assert ensure_vectors(store, embedder, [info.id]) == store.chunk_count([info.id])
    assert ensure_vectors(store, embedder, [info.id]) == 0  # nothing left to do
    assert len(store.vector_matrix(embedder.name)[0]) == store.chunk_count([info.id])


def test_two_owners_never_see_each_other(tmp_path, embedder):
    alice, bob = DocumentStore(tmp_path / "alice"), DocumentStore(tmp_path / "bob")
    mine = ingest(alice, "diary.txt", b"My secret word is marmalade.", embedder)
    assert bob.files() == []
    with pytest.raises(NotFound):
        bob.file(mine.id)
    with pytest.raises(NotFound):
        bob.content(mine.id)
    assert search(bob, "marmalade", [mine.id], embedder) == []  # an id from elsewhere finds nothing
    assert search(alice, "marmalade", [mine.id], embedder)[0].chunk.file == mine.id


def test_store_writes_from_threads(tmp_path):
    store = DocumentStore(tmp_path / "docs")
    errors = []

    def add(n):
        try:
            ingest(store, f"f{n}.txt", f"document number {n} about topic{n}".encode(), None)
        except Exception as exc:  # noqa: BLE001 - collected for the assert
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(store.files()) == 8
    assert all(search(store, f"topic{n}", [f.id for f in store.files()], None, k=1)[0].chunk.text.endswith(
        f"topic{n}") for n in range(8))


def test_queries_with_search_syntax_are_plain_words(corpus_store, embedder):
    store, info = corpus_store
    for query in ['" OR 1=1', "NEAR(a b)", "*", "col:text", "AND OR NOT", "(((", "\x00", "a" * 5000]:
        search(store, query, [info.id], embedder)  # no FTS5 syntax error reaches the user


# -- retrieval quality ----------------------------------------------------------------------
def recall_at_5(store, info, embedder, mode, rrf_k=RRF_K) -> dict[str, float]:
    held_out = [q for q in questions(TOWNS) if not q.train]
    found: dict[str, list[bool]] = {}
    for q in held_out:
        hits = search(store, q.text, [info.id], embedder, k=5, mode=mode, rrf_k=rrf_k)
        found.setdefault(q.kind, []).append(any(q.answer in h.chunk.text for h in hits))
    found["all"] = [x for v in found.values() for x in v]
    return {kind: float(np.mean(v)) for kind, v in found.items()}


def test_hybrid_recall_beats_bm25_and_vectors_alone(corpus_store, embedder):
    store, info = corpus_store
    assert store.chunk_count([info.id]) >= 200  # hundreds of passages
    bm25 = recall_at_5(store, info, embedder, "bm25")
    vector = recall_at_5(store, info, embedder, "vector")
    hybrid = recall_at_5(store, info, embedder, "hybrid")
    # Each alone is good at one kind of question and blind to the other...
    assert bm25["named"] >= 0.9 and bm25["described"] <= 0.2
    assert vector["described"] >= 0.8 and vector["named"] <= 0.3
    # ...and the fusion is better than either.
    assert hybrid["all"] > bm25["all"] and hybrid["all"] > vector["all"]
    assert hybrid["named"] >= 0.9 and hybrid["described"] >= 0.8


def test_search_hits_name_file_page_and_passage(tmp_path, embedder):
    store = DocumentStore(tmp_path / "docs")
    pages = [passage(town) for town in TOWNS[:3]]
    info = ingest(store, "atlas.pdf", pdf_bytes(pages), embedder)
    town = TOWNS[1]
    hit = search(store, f"Where does {town.name} lie?", [info.id], embedder, k=1)[0]
    assert (hit.chunk.name, hit.chunk.page) == ("atlas.pdf", 2)
    assert town.name in hit.chunk.text
    page_text = dict(store.pages(info.id))[2]
    assert page_text[hit.chunk.start:hit.chunk.end] == hit.chunk.text


def test_embedding_folder_detection(town_embedder_folder, tmp_path):
    assert is_sentence_transformers_folder(town_embedder_folder)
    (tmp_path / "plain").mkdir()
    assert not is_sentence_transformers_folder(tmp_path / "plain")


def test_terms_in_most_chunks_are_dropped_in_a_large_store(tmp_path, monkeypatch):
    from webui.documents import store as store_module

    monkeypatch.setattr(store_module, "COMMON_TERMS_FROM", 10)
    store = DocumentStore(tmp_path / "docs")
    info = ingest(store, "many.txt", "\n\n".join(f"common words in paragraph {i}." + (" rare" if i == 7 else "")
                                                 for i in range(40)).encode(), None, chunk_tokens=8, overlap=0)
    assert store.chunk_count() >= 40
    assert store._telling(['"common"', '"rare"']) == ['"rare"']
    assert store._telling(['"common"']) == ['"common"']  # all common: kept, so a search still finds something
    assert "rare" in search(store, "common rare", [info.id], None, k=1)[0].chunk.text
    assert search(store, "common", [info.id], None, k=3)


def test_reads_on_an_owner_with_nothing_create_nothing(tmp_path):
    store = DocumentStore(tmp_path / "nobody")
    assert store.files() == [] and store.collections("vector_store") == [] and store.chunk_count() == 0
    for lookup in (lambda: store.file("../../etc/passwd"), lambda: store.collection("vs_x"),
                   lambda: store.content("file-0")):
        with pytest.raises(NotFound) as caught:
            lookup()
        assert "etc" not in str(caught.value)  # nothing the request named is echoed
    assert search(store, "anything", ["file-0"], None) == []
    assert not (tmp_path / "nobody").exists()


def test_the_same_file_again_is_not_indexed_again(tmp_path, embedder):
    store = DocumentStore(tmp_path / "docs")
    first = ingest(store, "towns.txt", corpus_text(TOWNS[:10]).encode(), None)
    again = ingest(store, "towns.txt", corpus_text(TOWNS[:10]).encode(), embedder)  # now with a model
    assert again.id == first.id and len(store.files()) == 1
    assert len(store.vector_matrix(embedder.name)[0]) == store.chunk_count()  # the vectors it lacked were added
    other = ingest(store, "towns.txt", corpus_text(TOWNS[:11]).encode(), embedder)  # changed bytes: a new file
    assert other.id != first.id and len(store.files()) == 2
