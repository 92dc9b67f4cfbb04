"""OpenAI's Files and Vector Stores endpoints, driven by the official openai client:
upload a PDF and a DOCX (built in the fixture), index them into a vector store, search
it; each key sees only its own; bad files fail cleanly; uploads from other sites refused."""

from __future__ import annotations

import io
import zipfile

import httpx
import openai
import pytest

from tests.conftest import TINY, free_port, make_settings
from tests.doc_fixtures import docx_bytes, passage, pdf_bytes, towns
from tests.tiny_models import build_llama

TOWNS = towns()


@pytest.fixture(scope="module")
def api(tmp_path_factory, town_embedder_folder):
    from webui.api.openai_api import APIServer
    from webui.runtime import build_runtime

    models = tmp_path_factory.mktemp("doc-models")
    build_llama(models / TINY)
    (models / "town-embedder").symlink_to(town_embedder_folder, target_is_directory=True)
    # No --api-key: every client names its own key, and each key has its own documents.
    runtime = build_runtime(make_settings(models, tmp_path_factory.mktemp("doc-user-data")))
    assert "town-embedder" in runtime.documents.embedding_choices()
    runtime.documents.choose("town-embedder")
    server = APIServer(runtime, port=free_port())
    url = server.start()
    yield url, runtime
    server.stop()


def client(api, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=api[0], api_key=key, max_retries=0, timeout=60)


def test_upload_index_and_search_pdf_and_docx(api):
    alice = client(api, "alice-key-0001")
    atlas = pdf_bytes([passage(t) for t in TOWNS[:4]])
    letters = docx_bytes([passage(t) for t in TOWNS[4:8]])
    pdf = alice.files.create(file=("atlas.pdf", atlas), purpose="assistants")
    docx = alice.files.create(file=("letters.docx", letters), purpose="assistants")
    assert (pdf.filename, pdf.bytes, docx.filename) == ("atlas.pdf", len(atlas), "letters.docx")
    assert alice.files.content(pdf.id).content == atlas
    store = alice.vector_stores.create(name="towns")
    for file in (pdf, docx):
        done = alice.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=file.id,
                                                         poll_interval_ms=100)
        assert done.status == "completed", done.last_error
    got = alice.vector_stores.retrieve(store.id)
    assert got.file_counts.completed == 2 and got.status == "completed"

    town = TOWNS[2]  # on page 3 of the PDF
    results = alice.vector_stores.search(store.id, query=f"Where does {town.name} lie?", max_num_results=3)
    best = results.data[0]
    assert best.filename == "atlas.pdf" and best.file_id == pdf.id and best.attributes == {"page": 3}
    assert town.name in best.content[0].text and 0 < best.score <= 1
    # A described question (no name): the embedding model finds it, in the Word file.
    from tests.doc_fixtures import BUILDINGS, FESTIVALS, TRADES

    town = TOWNS[6]
    query = (f"the settlement whose folk make {TRADES[town.trade]} and celebrate with {FESTIVALS[town.festival]} "
             f"near the {BUILDINGS[town.building]}")
    results = alice.vector_stores.search(store.id, query=query, max_num_results=2)
    assert results.data[0].filename == "letters.docx" and town.name in results.data[0].content[0].text
    bm25_only = alice.vector_stores.search(store.id, query=query, max_num_results=2, extra_body={"mode": "bm25"})
    assert all(town.name not in hit.content[0].text for hit in bm25_only.data)  # words alone miss it

    listed = alice.vector_stores.files.list(vector_store_id=store.id)
    assert {f.id for f in listed.data} == {pdf.id, docx.id}
    alice.vector_stores.files.delete(file_id=docx.id, vector_store_id=store.id)
    results = alice.vector_stores.search(store.id, query=query, max_num_results=5)
    assert all(hit.filename == "atlas.pdf" for hit in results.data)
    assert alice.vector_stores.delete(store.id).deleted
    assert alice.files.delete(pdf.id).deleted


def test_one_key_never_sees_another_keys_documents(api):
    alice, bob = client(api, "alice-key-0002"), client(api, "bob-key-00002")
    secret = alice.files.create(file=("secret.txt", b"The vault code is 4711 marmalade."), purpose="assistants")
    store = alice.vector_stores.create(name="private", file_ids=[secret.id])
    assert bob.files.list().data == []
    assert bob.vector_stores.list().data == []
    for attempt in (lambda: bob.files.retrieve(secret.id), lambda: bob.files.content(secret.id),
                    lambda: bob.files.delete(secret.id), lambda: bob.vector_stores.retrieve(store.id),
                    lambda: bob.vector_stores.search(store.id, query="vault code"),
                    lambda: bob.vector_stores.files.list(vector_store_id=store.id)):
        with pytest.raises(openai.NotFoundError):
            attempt()
    mine = bob.vector_stores.create(name="mine")
    with pytest.raises(openai.NotFoundError):  # naming alice's file id from bob's store
        bob.vector_stores.files.create(vector_store_id=mine.id, file_id=secret.id)
    with pytest.raises(openai.NotFoundError):
        bob.vector_stores.create(name="grab", file_ids=[secret.id])
    # Alice still has it all.
    assert alice.files.retrieve(secret.id).filename == "secret.txt"


