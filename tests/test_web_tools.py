"""Web search and page reading: absent unless the owner turns them on; when on, pages are
fetched only from public addresses (checked after DNS resolution, on every hop), so
nothing on this machine or its network is reached, against listeners on loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from webui.cli import parse_flags
from webui.settings import Settings
from webui.tools.registry import ToolRegistry
from webui.tools.web import WebTools, is_public, page_text, web_tools


class Listener:
    """A loopback HTTP server that records every request it gets."""

    def __init__(self, answer):
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                status, headers, body = answer(self.path)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def page():
    listener = Listener(lambda path: (200, {"content-type": "text/html"}, b"<p>internal secret</p>"))
    yield listener
    listener.close()


@pytest.fixture()
def search(page):
    def answer(path):
        results = [{"title": "Inside &amp; out", "url": f"http://127.0.0.1:{page.port}/admin", "content": "a page"},
                   {"title": "Metadata", "url": "http://169.254.169.254/latest/meta-data/", "content": "cloud"}]
        return 200, {"content-type": "application/json"}, json.dumps({"results": results}).encode()

    listener = Listener(answer)
    yield listener
    listener.close()


def test_web_tools_do_not_exist_until_the_owner_turns_them_on(tmp_path, page):
    assert Settings().web_search is None and web_tools(Settings()) is None
    registry = ToolRegistry(tmp_path, web=web_tools(Settings(user_data_dir=tmp_path)))
    assert [s.name for s in registry.available(None)] == []
    for name, arguments in (("web_search", '{"query": "x"}'), ("read_page", json.dumps({
            "url": f"http://127.0.0.1:{page.port}/"}))):
        refused = registry.call(None, name, arguments)
        assert refused.is_error and "no tool named" in refused.text
    assert page.requests == []  # nothing was fetched
    flags = parse_flags(["--web-search", "http://127.0.0.1:8888/search"])[0]
    assert web_tools(Settings(**flags)).search_url == "http://127.0.0.1:8888/search"
    with pytest.raises(ValueError):
        Settings(web_search="file:///etc/passwd")


def test_when_on_search_works_and_nothing_private_is_fetched(tmp_path, search, page):
    registry = ToolRegistry(tmp_path, web=WebTools(f"http://127.0.0.1:{search.port}/search"))
    assert {s.name for s in registry.available(None)} == {"web_search", "read_page"}
    found = registry.call(None, "web_search", '{"query": "what is inside"}')
    assert not found.is_error
    results = json.loads(found.text)
    assert results[0]["title"] == "Inside & out" and search.requests[0].startswith("/search?q=what+is+inside")
    for url in [results[0]["url"], results[1]["url"], f"http://localhost:{page.port}/",
                f"http://[::1]:{page.port}/", f"http://127.0.0.2:{page.port}/", "http://10.0.0.1/",
                "http://192.168.1.1/", "http://0.0.0.0/", f"http://2130706433:{page.port}/",
                f"http://user:pw@127.0.0.1:{page.port}/", "file:///etc/passwd", "ftp://127.0.0.1/"]:
        outcome = registry.call(None, "read_page", json.dumps({"url": url}))
        assert outcome.is_error, url
    assert page.requests == []  # the page on loopback never saw a request


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("2001:4860:4860::8888", True), ("127.0.0.1", False), ("::1", False), ("10.1.2.3", False),
    ("172.16.0.1", False), ("192.168.0.10", False), ("169.254.169.254", False), ("fe80::1", False),
    ("100.64.0.1", False), ("::ffff:127.0.0.1", False), ("0.0.0.0", False),  # noqa: S104 ("224.0.0.1", False), ("fc00::1", False),
])
def test_which_addresses_count_as_public(address, public):
    assert is_public(address) is public


def test_page_text_keeps_words_and_drops_scripts():
    html = b"<html><head><title>t</title><script>steal()</script></head><body><h1>Hi</h1><p>a &amp; b</p>" \
           b"<style>p{}</style><div>end</div></body></html>"
    assert page_text("text/html; charset=utf-8", html) == "Hi\na & b\nend"
    assert page_text("text/plain", b"plain <b>") == "plain <b>"
