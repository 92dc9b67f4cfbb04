"""Nothing a message names elsewhere is fetched by the page (issue 26 N38, issue 31's
privacy item): Markdown and HTML images, SVG <image>, CSS url(), <video>, in user and
assistant messages, typed, generated, stored (an import) and after a reload.  A real
headless Chromium shows them while a listener on another loopback address records
every connection it gets; it must get none, and the chat must still work."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlparse

import httpx
import pytest

from tests.conftest import API_KEY
from tests.test_browser import LOOPBACK, browser, wait_until  # noqa: F401  (the fixture)
from webui.content_policy import HEADER

LISTENER_HOST = "127.0.0.77"  # loopback, but not the app's address: "another site"


class Listener:
    """A TCP server that notes the first line of every request it is sent."""

    def __init__(self, host: str = LISTENER_HOST):
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(0.2)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}/{path}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    first = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    first = "(connection)"
                self.seen.append(first or "(connection)")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener():
    found = Listener()
    # Premise: the listener does see a request (so "saw nothing" below means something).
    httpx.get(found.url("premise"), timeout=5)
    assert wait_until(lambda: any("/premise" in line for line in found.seen), timeout=5)
    found.seen.clear()
    yield found
    found.close()


def settled(listener: Listener) -> list[str]:
    """What the listener saw, once a fetch the page may have started had time to arrive."""
    time.sleep(1.0)
    return listener.seen


def payloads(listener: Listener, where: str) -> str:
    """One message holding each way the probe found to make the page fetch an address."""
    u = lambda kind: listener.url(f"{where}-{kind}?d=SECRET")  # noqa: E731
    return (f"look ![pic]({u('md')}) <img src=\"{u('img')}\"> <video src=\"{u('video')}\"></video> "
            f"<video><source src=\"{u('source')}\"></video> <svg><image href=\"{u('svg')}\"/></svg> "
            f"<div style=\"background:url({u('css')})\">x</div> <audio src=\"{u('audio')}\"></audio>")


@pytest.fixture(autouse=True)
def steady_sampling(runtime):
    from webui.generation.params import make_params

    runtime.remember(make_params({"seed": 5, "ban_eos_token": True, "max_new_tokens": 12}))


def test_the_page_and_api_docs_carry_a_policy_that_allows_only_this_origin(app_url, api_url):
    policy = httpx.get(app_url, timeout=30).headers[HEADER]
    for directive in ("img-src 'self' data: blob:", "media-src 'self' data: blob:", "connect-src 'self'",
                      "font-src 'self' data:", "object-src 'none'", "frame-src 'self' blob:"):
        assert directive in policy, policy
    docs = httpx.get(f"{api_url}/docs", headers={"x-api-key": API_KEY}, timeout=30).headers[HEADER]
    assert "default-src 'none'" in docs and "script-src" not in docs


def test_remote_content_in_messages_is_never_fetched_and_shows_as_links(browser, app_url, runtime, listener):  # noqa: F811
    space = runtime.users.get(None)
    # A stored conversation (as an import or a character's greeting would bring it).
    stored = space.chats.new("Assistant", "remote things")
    stored.append("user", payloads(listener, "stored-user"))
    stored.append("assistant", payloads(listener, "stored-assistant"))
    space.chats.save(stored)
    space.remember_chat("Assistant", stored.id)

    page = browser.new_page()
    answered: list[str] = []  # requests the browser sent and got an answer to (one it refused fires "request" too)
    page.on("response", lambda r: answered.append(r.url))
    refused: list[str] = []  # what the policy refused: only the messages' addresses may be here
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(app_url)
    page.locator("#chat-input textarea").wait_for()
    assert wait_until(lambda: page.locator("#chatbot [data-testid=user]").count() == 1, timeout=30)
    assert settled(listener) == [], f"the page fetched {listener.seen}"
    assert wait_until(lambda: page.locator("#chatbot a.webui-elsewhere").count() >= 2, timeout=10)

    # Typed by the user, and a reply that starts with the payload (as a steered model's would).
    page.locator("#chat-prefix textarea").fill(payloads(listener, "assistant-reply"))
    page.locator("#chat-input textarea").fill(payloads(listener, "typed-user"))
    page.locator("#chat-send").click()
    assert wait_until(lambda: "tokens/s" in page.locator("#chat-stats").inner_text(), timeout=90), \
        "the chat did not answer under the page's policy"
    assert page.locator("#chatbot [data-testid=bot]").count() == 2
    shown = page.locator("#chatbot").inner_html()
    assert "assistant-reply-md" in shown and "typed-user-md" in shown  # shown, as links

    page.reload()
    page.locator("#chat-input textarea").wait_for()
    assert wait_until(lambda: page.locator("#chatbot [data-testid=bot]").count() == 2, timeout=30)
    links = page.locator("#chatbot a.webui-elsewhere")
    assert wait_until(lambda: links.count() >= 4, timeout=10)
    assert "pic" in links.first.inner_text()  # the image's description, as the link's text
    page.close()
    assert settled(listener) == [], f"the page fetched {listener.seen}"
    assert refused and all(listener.host in line for line in refused), \
        f"the policy refused something of the page's own: {[r for r in refused if listener.host not in r]}"
    outside = {urlparse(u).hostname for u in answered} - LOOPBACK - {None}
    assert outside == set(), f"the page fetched from {outside}"
