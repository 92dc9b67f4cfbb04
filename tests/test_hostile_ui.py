"""A hostile review's UI findings, against a real two-user app on loopback: server-wide actions
are the owner's, failed logins slow the guesser and not the owner, exports are private
and go away, bodies are capped, and every error is a message, not a bare "error"."""

from __future__ import annotations

import asyncio
import errno
import json
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.conftest import free_port, make_settings, wait_for
from webui.auth import CLIENT, LoginGuard
from webui.ui.guard import PER_USER

ANN, BOB = ("ann", "ann-pass-1"), ("bob", "bob-pass-2")
GENERIC = "has not enabled verbose error reporting"  # gradio_client's text for a bare error


@pytest.fixture(scope="module")
def two_users(models_root, tmp_path_factory):
    from webui.runtime import build_runtime
    from webui.ui.app import launch

    user_data = tmp_path_factory.mktemp("hostile_ui_data")
    settings = make_settings(models_root, user_data, gradio_auth=f"{ANN[0]}:{ANN[1]},{BOB[0]}:{BOB[1]}",
                             extensions=("word_bias",))
    runtime = build_runtime(settings)
    app, url = launch(runtime, block=False, port=free_port())
    yield runtime, url
    app.close()


@pytest.fixture(scope="module")
def ann(two_users):
    from tests.test_app_client import controls

    client = Client(two_users[1], auth=ANN, verbose=False)
    client.predict(*controls(max_new_tokens=4), api_name="/set_params")
    return client


@contextmanager
def logged_in(url: str, who=ANN, **kw) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=120, **kw) as http:
        assert http.post("/login", data={"username": who[0], "password": who[1]}).status_code == 200
        yield http


def raw_call(http: httpx.Client, api_name: str, payload: str) -> tuple[str, str]:
    """Call an event with a JSON body written by hand (NaN, lone surrogates...);
    returns (event, data) of the result: ("complete", ...) or ("error", message)."""
    started = http.post(f"/gradio_api/call/{api_name}", content=payload.encode(),
                        headers={"content-type": "application/json"})
    assert started.status_code == 200, started.text
    event_id = started.json()["event_id"]
    kind, data = "", ""
    with http.stream("GET", f"/gradio_api/call/{api_name}/{event_id}") as answer:
        for line in answer.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = line.split(":", 1)[1].strip()
                if kind in ("complete", "error"):
                    return kind, data
    return kind, data


def event_values(http: httpx.Client, api_name: str, first: list) -> list:
    """`first`, then the default values of the event's other inputs (from the page's
    config): a payload that stays whole when an input is added to the event."""
    config = http.get("/config").json()
    event = next(d for d in config["dependencies"] if d.get("api_name") == api_name)
    components = {c["id"]: c for c in config["components"]}
    values = [components[i].get("props", {}).get("value") for i in event["inputs"]]
    return first + values[len(first):]


def assert_clear_error(kind: str, data: str, *words: str):
    assert kind == "error", (kind, data)
    assert data not in ("", "null"), "a bare error, with no message"
    for word in words:
        assert word.lower() in data.lower(), data


# -- item 6: server-wide actions --------------------------------------------------------------
def test_server_wide_actions_are_the_owners_alone(two_users, ann):
    runtime, url = two_users
    bob = Client(url, auth=BOB, verbose=False)
    endpoints = bob.view_api(print_info=False, return_format="dict")["named_endpoints"]
    owner_only = {name.lstrip("/") for name in endpoints} - PER_USER
    assert {"model_load", "model_unload", "lora_apply", "model_download", "save_preset", "delete_preset",
            "session_save_extensions", "session_apply_extensions", "word_bias_rules"} <= owner_only
    settings_file = runtime.settings.settings_file
    before = settings_file.read_text() if settings_file.exists() else None
    jobs = {name: bob.submit(*[p.get("parameter_default") for p in endpoints[f"/{name}"]["parameters"]],
                             api_name=f"/{name}") for name in sorted(owner_only)}
    for name, job in jobs.items():
        with pytest.raises(AppError, match="only the server's owner"):
            job.result(timeout=120)
        assert name  # each one refused
    assert (settings_file.read_text() if settings_file.exists() else None) == before
    assert runtime.models.current is not None and runtime.ui_restart.take(timeout=0) is None
    # The owner may: saving the extension choice works for Ann.
    assert "Saved" in ann.predict(["word_bias"], api_name="/session_save_extensions")


# -- item 9: clear errors ------------------------------------------------------------------------
def test_lone_surrogates_get_a_clear_error(two_users):
    _, url = two_users
    with logged_in(url) as http:
        kind, data = raw_call(http, "notebook_count_tokens", '{"data": ["a\\ud800b"]}')
        assert_clear_error(kind, data, "unicode")
        # Every input of the event (its own defaults after these), however many it has.
        first = ["hi \udfff", None, "Assistant", "instruct", "(model's own)", "", "", "", {}, False]
        kind, data = raw_call(http, "chat_send", json.dumps({"data": event_values(http, "chat_send", first)}))
        assert_clear_error(kind, data, "unicode")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", '"abc"', "1e308", "[1]"])
