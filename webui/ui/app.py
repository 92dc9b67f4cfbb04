"""Compose the tabs into one Gradio app and launch it."""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from webui.api.security import GuardMiddleware
from webui.auth import ClientAddress, LoginGuard
from webui.content_policy import ContentPolicy
from webui.connections import limits_from
from webui.quiet_server import quiet_gradio_servers
from webui.runtime import Runtime
from webui.ui import (
    character_tab,
    chat_tab,
    default_tab,
    extensions_ui,
    inspect_tab,
    model_tab,
    notebook_tab,
    parameters_tab,
    quiet_queue,
    session_tab,
    training_tab,
)
from webui.ui.common import Shared
from webui.ui.exports import private_cache
from webui.ui.guard import guard_app
from webui.ui.uploads import UploadQuota, ledger_for

TITLE = "webui"
STATIC = Path(__file__).parent / "static"
UI_MAX_BODY = 5 << 20  # a 1,000,000-character message in any script, with room to spare
UPLOAD_MAX_BODY = 21 << 20
SESSION_CAPACITY = 200
SERVE_CHECK_SECONDS = 1.0


def build_app(runtime: Runtime) -> gr.Blocks:
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        shared = Shared(params=gr.State(runtime.default_params.model_dump()))
        gr.Button("◐ Theme", size="sm", elem_id="theme-toggle")  # page.js: dark/light, remembered
        for note in runtime.warnings:
            gr.Markdown(f"⚠️ {note}")
        with gr.Tab("Chat", id="chat"):
            chat_tab.render(runtime, shared)
            extensions_ui.render_blocks(runtime)
        with gr.Tab("Character", id="character"):
            character_tab.render(runtime, shared)
        with gr.Tab("Default", id="default"):
            default_tab.render(runtime, shared)
        with gr.Tab("Notebook", id="notebook"):
            notebook_tab.render(runtime, shared)
        with gr.Tab("Parameters", id="parameters") as parameters:
            parameters_tab.render(runtime, shared, parameters)
        with gr.Tab("Model", id="model") as model_page:
            model_tab.render(runtime, shared, model_page)
        with gr.Tab("Training", id="training"):
            training_tab.render(runtime, shared)
        with gr.Tab("Inspect", id="inspect") as inspect_page:
            inspect_tab.render(runtime, shared, inspect_page)
        extensions_ui.render_tabs(runtime)
        with gr.Tab("Session", id="session"):
            session_tab.render(runtime, shared)
        for wire in shared.later:
            wire()
        app.load(*page_load(shared), api_name="page_load", show_progress="hidden")
    # Every event: who may call it, what it may be given, how it fails (webui/ui/guard.py).
    guard_app(app, runtime.users.owner)
    app.queue(max_size=runtime.settings.max_queue, default_concurrency_limit=1)
    quiet_when_idle(app)
    return app


def page_load(shared: Shared):
    """One load event for every tab: (fn, outputs).  Two tabs may set the same
    component (the character picker); their updates are merged in order."""
    outputs = list({id(c): c for _, outs in shared.on_load for c in outs}.values())

    def load(request: gr.Request) -> dict:
        values: dict = {}
        for fn, _ in shared.on_load:
            for component, value in fn(request).items():
                old = values.get(component)
                both = isinstance(old, dict) and isinstance(value, dict)
                values[component] = {**old, **value} if both else value
        return values

    return load, None, outputs


def quiet_when_idle(app: gr.Blocks) -> None:
    """An idle server must not wake for Gradio's queue: it waits for events instead of
    polling for them (webui/ui/quiet_queue.py)."""
    quiet_queue.install(getattr(app, "_queue", None))


def launch(runtime: Runtime, *, block: bool = True, port: int | None = None) -> tuple[gr.Blocks, str]:
    """Start serving; returns the app and its local URL (block=False for tests)."""
    app, local_url = start_ui(runtime, port)
    if block:
        serve(runtime, app, port)
    return app, local_url


def serve(runtime: Runtime, app: gr.Blocks, port: int | None) -> None:
    """Block while the UI runs; rebuild it when the Session tab asks for other extensions."""
    try:
        while app.is_running:
            # Waits for the Session tab to ask (Ctrl+C interrupts the wait); once a second
            # it looks whether the app was closed some other way.
            names = runtime.ui_restart.take(timeout=SERVE_CHECK_SECONDS)
            if names is not None:
                time.sleep(1.0)  # let the Session tab's answer reach the browser first
                app, _ = restart_ui(runtime, app, port, names)
    except KeyboardInterrupt:
        print("Closing webui.", flush=True)
    finally:
        app.close()


