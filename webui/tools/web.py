"""Web search and page reading as chat tools, off unless the owner turns them on with
--web-search URL (a SearXNG-compatible search endpoint: `URL?q=...&format=json`, such
as a self-hosted SearXNG).  While off, these tools do not exist and nothing here
opens a connection: the app's privacy promise stays true.

`web_search` asks the owner's search endpoint (trusted: the owner named it, and it may
well run on this machine).  `read_page` fetches any page a model names, so it is the
door to server-side request forgery: every hop (redirects included) is resolved first,
and refused unless every address the name resolves to is public (not loopback,
private, link-local such as cloud metadata, shared, reserved or multicast); the
connection then goes to the address that was checked (so a second DNS answer cannot
swap it), with the name kept for the Host header and TLS.  Pages are capped in size
and time, and only text comes back.
"""

from __future__ import annotations

import html
import ipaddress
import json
import socket
import threading
import time
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import httpx

from webui.tools.base import ToolFailure, ToolOutcome, ToolSpec, clip

MAX_PAGE_BYTES = 2 * 1024 * 1024
MAX_REDIRECTS = 3
FETCH_TIMEOUT = 15.0
MAX_RESULTS = 5
USER_AGENT = "webui-tools/1 (+read_page)"

SEARCH = ToolSpec("web_search", "Search the web. Returns titles, addresses and snippets of the top results.",
                  json.dumps({"type": "object", "properties": {"query": {"type": "string", "maxLength": 300}},
                              "required": ["query"]}), "web (--web-search)")
READ = ToolSpec("read_page", "Read a web page: its text, without markup.",
                json.dumps({"type": "object", "properties": {"url": {"type": "string", "maxLength": 2000}},
                            "required": ["url"]}), "web (--web-search)")


class Refused(ToolFailure):
    code = "address_refused"


def is_public(address: str) -> bool:
    """Whether an IP address is one the public internet routes (not ours, not a LAN's)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def public_address(host: str, port: int) -> str:
    """The address to connect to for `host`: every address it resolves to must be public."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"cannot resolve {host!r}: {exc}") from None
    addresses = [answer[4][0] for answer in answers]
    if not addresses:
        raise Refused(f"{host!r} has no address")
    private = [a for a in addresses if not is_public(a)]
    if private:
        raise Refused(f"{host!r} resolves to a private or local address ({private[0]}); read_page only reads "
                      "public pages")
    return addresses[0]


def checked_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, pinned address) of a URL read_page may fetch."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise Refused("read_page reads http and https addresses only")
    if parts.username or parts.password:
        raise Refused("addresses with a user name or password are refused")
    host = parts.hostname
    if not host:
        raise Refused("the address has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Refused("the address's port is not a number") from None
    return parts.scheme, host, port, public_address(host, port)


def fetch_public(url: str, timeout: float = FETCH_TIMEOUT, max_bytes: int = MAX_PAGE_BYTES,
                 cancel: threading.Event | None = None) -> tuple[str, str, bytes]:
    """(final URL, content type, body) of a public page, redirects followed by hand (each hop checked)."""
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port, address = checked_url(url)
        parts = urlsplit(url)
        target = f"{scheme}://{_bracket(address)}:{port}{parts.path or '/'}" + (f"?{parts.query}" if parts.query
                                                                                 else "")
        headers = {"host": host if port in (80, 443) else f"{host}:{port}", "user-agent": USER_AGENT}
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        left = max(0.1, deadline - time.monotonic())
        with httpx.Client(timeout=left, follow_redirects=False, trust_env=False) as client, \
                client.stream("GET", target, headers=headers, extensions=extensions) as response:
            if response.is_redirect:
                url = urljoin(url, response.headers.get("location", ""))
                continue
            if response.status_code >= 400:
                raise ToolFailure(f"the page answered HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise ToolFailure(f"the page is larger than {max_bytes:,} bytes")
                if time.monotonic() > deadline or (cancel is not None and cancel.is_set()):
                    raise ToolFailure("the page took too long")
            return url, response.headers.get("content-type", ""), bytes(body)
    raise ToolFailure(f"more than {MAX_REDIRECTS} redirects")


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


class _Text(HTMLParser):
    """A page's readable text: no scripts, styles or markup."""

    SKIP = {"script", "style", "noscript", "template", "svg", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self.SKIP:
            self._skipping += 1
        elif tag in ("p", "br", "div", "li", "h1", "h2", "h3", "h4", "tr"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def page_text(content_type: str, body: bytes) -> str:
    text = body.decode("utf-8", errors="replace")
    if "html" not in content_type and not text.lstrip().lower().startswith(("<!doctype html", "<html")):
        return text
    parser = _Text()
    parser.feed(text)
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


class WebTools:
    """The two web tools, over the owner's search endpoint."""

    def __init__(self, search_url: str):
        self.search_url = search_url

    def specs(self) -> list[ToolSpec]:
        return [SEARCH, READ]

    def call(self, name: str, values: dict[str, Any], timeout: float,
             cancel: threading.Event | None = None) -> ToolOutcome:
        started = time.perf_counter()
        try:
            if name == "web_search":
                text = self.search(str(values.get("query", ""))[:300], timeout)
            else:
                url, kind, body = fetch_public(str(values.get("url", ""))[:2000], min(timeout, FETCH_TIMEOUT),
                                               cancel=cancel)
                text = f"{url}\n\n{page_text(kind, body)}"
        except ToolFailure as exc:
            return ToolOutcome(f"{name}: {exc.message}", True, time.perf_counter() - started)
        except httpx.HTTPError as exc:
            return ToolOutcome(f"{name}: {type(exc).__name__}: {exc}", True, time.perf_counter() - started)
        return ToolOutcome(clip(text), False, time.perf_counter() - started)

    def search(self, query: str, timeout: float) -> str:
        if not query.strip():
            raise ToolFailure("give a query")
        separator = "&" if "?" in self.search_url else "?"
        url = f"{self.search_url}{separator}{urlencode({'q': query, 'format': 'json'})}"
        with httpx.Client(timeout=min(timeout, FETCH_TIMEOUT), trust_env=False) as client:
            response = client.get(url, headers={"user-agent": USER_AGENT})
        if response.status_code >= 400 or len(response.content) > MAX_PAGE_BYTES:
            raise ToolFailure(f"the search answered HTTP {response.status_code}")
        try:
            results = response.json().get("results", [])
        except (ValueError, AttributeError):
            raise ToolFailure("the search did not answer in SearXNG's JSON") from None
        found = [{"title": html.unescape(str(r.get("title", "")))[:200], "url": str(r.get("url", ""))[:2000],
                  "snippet": html.unescape(str(r.get("content", "")))[:500]}
                 for r in results[:MAX_RESULTS] if isinstance(r, dict)]
        return json.dumps(found, ensure_ascii=False) if found else "no results"


def web_tools(settings) -> WebTools | None:
    """The web tools when the owner turned them on (--web-search URL), else None."""
    url = getattr(settings, "web_search", None)
    return WebTools(url) if url else None