def test_odd_message_numbers_get_a_clear_error(two_users, ann, number):
    _, url = two_users
    ann.predict("Hello", api_name="/chat_send")
    with logged_in(url) as http:
        for api_name in ("chat_fork", "chat_previous_version", "chat_next_version"):
            kind, data = raw_call(http, api_name, f'{{"data": [null, "Assistant", {number}]}}')
            if kind == "error":
                assert data not in ("", "null"), (api_name, number)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_deeply_nested_uploads_get_a_clear_error(two_users, ann, tmp_path):
    card = tmp_path / "card.json"
    card.write_text('{"spec": "chara_card_v2", "data": {"name": "Deep", "extensions": {"x": ' + nested(400) + "}}}")
    with pytest.raises(AppError) as info:
        ann.predict(handle_file(str(card)), api_name="/character_import")
    assert GENERIC not in str(info.value) and "nested" in str(info.value)
    chat = tmp_path / "chat.json"
    chat.write_text('{"messages": ' + nested(10_000) + "}")
    with pytest.raises(AppError) as info:
        ann.predict(handle_file(str(chat)), api_name="/chat_import")
    assert GENERIC not in str(info.value) and "nested" in str(info.value)


def test_deeply_nested_preset_gets_a_clear_error(two_users, ann):
    runtime, _ = two_users
    folder = runtime.settings.user_data_dir / "presets"
    folder.mkdir(exist_ok=True)
    (folder / "deep.yaml").write_text("temperature: " + nested(5000) + "\n")
    ann.predict(api_name="/list_presets")  # the session's dropdown now lists it
    with pytest.raises(AppError, match="nested"):
        ann.predict("deep", api_name="/load_preset")


def test_full_disk_gives_a_clear_error_and_opening_a_chat_still_works(two_users, ann, monkeypatch):
    runtime = two_users[0]
    ann.predict("Saved before the disk filled", api_name="/chat_send")
    chat_id = runtime.users.get("ann").chats.list()[0].id

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("webui.storage.os.fsync", full)
    for args, api_name in ((("Another",), "/chat_send"), ((), "/chat_remove_last"), (("t",), "/chat_rename")):
        with pytest.raises(AppError, match="disk is full"):
            ann.predict(*args, api_name=api_name)
    other = Client(two_users[1], auth=ANN, verbose=False)  # a fresh tab: its recent.yaml write fails
    opened = other.predict(chat=chat_id, api_name="/chat_open")
    assert "Saved before the disk filled" in str(opened[0])


# -- item 8: exports --------------------------------------------------------------------------------
def test_exports_are_private_and_removed_with_their_source(two_users, ann):
    runtime, _ = two_users
    ann.predict("Export me", api_name="/chat_send")
    chat_id = runtime.users.get("ann").chats.list()[0].id
    path = Path(_exported(ann, "/chat_export"))  # the client's download; its name is the server's
    assert path.name == f"chat-{chat_id}.json"
    server_copy = next(Path(runtime_cache()).rglob(path.name))
    assert stat.S_IMODE(server_copy.stat().st_mode) == 0o600
    for folder in (server_copy.parent, server_copy.parent.parent, server_copy.parent.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    ann.predict(chat_id, api_name="/chat_open")
    ann.predict(api_name="/chat_delete")
    assert not list(Path(runtime_cache()).rglob(path.name))


def _exported(client: Client, api_name: str) -> str:
    result = client.predict(api_name=api_name)
    return result["value"] if isinstance(result, dict) else result


def runtime_cache() -> str:
    import os

    return os.environ["GRADIO_TEMP_DIR"]


# -- item 5: bodies are capped on the UI port ---------------------------------------------------
def test_large_bodies_are_refused_on_the_ui_port(two_users):
    from webui.ui.app import UI_MAX_BODY

    _, url = two_users
    with logged_in(url) as http:
        big = json.dumps({"data": ["x" * (UI_MAX_BODY + 1)]})
        assert http.post("/gradio_api/call/notebook_count_tokens", content=big,
                         headers={"content-type": "application/json"}).status_code == 413

        def chunks():
            for _ in range(UI_MAX_BODY // 65536 + 2):
                yield b" " * 65536

        assert http.post("/gradio_api/call/notebook_count_tokens", content=chunks(),
                         headers={"content-type": "application/json"}).status_code == 413
        kind, data = raw_call(http, "notebook_count_tokens", json.dumps({"data": ["a few words"]}))
        assert kind == "complete"


# -- item 7: logins ------------------------------------------------------------------------------
def test_a_guesser_elsewhere_does_not_lock_out_the_owner(two_users):
    """3 quick and 4 concurrent wrong passwords for ann from 127.0.0.2 (still loopback)."""
    _, url = two_users
    attacker = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=url, timeout=120, transport=attacker) as http:
        for _ in range(3):
            assert http.post("/login", data={"username": "ann", "password": "wrong"}).status_code == 400

        def guess(i):
            with httpx.Client(base_url=url, timeout=120, transport=httpx.HTTPTransport(local_address="127.0.0.2")) as c:
                return c.post("/login", data={"username": "ann", "password": f"wrong{i}"}).status_code

        with ThreadPoolExecutor(4) as pool:
            guesses = [pool.submit(guess, i) for i in range(4)]
            time.sleep(0.3)
            started = time.monotonic()
            with httpx.Client(base_url=url, timeout=120) as owner:  # from 127.0.0.1
                assert owner.post("/login", data={"username": "ann", "password": ANN[1]}).status_code == 200
            waited = time.monotonic() - started
            assert all(g.result() == 400 for g in guesses)
    assert waited < 5, waited  # generous: unfixed, she waited 30 s behind the guesser


def test_login_guard_keys_on_address_and_answers_wrong_attempts_in_turn():
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0.05)

    guard = LoginGuard([ANN], free_failures=1, first_delay=1.0, sleep=record)

    async def from_address(address: str, coro):
        CLIENT.set(address)
        return await coro

    async def scenario():
        await from_address("10.0.0.9", guard.check("ann", "x"))
        burst = await asyncio.gather(*(from_address("10.0.0.9", guard.check("ann", "y")) for _ in range(5)))
        owner = await from_address("10.0.0.1", guard.check("ann", ANN[1]))
        return burst, owner

    burst, owner = asyncio.run(scenario())
    assert burst == [False] * 5 and owner is True
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0]  # each wrong one answered in turn, after its wait
    assert guard.failures("ann", "10.0.0.9") == 6 and guard.failures("ann", "10.0.0.1") == 0