def test_bad_files_fail_cleanly_and_leave_nothing(api):
    carol = client(api, "carol-key-0003")
    with pytest.raises(openai.APIStatusError) as caught:
        carol.files.create(file=("tool.exe", b"MZ\x90\x00"), purpose="assistants")
    assert caught.value.status_code == 415 and "supported" in caught.value.message
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    writer.add_page(PdfReader(io.BytesIO(pdf_bytes(["locked away"]))).pages[0])
    writer.encrypt(user_password="pw", owner_password="owner", algorithm="RC4-128")
    locked = io.BytesIO()
    writer.write(locked)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"<a>" + b" " * (80 << 20) + b"</a>")
    bad = {"locked.pdf": locked.getvalue(), "scan.pdf": pdf_bytes([""]), "bomb.docx": bomb.getvalue(),
           "broken.pdf": b"%PDF-1.4 nothing else"}
    store = carol.vector_stores.create(name="bad")
    for name, data in bad.items():
        file = carol.files.create(file=(name, data), purpose="assistants")
        done = carol.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=file.id,
                                                         poll_interval_ms=100)
        assert done.status == "failed" and done.last_error.code == "invalid_file", name
        assert done.last_error.message
    messages = {f.id: f.last_error.message for f in carol.vector_stores.files.list(vector_store_id=store.id).data}
    assert any("password" in m for m in messages.values()) and any("scanned" in m for m in messages.values())
    assert any("bomb" in m or "inflates" in m for m in messages.values())
    results = carol.vector_stores.search(store.id, query="locked away")
    assert results.data == []  # nothing of a failed file was indexed
    assert carol.vector_stores.retrieve(store.id).file_counts.failed == 4


def test_requests_refused_with_the_field_named(api):
    dave = client(api, "dave-key-00004")
    store = dave.vector_stores.create(name="x")
    for body, field in [({"query": "x", "max_num_results": 0}, "max_num_results"),
                        ({"query": "x", "filters": {"type": "eq", "key": "a", "value": 1}}, "filters"),
                        ({"query": "x", "mode": "magic"}, "mode"), ({"query": ""}, "query"),
                        ({"query": "x", "surprise": 1}, "surprise")]:
        with pytest.raises(openai.BadRequestError) as caught:
            dave.post(f"/vector_stores/{store.id}/search", body=body, cast_to=object)
        assert field in (caught.value.body or {}).get("param", "") or field in caught.value.message, body


def test_uploads_from_another_sites_page_refused(api):
    url = api[0]
    files = {"file": ("x.txt", b"hello"), "purpose": (None, "assistants")}
    answer = httpx.post(f"{url}/files", files=files, headers={"Origin": "https://evil.example"})
    assert answer.status_code == 403
    answer = httpx.post(f"{url}/files", files=files)  # a program (no Origin) may upload
    assert answer.status_code == 200
    # Multipart is accepted on the upload route only.
    answer = httpx.post(f"{url}/vector_stores", files=files)
    assert answer.status_code == 415


def test_switching_the_embedding_model_embeds_what_the_new_one_lacks(api):
    from tests.doc_fixtures import corpus_text
    from webui.api.usage import key_label

    runtime = api[1]
    erin = client(api, "erin-key-00005")
    file = erin.files.create(file=("towns.txt", corpus_text(TOWNS[:6]).encode()), purpose="assistants")
    store = erin.vector_stores.create(name="switch")
    assert erin.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=file.id,
                                                    poll_interval_ms=100).status == "completed"
    owner = runtime.documents.for_key(key_label({"authorization": "Bearer erin-key-00005"}))
    models = lambda: {row[0].split("/")[0] for row in owner._rows("SELECT DISTINCT embedder FROM vectors")}  # noqa: E731
    assert models() == {"st"}
    runtime.documents.choose("")  # the loaded language model's own embeddings from now on
    try:
        hits = erin.vector_stores.search(store.id, query=f"Where does {TOWNS[3].name} lie?",
                                         extra_body={"mode": "vector"})
        assert hits.data and models() == {"st", "llm"}  # its vectors were computed before searching
    finally:
        runtime.documents.choose("town-embedder")
