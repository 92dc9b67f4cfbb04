"""Fetching an image URL an API request names, only when the owner allows it
(--allow-image-urls), and never anywhere private.

Server-side request forgery is the danger: a URL that names the machine itself
(127.0.0.1, localhost, [::1]), the LAN (10/8, 192.168/16...), a cloud's metadata service
(169.254.169.254) or a name that resolves to one of those would let any API client read
what only this machine can reach.  So:

- only http and https, on their usual ports or any port of a public address;
- the name is resolved once, every address it resolves to must be public (not private,
  loopback, link-local, multicast, reserved or unspecified), and the connection goes to
  that very address (the Host header and TLS name stay the URL's): a DNS answer that
  changes between the check and the connection (rebinding) cannot move it;
- no redirects are followed (a public URL redirecting to a private one is the classic
  way around such checks): a redirect is refused, naming where it pointed;
- at most MAX_IMAGE_BYTES are read, within FETCH_SECONDS in all.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from urllib.parse import urlsplit

from webui.images import MAX_IMAGE_BYTES, ImageRefused

FETCH_SECONDS = 10.0


def public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local or ip.is_loopback
                                 or ip.is_private or ip.is_unspecified)


def resolve_public(host: str, port: int, param: str | None) -> str:
    """The first address of `host`, when every address it has is public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise ImageRefused(f"the image URL's host {host!r} does not resolve", param=param,
                           code="image_url_refused") from None
    addresses = [info[4][0] for info in infos]
    if not addresses or not all(public_address(a) for a in addresses):
        raise ImageRefused("the image URL points at a private, loopback or link-local address; only public "
                           "addresses are fetched", param=param, code="image_url_refused")
    return addresses[0]


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a fixed address, with the certificate checked for the URL's name."""

    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def fetch_image(url: str, param: str | None = None, allowed: bool = False) -> bytes:
    if not allowed:
        raise ImageRefused("image URLs are not fetched on this server (it makes no outbound connections unless "
                           "its owner starts it with --allow-image-urls); send the image as a data: URL",
                           param=param, code="image_url_refused")
    if len(url) > 4096:
        raise ImageRefused("the image URL is too long", param=param, code="image_url_refused")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise ImageRefused("an image URL must be http(s)://host/path, without credentials", param=param,
                           code="image_url_refused")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ImageRefused("the image URL's port is not a number", param=param, code="image_url_refused") from None
    address = resolve_public(parts.hostname, port, param)
    deadline = time.monotonic() + FETCH_SECONDS
    kind = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    connection = kind(parts.hostname, address, port, timeout=FETCH_SECONDS)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("GET", path, headers={"Accept": "image/*", "User-Agent": "webui-image-fetch"})
        response = connection.getresponse()
        if 300 <= response.status < 400:
            raise ImageRefused(f"the image URL redirects (to {response.getheader('Location', '?')[:200]}); "
                               "redirects are not followed", param=param, code="image_url_refused")
        if response.status != 200:
            raise ImageRefused(f"the image URL answered {response.status}", param=param, code="image_url_refused")
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > MAX_IMAGE_BYTES:
            raise ImageRefused(f"the image at the URL is larger than {MAX_IMAGE_BYTES >> 20} MB", param=param,
                               code="image_too_large")
        chunks, size = [], 0
        while True:
            if time.monotonic() > deadline:
                raise ImageRefused(f"the image URL took longer than {FETCH_SECONDS:.0f} s", param=param,
                                   code="image_url_refused")
            chunk = response.read(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_IMAGE_BYTES:
                raise ImageRefused(f"the image at the URL is larger than {MAX_IMAGE_BYTES >> 20} MB", param=param,
                                   code="image_too_large")
            chunks.append(chunk)
        return b"".join(chunks)
    except (OSError, http.client.HTTPException) as exc:
        raise ImageRefused(f"the image URL could not be fetched ({exc.__class__.__name__})", param=param,
                           code="image_url_refused") from None
    finally:
        connection.close()
