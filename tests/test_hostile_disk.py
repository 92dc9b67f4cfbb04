"""A hostile re-probe's disk findings (issue 26): chats that outgrew what the reader
accepts and vanished (N32), and a signed-in user filling the disk through uploads and
exports (N36)."""

from __future__ import annotations

import json

import pytest

from webui.chat import actions
from webui.chat.history import ChatError
from webui.chat.store import MAX_CHAT_BYTES, ChatStore
from webui.userdata import UserSpace


# -- N32: one size limit, checked before every save ------------------------------------------
def test_an_edit_that_would_outgrow_the_file_limit_is_refused_and_the_chat_still_loads(tmp_path):
    """The probe's steps: "Edit a message" with 800,000 control characters, again and
    again (each edit is kept as a version; JSON writes each character as six bytes).
    On main the 14th save wrote 67 MB, past what the reader accepts, and the chat was
    set aside as unreadable."""
    space = UserSpace(tmp_path)
    conversation = actions.new(space, "Assistant").conversation
    conversation.append("user", "hi")
    space.chats.save(conversation)
    chat = conversation.id
    refused = None
    for i in range(16):  # bounded: 14 edits crossed the limit in the probe
        try:
            actions.edit(space, chat, "Assistant", 1, "\x01" * 800_000 + str(i))
        except ChatError as exc:
            refused = (i, str(exc))
            break
    assert refused is not None, "an edit past the file limit was saved"
    assert "not saved" in refused[1] and "MB" in refused[1]
    path = tmp_path / "chats" / f"{chat}.json"
    assert path.stat().st_size <= MAX_CHAT_BYTES
    space.chats._summaries.clear()
    loaded = space.chats.load(chat)  # still readable: nothing was set aside
    assert len(loaded.messages) == refused[0] + 1  # "hi" and every edit saved before the refusal
    assert space.chats.unreadable() == {}
    assert [s.id for s in space.chats.list()] == [chat]


def test_a_file_an_older_version_wrote_past_the_limit_is_recovered_whole(tmp_path):
    """A chat saved past the limit before this check existed: "recover" gave back one
    message holding the first 1,000,000 characters of raw JSON.  It now keeps the
    messages, as many as fit the limit."""
    messages = [{"id": 0, "parent": -1, "role": "user", "content": "first words"}]
    for i in range(1, 15):
        messages.append({"id": i, "parent": 0, "role": "user", "content": "\x01" * 800_000 + str(i)})
    raw = json.dumps({"format": "webui-chat", "version": 1, "id": "big1", "title": "Big",
                      "character": "Assistant", "messages": messages}, indent=1)
    assert len(raw) > MAX_CHAT_BYTES  # premise
    (tmp_path / "big1.json").write_text(raw)
    store = ChatStore(tmp_path)
    assert store.list() == []  # set aside, as before
    (label,) = store.unreadable()
    recovered = store.recover(label)
    assert recovered.messages[0].content == "first words"
    assert 1 < len(recovered.messages) < 15
    assert all(m.content.startswith("\x01") for m in recovered.messages[1:])
    store._summaries.clear()
    assert store.load(recovered.id).messages[0].content == "first words"


def test_the_store_refuses_a_save_over_the_limit_with_the_old_file_intact(tmp_path, monkeypatch):
    """Replies and every other save go through ChatStore.save: the same check for all."""
    store = ChatStore(tmp_path)
    conversation = store.new("Assistant")
    conversation.append("user", "kept")
    store.save(conversation)
    before = (tmp_path / f"{conversation.id}.json").read_bytes()
    conversation.append("assistant", "y" * 1000)
    monkeypatch.setattr("webui.chat.store.MAX_CHAT_BYTES", len(before) + 100)  # reader and writer alike
    with pytest.raises(ChatError, match="not saved"):
        store.save(conversation)
    assert (tmp_path / f"{conversation.id}.json").read_bytes() == before
    assert [m.content for m in store.load(conversation.id).messages] == ["kept"]


# -- N36: uploads and exports within quotas ------------------------------------------------------
ANN, BOB = ("ann", "ann-pass-1"), ("bob", "bob-pass-2")
KB = 1 << 10


