"""Several users: each sees only their own chats, characters and persona; failed
logins are slowed down; --share asks for a password and fails softly offline."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.conftest import free_port, make_settings, page_load
from tests.test_characters import V3_CARD, card_png
from webui.auth import LoginGuard

ANN, BOB = ("ann", "ann-pass-1"), ("bob", "bob-pass-2")


@pytest.fixture(scope="module")
def shared_app(models_root, tmp_path_factory):
    from webui.runtime import build_runtime
    from webui.ui.app import launch

    user_data = tmp_path_factory.mktemp("shared_user_data")
    settings = make_settings(models_root, user_data, gradio_auth=f"{ANN[0]}:{ANN[1]},{BOB[0]}:{BOB[1]}")
    runtime = build_runtime(settings)
    app, url = launch(runtime, block=False, port=free_port())
    yield runtime, url
    app.close()


def short_replies(client: Client) -> Client:
    from tests.test_app_client import controls

    client.predict(*controls(max_new_tokens=8), api_name="/set_params")
    return client


def test_each_user_sees_only_their_own_data(shared_app, tmp_path):
    runtime, url = shared_app
    ann = short_replies(Client(url, auth=ANN, verbose=False))
    bob = short_replies(Client(url, auth=BOB, verbose=False))
    ann.predict("Ann's private note", api_name="/chat_send")
    card = tmp_path / "card.png"
    card.write_bytes(card_png(ccv3=V3_CARD))
    ann.predict(handle_file(str(card)), api_name="/character_import")
    ann.predict("Ann", "Ann's persona", api_name="/persona_save")

    ann_chats = runtime.users.get("ann").chats.list()
    assert [c.title for c in ann_chats] == ["Ann's private note"]
    secret_id = ann_chats[0].id
    # The first user keeps user_data/ itself; others get their own folder.
    assert runtime.users.get("ann").root == runtime.settings.user_data_dir
    assert runtime.users.get("bob").root == runtime.settings.user_data_dir / "users" / "bob"

    assert bob.predict(query="", api_name="/chat_search")["choices"] == []
    assert bob.predict(query="private", api_name="/chat_search")["choices"] == []
    with pytest.raises(AppError, match="unknown chat"):  # a known id of another user is unknown here
        bob.predict(chat=secret_id, api_name="/chat_open")
    with pytest.raises(AppError, match="unknown character"):
        bob.predict("Seraphina V3", api_name="/chat_character")
    loaded = page_load(bob)
    assert (loaded["persona-name"], loaded["persona-description"]) == ("You", "")  # Bob's own (the default)
    bob.predict("Bob's own chat", api_name="/chat_send")
    assert [c.title for c in runtime.users.get("bob").chats.list()] == ["Bob's own chat"]
    assert [c.title for c in runtime.users.get("ann").chats.list()] == ["Ann's private note"]
    opened = ann.predict(chat=secret_id, api_name="/chat_open")
    assert "Ann's private note" in str(opened[0])


def test_repeated_failed_logins_are_slowed_down(shared_app):
    _, url = shared_app
    with httpx.Client(base_url=url, timeout=60) as http:
        for _ in range(3):  # the first failures are answered at once
            assert http.post("/login", data={"username": "ann", "password": "wrong"}).status_code == 400
        started = time.monotonic()
        assert http.post("/login", data={"username": "ann", "password": "wrong"}).status_code == 400
        assert time.monotonic() - started >= 1.0  # a lower bound: sleeping cannot be faster
        # Another user is not slowed by Ann's attacker, and the right password still works.
        assert http.post("/login", data={"username": "bob", "password": BOB[1]}).status_code == 200


def test_login_guard_delays_grow_per_user_and_reset_on_success():
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    guard = LoginGuard([ANN, BOB], free_failures=2, first_delay=1.0, max_delay=5.0, sleep=record)

    async def attempts():
        results = [await guard.check("ann", "nope") for _ in range(6)]
        results.append(await guard.check("mallory", "x"))
        results.append(await guard.check("eve", "y"))  # unknown names share one counter
        results.append(await guard.check("ann", ANN[1]))  # right password: at once, no wait
        results.append(await guard.check("ann", "nope"))  # the count started again
        return results

    results = asyncio.run(attempts())
    assert results == [False] * 8 + [True, False]
    assert waits == [1.0, 2.0, 4.0, 5.0]
    assert guard.failures("ann") == 1 and guard.failures("nobody") == 2


def test_parallel_guesses_wait_their_turn():
    active, most = 0, 0

    async def slow(seconds: float) -> None:
        nonlocal active, most
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.01)
        active -= 1

    guard = LoginGuard([ANN], free_failures=0, first_delay=0.01, sleep=slow)

    async def burst():
        return await asyncio.gather(*(guard.check("ann", str(i)) for i in range(5)))

    assert asyncio.run(burst()) == [False] * 5
    assert most == 1  # never two waits for one name at the same time


def test_share_needs_a_password(tmp_path, capsys):
    from webui.__main__ import main

    assert main(["--user-data-dir", str(tmp_path), "--share"]) == 2
    assert "--gradio-auth" in capsys.readouterr().err


def test_share_failing_offline_says_so():
    from webui.ui.app import share_note

    assert "no share link could be made" in share_note(None, "http://127.0.0.1:7860/")
    assert "http://127.0.0.1:7860/" in share_note(None, "http://127.0.0.1:7860/")
    assert share_note("https://x.example", "http://127.0.0.1:7860/").startswith("Shared publicly")


def test_each_user_keeps_their_own_sampling_values(shared_app):
    from tests.test_app_client import controls
    runtime, url = shared_app
    Client(url, auth=ANN, verbose=False).predict(*controls(temperature=0.33), api_name="/set_params")
    Client(url, auth=BOB, verbose=False).predict(*controls(temperature=0.77), api_name="/set_params")
    # New sessions (a refresh, another browser) start from each user's own values.
    assert page_load(Client(url, auth=ANN, verbose=False))["temperature"] == 0.33
    assert page_load(Client(url, auth=BOB, verbose=False))["temperature"] == 0.77
    assert (runtime.settings.user_data_dir / "users" / "bob" / "settings.yaml").exists()
