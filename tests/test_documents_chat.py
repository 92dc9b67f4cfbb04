"""Documents in the chat, through the real app with gradio_client: a document that fits
goes into the prompt whole; a long one is retrieved per message and cited (file, page,
passage), the passage shown on request; libraries; users' documents are their own.

The session's app has no embedding model chosen, so the loaded tiny model's own
embeddings serve (the fallback), computed on the engine's thread."""

from __future__ import annotations

import pytest
from gradio_client import Client, handle_file

from tests.doc_fixtures import corpus_text, passage, pdf_bytes, towns
from tests.test_chat_ui import steady, texts

TOWNS = towns()


@pytest.fixture()
def client(app_url):
    client = Client(app_url, verbose=False)
    client.predict(*steady(), api_name="/set_params")
    client.predict(api_name="/chat_new")
    return client


@pytest.fixture()
def chats(runtime):
    return runtime.users.get(None).chats


def newest(chats):
    return chats.load(chats.list()[0].id)


def test_a_document_that_fits_goes_in_whole(client, chats, tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("The spare key is under the blue flowerpot by the door.")
    status, _ = client.predict([handle_file(str(note))], api_name="/documents_attach")
    assert "note.txt" in status
    client.predict("Where is the spare key?", api_name="/chat_send")
    question = [m for m in newest(chats).path() if m.role == "user"][-1]
    assert "under the blue flowerpot" in question.content and "Where is the spare key?" in question.content
    assert "flowerpot" not in question.visible and "note.txt" in question.visible  # the chat shows the name only
    assert len(question.sources) == 1 and question.sources[0].whole and question.sources[0].file == "note.txt"
    assert len(question.attachments) == 1
    # The next message in the same chat still has the document; nothing is attached again.
    client.predict("And what colour is the pot?", api_name="/chat_send")
    follow = [m for m in newest(chats).path() if m.role == "user"][-1]
    assert "flowerpot" in follow.content and follow.attachments == []


def test_a_long_document_is_retrieved_and_cited(client, chats, tmp_path):
    atlas = tmp_path / "atlas.pdf"
    atlas.write_bytes(pdf_bytes([passage(t) for t in TOWNS[:40]]))  # 40 pages: far over the budget
    status, _ = client.predict([handle_file(str(atlas))], api_name="/documents_attach")
    assert "atlas.pdf" in status
    town = TOWNS[17]
    shown = client.predict(f"Where does {town.name} lie?", api_name="/chat_send")[0]
    reply = texts(shown)[-1]  # the reply lists what it was given
    assert "Sources:" in reply and "atlas.pdf, p. 18" in reply
    question = [m for m in newest(chats).path() if m.role == "user"][-1]
    assert question.sources and not question.sources[0].whole
    assert newest(chats).path()[-1].content in reply and "Sources" not in newest(chats).path()[-1].content
    first = question.sources[0]
    assert (first.file, first.page) == ("atlas.pdf", 18) and town.name in first.text
    assert "[1] (atlas.pdf, page 18)" in question.content
    assert TOWNS[30].name not in question.content  # not the whole document: only what was found
    listed = client.predict(api_name="/documents_sources")
    choices = listed[0]["choices"] if isinstance(listed, (list, tuple)) else listed["choices"]
    assert choices[0][0] == "[1] atlas.pdf, p. 18"
    shown = client.predict(1, api_name="/documents_passage")
    assert shown.startswith("[1] atlas.pdf, p. 18") and town.name in shown


def test_bad_attachments_are_refused_and_leave_nothing(client, runtime, tmp_path):
    store = runtime.documents.for_user(None)
    before = len(store.files())
    bad = tmp_path / "scan.pdf"
    bad.write_bytes(pdf_bytes([""]))
    evil = tmp_path / "broken.docx"
    evil.write_bytes(b"PK\x03\x04 not a zip")
    status, _ = client.predict([handle_file(str(bad)), handle_file(str(evil))], api_name="/documents_attach")
    assert "scanned" in status and "broken.docx" in status
    assert len(store.files()) == before


def test_a_library_feeds_the_chat(client, chats, tmp_path):
    client.predict("Towns", api_name="/library_create")
    atlas = tmp_path / "towns.txt"
    atlas.write_text(corpus_text(TOWNS[40:100]))
    listing, _ = client.predict("Towns", [handle_file(str(atlas))], api_name="/library_add")
    assert "towns.txt" in listing
    client.predict(["Towns"], api_name="/documents_libraries")
    town = TOWNS[77]
    client.predict(f"Where does {town.name} lie?", api_name="/chat_send")
    question = [m for m in newest(chats).path() if m.role == "user"][-1]
    assert question.sources and town.name in question.sources[0].text and question.sources[0].file == "towns.txt"
    client.predict("Towns", api_name="/library_delete")


def test_each_user_has_their_own_documents(runtime):
    alice, bob = runtime.documents.for_user("alice"), runtime.documents.for_user("bob")
    assert alice.folder != bob.folder and "users" in alice.folder.parts
    alice.add_file("mine.txt", b"alice's words", "text")
    assert bob.files() == []


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/hosts", "tiny-llama", "nope\x00", "a" * 300])
def test_embedding_model_choice_refuses_what_is_not_listed(client, runtime, name):
    from gradio_client.exceptions import AppError

    with pytest.raises((AppError, ValueError)):
        client.predict(name, api_name="/embedding_model")
    assert runtime.documents.chosen() == ""  # still the loaded model's own
    with pytest.raises(Exception, match="unknown embedding model"):
        runtime.documents.choose(name)


def test_a_characters_libraries_feed_each_of_its_chats(client, chats, runtime, tmp_path):
    client.predict("Harbours", api_name="/library_create")
    harbours = tmp_path / "harbours.txt"
    harbours.write_text(corpus_text(TOWNS[100:160]))
    client.predict("Harbours", [handle_file(str(harbours))], api_name="/library_add")
    client.predict([], api_name="/documents_libraries")  # the chat itself chooses none
    try:
        saved = client.predict("Assistant", "Archivist", "{{char}} knows every harbour.", "", "", "", "", "", "",
                               None, ["Harbours", "No such library"], api_name="/character_save")
        assert "Saved Archivist" in saved[-1]
        assert runtime.users.get(None).characters.load("Archivist").libraries == ["Harbours"]
        assert client.predict("Archivist", api_name="/character_open")[-3]["value"] == ["Harbours"]  # libraries
        town = TOWNS[130]
        client.predict("Archivist", api_name="/chat_character")
        client.predict(f"Where does {town.name} lie?", who="Archivist", api_name="/chat_send")
        question = [m for m in newest(chats).path() if m.role == "user"][-1]
        assert question.sources and question.sources[0].file == "harbours.txt"
        assert town.name in question.sources[0].text and town.name in question.content.split("Where does")[0]
        # Another character's chat does not read them.
        client.predict("Assistant", api_name="/chat_character")
        client.predict(f"Where does {town.name} lie?", who="Assistant", api_name="/chat_send")
        assert not [m for m in newest(chats).path() if m.role == "user"][-1].sources
    finally:
        client.predict("Archivist", api_name="/character_delete")
        client.predict("Harbours", api_name="/library_delete")
