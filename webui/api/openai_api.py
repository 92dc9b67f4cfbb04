"""The OpenAI-compatible /v1 API served beside the UI, through the same Runtime and queue.

This module assembles the app: the routers (webui/api/models.py, completions.py,
internal.py), the one error mapping (webui/api/errors.py), the Host/size/key checks
(webui/api/security.py) and the extensions' routes.  Handlers reach the Runtime through
`app.state.runtime` (webui/api/state.py).  Requests are validated by the same
SamplingParams as the UI: OpenAI's fields are mapped onto it, and our extra samplers
(min_p, DRY, XTC, ...) may be sent as extra fields by their Text Generation WebUI names.
"""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse

from webui import quiet_server
from webui.connections import limits_from
from webui.api import anthropic, completions, documents, embeddings, internal, models, ollama
from webui.api.docs_page import docs_html
from webui.api.errors import install_error_handlers
from webui.api.security import UPLOADS, GuardMiddleware, KeyMiddleware
from webui.documents.extract import MAX_FILE_BYTES
from webui.content_policy import DOCS_POLICY, HEADER, ContentPolicy
from webui.runtime import Runtime


def build_api(runtime: Runtime) -> FastAPI:
    settings = runtime.settings
    # FastAPI's docs pages load their scripts from a CDN; /v1/docs is our own page.
    api = FastAPI(title="webui OpenAI-compatible API", version="1", docs_url=None,
                  openapi_url="/v1/openapi.json", redoc_url=None)
    api.state.runtime = runtime
    install_error_handlers(api)

    # Middleware added later wraps the earlier: Host and size checks first, then CORS
    # (so a browser's preflight, which carries no key, is answered), then the keys.
    api.add_middleware(KeyMiddleware, api_key=settings.api_key, admin_key=settings.admin_key,
                       allowed_origins=settings.api_cors_origins)
    if settings.api_cors_origins:
        # An explicit allowlist only; never "*" (docs/SECURITY.md).
        api.add_middleware(CORSMiddleware, allow_origins=list(settings.api_cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type", "x-api-key", "anthropic-version",
                                          "anthropic-beta"])
    # File uploads (POST /v1/files) may be as large as a document may be (webui/documents/extract.py).
    api.add_middleware(GuardMiddleware, loopback_only=settings.is_loopback,
                       large_bodies={UPLOADS: MAX_FILE_BYTES + (64 << 10)})
    # Any page the API answers with (an extension's) loads nothing from elsewhere.
    api.add_middleware(ContentPolicy)

    @api.get("/v1/docs", include_in_schema=False)
    async def docs_page(request: Request):
        return HTMLResponse(docs_html(request.app.openapi()), headers={HEADER: DOCS_POLICY})

    for router in (models.router, completions.router, anthropic.router, embeddings.router, documents.router,
                   internal.router,
                   ollama.router):
        api.include_router(router)
    # Extensions' routes, under /v1/extensions/<name>/, behind the same key checks.
    runtime.extensions.register_api_routes(api)
    return api


class APIServer:
    """uvicorn in a background thread, so the UI and the API share one process and Runtime."""

    def __init__(self, runtime: Runtime, port: int | None = None):
        config = uvicorn.Config(build_api(runtime), host=runtime.settings.host,
                                port=port or runtime.settings.api_port, log_level="warning")
        # No ten wake-ups a second while idle; deadlines and caps on every connection.
        self.server = quiet_server.Server(config, limits_from(runtime.settings))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="api")
        self.url = f"http://{runtime.settings.host}:{config.port}/v1"

    def start(self, timeout: float = 30.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.05)
        if not self.server.started:
            raise RuntimeError("the API server did not start")
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