def restart_ui(runtime: Runtime, app: gr.Blocks, port: int | None, names: tuple[str, ...]) -> tuple[gr.Blocks, str]:
    """Close the UI, load `names` as the extensions, and serve a freshly built UI.

    The process, the loaded model, the API and the generation queue carry on.
    """
    app.close()
    runtime.reload_extensions(names)
    return start_ui(runtime, port)


def start_ui(runtime: Runtime, port: int | None = None) -> tuple[gr.Blocks, str]:
    settings = runtime.settings
    cache = private_cache()  # before any component exists: each reads the cache folder when made
    uploads = ledger_for(cache, settings.upload_quota_mb << 20, settings.upload_total_mb << 20,
                         float(settings.upload_max_age))
    app = build_app(runtime)
    pairs = settings.auth_pairs()
    auth = LoginGuard(pairs).check if pairs else None
    # A server that does not tick ten times a second, with deadlines and caps on every
    # connection (webui/quiet_server.py, webui/connections.py).
    with quiet_gradio_servers(limits_from(settings)):
        _, local_url, _ = app.launch(
            server_name=settings.host,
            server_port=port or settings.listen_port,
            auth=auth,
            ssl_keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
            ssl_certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            prevent_thread_lock=True,
            share=settings.share,
            css=page_css(runtime),
            js=page_js(runtime),
            ssr_mode=False,
            quiet=True,
            # Model weights and user data are never served as files.
            blocked_paths=[str(settings.model_dir), str(settings.user_data_dir)],
            footer_links=["api", "settings"],
            # Uploads (cards, conversations) are refused above this before they reach disk.
            max_file_size="20mb",
            # The same DNS-rebinding guard as the API: on loopback, only loopback Host names
            # (a share link's tunnel arrives with its own public name, behind the password).
            # Request bodies are capped as on the API: a message of a million characters
            # fits, uploads get their 20 MB (plus the multipart wrapping).
            app_kwargs={"middleware": [
                Middleware(GuardMiddleware, loopback_only=settings.is_loopback and not settings.share,
                           max_body=UI_MAX_BODY, large_bodies={"/gradio_api/upload": UPLOAD_MAX_BODY}),
                Middleware(ClientAddress),  # failed logins are counted per client address
                # Uploads counted per user, within quotas, pruned (webui/ui/uploads.py).
                Middleware(UploadQuota, ledger=uploads, assumed_size=UPLOAD_MAX_BODY),
                # The page loads nothing from elsewhere, whatever a message names (webui/content_policy.py).
                Middleware(ContentPolicy),
            ]},
            # Gradio keeps, per browser session, the last value of every input it was sent;
            # fewer sessions bound that memory (an evicted tab keeps working, only its open
            # conversation is forgotten until it is picked again).
            state_session_capacity=SESSION_CAPACITY,
        )
    print(f"webui is running at {local_url}", flush=True)
    if settings.share:
        print(share_note(app.share_url, local_url), flush=True)
    return app, local_url


# The page's own styles and scripts, in this order (each script a function run once at load).
PAGE_CSS = ("page.css", "chat_marks.css")
PAGE_JS = ("page.js", "chat_marks.js")


def page_css(runtime: Runtime) -> str:
    own = [(STATIC / name).read_text(encoding="utf-8") for name in PAGE_CSS]
    return "\n".join(filter(None, [*own, runtime.extensions.css()]))


def page_js(runtime: Runtime) -> str:
    """The page's own scripts, then the extensions' (each function runs once at load)."""
    scripts = [*((STATIC / name).read_text(encoding="utf-8").strip() for name in PAGE_JS), runtime.extensions.js()]
    calls = "\n".join(f"try {{ ({script})(); }} catch (e) {{ console.error(e); }}" for script in scripts if script)
    return "() => {\n" + calls + "\n}"


def share_note(share_url: str | None, local_url: str) -> str:
    if share_url:
        return f"Shared publicly at {share_url} (password required)."
    return (f"--share: no share link could be made (it needs internet access to Gradio's tunnel "
            f"servers). The app is still served at {local_url}.")
