"""The page may load things from its own server only (docs/SECURITY.md, "Privacy").

Any message can hold a remote address that a browser would fetch on sight: a Markdown
image, `<img src>`, an SVG `<image href>`, a CSS `url()`, a `<video src>`, typed by a
user, written by a model steered by injected text, or brought in by an imported chat
or a character card.  Fetching it tells that host the conversation is open, and the
address itself can carry the conversation's text.  Sanitising the HTML cannot catch
every way a page may name an address; a Content-Security-Policy makes the browser
refuse every one of them: resources come from the app's own origin, `data:` and
`blob:`, nothing else.  page.js then shows a refused image as a link.

Gradio 6's page needs more than 'self' for scripts and styles (tried in Chromium with
tests/test_remote_content.py): without 'unsafe-eval' it never renders, without
'unsafe-inline' for scripts its inline scripts are refused, and its components set
styles inline.  So scripts and styles allow those.  That opens no way out: where a
script may connect, or what anything may load, is still 'self' only (connect-src,
img-src...).  Messages never run scripts: Gradio sanitises them (tests/test_hostile_ui.py).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "content-security-policy"

# For the UI (and any other HTML the servers answer with).
PAGE_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
    "style-src 'self' 'unsafe-inline'",  # url() inside a style still obeys img-src / font-src
    "img-src 'self' data: blob:",
    "media-src 'self' data: blob:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "frame-src 'self' blob:",
    "worker-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
])

# /v1/docs (webui/api/docs_page.py) is one page with its style inline and no script.
DOCS_POLICY = "; ".join([
    "default-src 'none'",
    "style-src 'unsafe-inline'",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
])


class ContentPolicy:
    """ASGI middleware: every answer carries `policy` unless it set its own (e.g.
    /v1/docs, stricter).  Every one, not only HTML: a file opened on its own (an SVG,
    say) is a document too, and for anything else the header is ignored."""

    def __init__(self, app: ASGIApp, policy: str = PAGE_POLICY):
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if HEADER not in headers:
                    headers[HEADER] = self.policy
            await send(message)

        await self.app(scope, receive, send_with_policy)
