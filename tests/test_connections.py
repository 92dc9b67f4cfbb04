"""Slow and many connections (hostile round 2, N28): one client without a key held 19,990
half-sent requests, the process ran out of file handles and the log grew 103 MB in 40 s.

Against the real API and UI servers on loopback, with a small cap and short deadlines set
through Settings: connections beyond the per-client cap are refused at once, another
client is still answered, half-sent requests and stalled bodies are closed, and accept
errors are logged once, not once per retry (webui/connections.py)."""

from __future__ import annotations

import json

import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.conftest import API_KEY, ADMIN_KEY, free_port, make_settings, wait_for
from webui.settings import PROJECT_ROOT
from webui.connections import TABLE, ConnectionTable, ThrottledLog, client_key

CAP = 5
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
HALF = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: b"  # never finished
READ_LIMIT = 30.0  # seconds a read may block before the test gives up (a bound, not a measure)


@pytest.fixture(scope="module")
def limited(models_root, tmp_path_factory):
    """A runtime whose servers allow CAP connections per client and short deadlines."""
    from webui.runtime import build_runtime

    settings = make_settings(models_root, tmp_path_factory.mktemp("conn_data"), api_key=API_KEY,
                             admin_key=ADMIN_KEY, max_connections_per_client=CAP,
                             header_timeout=HEADER_TIMEOUT, body_timeout=BODY_TIMEOUT)
    return build_runtime(settings)


@pytest.fixture(scope="module")
def api_port(limited):
    from webui.api.openai_api import APIServer

    port = free_port()
    server = APIServer(limited, port=port)
    server.start()
    yield port, server.server.config.http_protocol_class.server_id
    server.stop()


@pytest.fixture(scope="module")
def ui_port(limited):
    from webui.ui.app import launch

    port = free_port()
    app, _ = launch(limited, block=False, port=port)
    yield port, app.server.config.http_protocol_class.server_id
    app.close()


@contextmanager
def half_sent(port: int, count: int, payload: bytes = HALF) -> Iterator[list[socket.socket]]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=READ_LIMIT)
            sock.sendall(payload)
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def read_to_end(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (bounded by READ_LIMIT)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def still_open(sock: socket.socket) -> bool:
    """Nothing was answered and the connection was not closed."""
    sock.settimeout(0.2)
    try:
        sock.recv(1)  # an answer, or b"" when closed
        return False
    except TimeoutError:
        return True
    except OSError:
        return False
    finally:
        sock.settimeout(READ_LIMIT)


def models_from(port: int, address: str) -> int:
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(transport=transport, timeout=READ_LIMIT) as client:
        return client.get(f"http://127.0.0.1:{port}/v1/models", headers={"x-api-key": API_KEY}).status_code


@pytest.mark.parametrize("which", ["api", "ui"])
def test_connections_beyond_the_per_client_cap_are_refused(which, request):
    port, server = request.getfixturevalue(f"{which}_port")
    wait_for(lambda: TABLE.count(server) == 0, 10)  # Gradio's own look at itself at launch
    with half_sent(port, CAP + 5) as socks:
        refused = [read_to_end(sock) for sock in socks[CAP:]]  # answered at once, not after a deadline
        assert all(b"503" in answer.split(b"\r\n", 1)[0] for answer in refused), refused[:1]
        assert all(still_open(sock) for sock in socks[:CAP])
        # Another client (127.0.0.2 is loopback too) is still served meanwhile.
        if which == "api":
            assert models_from(port, "127.0.0.2") == 200
        else:
            with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=READ_LIMIT) as c:
                assert c.get(f"http://127.0.0.1:{port}/config").status_code == 200


@pytest.mark.parametrize("which", ["api", "ui"])
def test_half_sent_requests_are_closed_after_the_header_deadline(which, request):
    port, server = request.getfixturevalue(f"{which}_port")
    with half_sent(port, CAP) as socks:
        answers = [read_to_end(sock) for sock in socks]  # returns once the server closes each
        assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers[:1]
    # The client's places are free again: its own requests are answered.
    assert wait_for(lambda: TABLE.count(server) == 0, 10)
    if which == "api":
        assert models_from(port, "127.0.0.1") == 200