@pytest.fixture(scope="module")
def quota_app(models_root, tmp_path_factory):
    """Two users and small upload quotas: 2 MB each, 3 MB for everyone."""
    from tests.conftest import free_port, make_settings
    from webui.runtime import build_runtime
    from webui.ui.app import launch

    settings = make_settings(models_root, tmp_path_factory.mktemp("quota_user_data"),
                             gradio_auth=f"{ANN[0]}:{ANN[1]},{BOB[0]}:{BOB[1]}",
                             upload_quota_mb=2, upload_total_mb=3)
    app, url = launch(build_runtime(settings), block=False, port=free_port())
    yield url
    app.close()


def signed_in(url: str, who: tuple[str, str]):
    import httpx

    client = httpx.Client(base_url=url, timeout=60)
    assert client.post("/login", data={"username": who[0], "password": who[1]}).status_code == 200
    return client


def upload(client, size: int, tag: int):
    body = tag.to_bytes(8, "big") + b"\0" * (size - 8)  # distinct content: Gradio names files by hash
    return client.post("/gradio_api/upload", files={"files": (f"up{tag}.bin", body)})


def test_a_users_uploads_stay_within_their_quota_oldest_removed_first(quota_app):
    """The probe: a signed-in user POSTs file after file to /gradio_api/upload, with no
    event to use them; on main each is kept forever (381 MB in 1.6 s)."""
    from pathlib import Path

    bob = signed_in(quota_app, BOB)
    kept = []
    for tag in range(8):  # 8 x 600 KB = 4.8 MB against a 2 MB quota
        answer = upload(bob, 600 * KB, tag)
        assert answer.status_code == 200, answer.text
        kept.append(Path(answer.json()[0]))
    on_disk = [p for p in kept if p.exists()]
    assert sum(p.stat().st_size for p in on_disk) <= 2 << 20 and len(on_disk) == 3
    assert on_disk == kept[-len(on_disk):] and kept[-1] in on_disk  # the newest stay, the oldest went
    too_big = upload(bob, (2 << 20) + 64 * KB, 100)
    assert too_big.status_code == 413 and "MB" in too_big.json()["detail"]
    # Another user has their own quota; everyone's together have the total (3 MB): Bob's
    # 1.8 MB and two of Ann's fit, a third would take the total past it.
    ann = signed_in(quota_app, ANN)
    answers = [upload(ann, 600 * KB, 200 + tag) for tag in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 507]
    assert "full" in answers[2].json()["detail"]
    assert all(p.exists() for p in on_disk)  # Ann's uploads never remove Bob's
    bob.close(), ann.close()


def test_uploads_older_than_the_limit_are_pruned(tmp_path):
    from webui.ui.uploads import UploadLedger

    ledger = UploadLedger(tmp_path, per_user=1 << 20, total=2 << 20, max_age=3600, free_floor=0)
    old = tmp_path / "abc" / "old.bin"
    old.parent.mkdir()
    old.write_bytes(b"x" * 1000)
    ledger.reserve("bob", 1000)
    ledger.release("bob", 1000, [str(old), "/etc/passwd"])  # a path outside the cache is never counted
    assert ledger.used("bob") == 1000
    ledger._files[old].when -= 7200  # uploaded two hours ago
    ledger.prune()
    assert not old.exists() and not old.parent.exists() and ledger.used("bob") == 0


def test_exporting_the_same_chat_again_writes_it_once_and_exports_are_capped(tmp_path):
    """On main, eight exports of one 38 MB chat wrote 294 MB (kept an hour each)."""
    from webui.ui.exports import Exports

    exports = Exports(tmp_path, max_per_user=3, max_user_bytes=10 * KB)
    first = exports.write("bob", "chat-1.json", "x" * 3000)
    assert all(exports.write("bob", "chat-1.json", "x" * 3000) == first for _ in range(8))
    files = [p for p in (tmp_path / "webui-exports").rglob("*") if p.is_file()]
    assert len(files) == 1
    for i in range(6):  # different chats: each user keeps the newest 3, within 10 KB
        newest = exports.write("bob", f"chat-{i + 2}.json", "y" * 3000)
    files = [p for p in (tmp_path / "webui-exports").rglob("*") if p.is_file()]
    assert len(files) == 3 and str(newest) in map(str, files)
    assert exports.write("ann", "chat-9.json", "z") != newest  # another user's are their own