def test_right_password_is_accepted_while_a_wrong_one_waits_on_the_same_address():
    """Hostile round 2, N34: a guesser kept one wrong attempt for the owner in flight from
    her own address (NAT, a reverse proxy), and her right password was refused unchecked."""
    guard = LoginGuard([ANN], free_failures=0, first_delay=30.0)
    CLIENT.set("10.0.0.7")

    async def scenario():
        guess = asyncio.ensure_future(guard.check("ann", "guess"))
        await asyncio.sleep(0.05)  # the guess is waiting its 30 s
        owner = [await guard.check("ann", ANN[1]) for _ in range(3)]
        still_waiting = not guess.done()
        guess.cancel()
        return owner, still_waiting

    owner, still_waiting = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert still_waiting and owner == [True, True, True]


def test_a_guesser_on_the_same_address_does_not_lock_out_the_account(two_users):
    """Hostile round 2, N34, over HTTP: with a wrong attempt for bob in flight from 127.0.0.1,
    bob's right password from 127.0.0.1 was answered "Incorrect credentials" at once, 0 of 38."""
    _, url = two_users
    wrong = {"username": BOB[0], "password": "guess"}
    with httpx.Client(base_url=url, timeout=120) as guesser:
        for _ in range(5):  # three free failures, then waits of 1 s and 2 s: the next waits 4 s
            assert guesser.post("/login", data=wrong).status_code == 400
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=url, timeout=120) as guesser:
        guess = pool.submit(guesser.post, "/login", data=wrong)
        time.sleep(0.3)  # let it reach its wait
        with httpx.Client(base_url=url, timeout=120) as owner:
            answers = [owner.post("/login", data={"username": BOB[0], "password": BOB[1]}).status_code
                       for _ in range(3)]
        overlapped = not guess.done()
        assert guess.result().status_code == 400
    assert answers == [200, 200, 200]
    assert overlapped  # the right password was checked while the wrong one waited


def test_one_user_with_many_tabs_leaves_a_place_for_another(two_users, ann):
    """Hostile round 2, N51: UI requests were owned by the browser session, so bob with ten
    tabs held all eight batch places and ann's short reply waited for one of his to end.
    Now bob is one owner across his tabs: he holds at most --max-batch-per-user (7)."""
    from tests.test_app_client import controls

    runtime, url = two_users
    engine = runtime.engine
    bobs = [Client(url, auth=BOB, verbose=False) for _ in range(10)]
    for tab in bobs:
        tab.predict(*controls(max_new_tokens=400, ban_eos_token=True), api_name="/set_params")
    jobs = [tab.submit("In the beginning", api_name="/notebook_generate") for tab in bobs]
    try:
        assert wait_for(lambda: engine.pending >= 10, 120)  # all ten queued or decoding
        text, _ = ann.predict("The keeper", api_name="/notebook_generate")  # her 4 tokens
        unfinished = sum(not job.done() for job in jobs)
    finally:
        for tab in bobs:  # Stop is still per tab: each ends only its own reply
            tab.predict(api_name="/notebook_stop")
        for job in jobs:
            job.result(timeout=120)
    assert text
    assert unfinished == 10  # hers was admitted beside his, not after one of his ended