def test_a_stalled_body_is_closed(api_port):
    api_port, _ = api_port
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"x-api-key: " + API_KEY.encode() + b"\r\ncontent-length: 100\r\n\r\n{\"model\":")
    with half_sent(api_port, 1, head) as (sock,):
        answer = read_to_end(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer


def test_a_streamed_reply_is_not_cut_by_the_deadlines(api_port, limited):
    """Once the request is in, the connection is the app's: a reply longer than both
    deadlines streams to its end."""
    api_port, _ = api_port
    body = {"model": limited.models.current.name, "prompt": "Once", "max_tokens": 40, "stream": True,
            "temperature": 0, "ban_eos_token": True, "stream_options": {"include_usage": True}}
    lines = []
    with httpx.stream("POST", f"http://127.0.0.1:{api_port}/v1/completions", json=body,
                      headers={"x-api-key": API_KEY}, timeout=READ_LIMIT) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and not lines:
                time.sleep(HEADER_TIMEOUT + BODY_TIMEOUT)  # a slow reader, past both deadlines
            lines += [line] if line.startswith("data: ") else []
    # Every token came: a chunk carries a token's text only once it is whole UTF-8, so a
    # random model's bytes make fewer chunks than tokens; the usage counts the tokens.
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2].removeprefix("data: "))["usage"]["completion_tokens"] == 40


# -- units ---------------------------------------------------------------------------------
def test_table_counts_per_server_and_client_and_in_all():
    table = ConnectionTable(total=3)
    assert table.admit(1, "a", 2) is None and table.admit(1, "a", 2) is None
    assert "a holds 2" in table.admit(1, "a", 2)
    assert table.admit(2, "a", 2) is None  # another server counts apart
    assert "its most" in table.admit(1, "b", 2)  # three in all
    table.release(1, "a")
    assert table.admit(1, "b", 2) is None


def test_client_key_counts_ipv6_by_its_64():
    assert client_key(("2001:db8::1", 5, 0, 0)) == client_key(("2001:db8::ffff", 6, 0, 0)) == "2001:db8::/64"
    assert client_key(("::ffff:10.0.0.1", 1, 0, 0)) == "10.0.0.1"
    assert client_key(("10.0.0.1", 1)) == "10.0.0.1"
    assert client_key(None) == "(local)"


def test_throttled_log_counts_what_it_holds_back(caplog):
    import logging

    throttled = ThrottledLog(logging.getLogger("test.throttled"), every=3600)
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        said = [throttled.warning("k", "out of handles") for _ in range(1000)]
    assert said.count(True) == 1 and len(caplog.records) == 1
    throttled._last["k"] = -1e9  # as if the hour had passed
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        throttled.warning("k", "out of handles")
    assert "999 more" in caplog.records[-1].getMessage()


SERVER = textwrap.dedent("""
    import logging, resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
    logging.basicConfig(level=logging.INFO)
    import uvicorn
    from webui import quiet_server
    from webui.connections import TABLE, ConnectionLimits

    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    TABLE.total = 10_000  # no cap below the file-handle limit: the handles do run out
    config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", lifespan="off")
    quiet_server.Server(config, ConnectionLimits(per_client=10_000, header_timeout=60)).run()
""")


def test_running_out_of_file_handles_is_logged_once_not_per_retry(tmp_path):
    """A server process with 200 file handles and 400 connections knocking: asyncio logged a
    traceback for every turn of its accept loop and scheduled as many retries (35 MB in 5 s
    here, and 11 MB more of failed retries at shutdown); now one pause, one line."""
    port = free_port()
    log_file = tmp_path / "server.log"
    with open(log_file, "wb") as log:
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stderr=log, cwd=PROJECT_ROOT)
    try:
        assert wait_for(lambda: _connects(port), 60)
        with half_sent(port, 400):
            time.sleep(3)  # the flood's window: its log is what the test reads
        # The flood gone, the server accepts and answers again.
        assert wait_for(lambda: _answers(port), 30)
    finally:
        server.terminate()
        server.wait(30)
    text = log_file.read_text(errors="replace")
    assert "out of file handles" in text  # it did run out: the test is not vacuous
    assert text.count("Too many open files") <= 3 and len(text) < 10_000, len(text)


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "ok"
    except httpx.HTTPError:
        return False
