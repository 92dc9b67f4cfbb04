"""Command-line flags -> a dict of the values the user actually gave.

Flag names follow Text Generation WebUI where it has one.  Every default is
argparse.SUPPRESS so that a flag left out never hides a value from settings.yaml.
The loader flags are not written here: they come from the loaders' option schemas.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from webui.loaders.catalog import BUILTIN_SCHEMAS
from webui.loaders.options import add_flags

S = argparse.SUPPRESS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="webui",
        description="A browser workbench for open-weights language models.",
        argument_default=S,
        epilog="Headless commands: 'webui train --model NAME --data FILE --lora NAME [--steps N | --epochs N] ...' "
               "trains a LoRA adapter; 'webui perplexity --model NAME --data FILE [--lora NAME ...]' prints "
               "'perplexity: VALUE' last. Each has its own --help (webui train --help).",
    )
    m = p.add_argument_group("model")
    m.add_argument("--model", help="model folder (inside --model-dir) to load at start")
    m.add_argument("--model-dir", type=Path, help="folder holding the models (default: models/)")
    # Every loader option, from the built-in loaders' schemas (webui/loaders/options.py).
    add_flags(m, BUILTIN_SCHEMAS)
    h = p.add_argument_group("download (the only action that contacts the network)")
    h.add_argument("--download", metavar="ORG/NAME", dest="download_repo",
                   help="download a model from the Hugging Face Hub into --model-dir, then exit")
    h.add_argument("--revision", dest="download_revision", help="branch, tag or commit (default main)")
    h.add_argument("--include", dest="download_patterns", action="append", metavar="PATTERN",
                   help="only files matching this glob (repeat for more; default: safetensors + config)")
    d = p.add_argument_group("data")
    d.add_argument("--settings", type=Path, dest="settings_path",
                   help="settings YAML (default: user_data/settings.yaml if present)")
    d.add_argument("--user-data-dir", type=Path, help="folder for everything you create")
    d.add_argument("--preset", help="sampling preset to start with")
    e = p.add_argument_group("extensions")
    e.add_argument("--extensions", nargs="+", metavar="NAME",
                   help="extensions to load, in this order (folders in extensions/ or user_data/extensions/, "
                        "or installed packages)")
    e.add_argument("--extensions-dir", type=Path, help="folder of bundled extensions (default: extensions/)")
    n = p.add_argument_group("server")
    n.add_argument("--listen", action="store_true", help="listen on all interfaces (needs --gradio-auth)")
    n.add_argument("--listen-host", help="address to listen on (default 127.0.0.1)")
    n.add_argument("--listen-port", type=int, help="port (default 7860)")
    n.add_argument("--gradio-auth", help="user:pass[,user2:pass2] required to open the UI")
    n.add_argument("--gradio-auth-path", type=Path, help="file of user:pass entries, one per line")
    n.add_argument("--ssl-keyfile", type=Path, help="TLS private key, to serve HTTPS")
    n.add_argument("--ssl-certfile", type=Path, help="TLS certificate, to serve HTTPS")
    n.add_argument("--listen-without-auth", action="store_true",
                   help="DANGEROUS: serve beyond loopback with no password (trusted networks only)")
    n.add_argument("--share", action="store_true",
                   help="ask Gradio for a public share link (contacts Gradio's servers; needs --gradio-auth)")
    n.add_argument("--max-queue", type=int, help="waiting requests before new ones are refused")
    n.add_argument("--upload-quota-mb", type=int,
                   help="MB of uploads the UI keeps per user; a new one removes that user's oldest (default 200)")
    n.add_argument("--upload-total-mb", type=int,
                   help="MB of uploads kept for all users together; past it uploads are refused (default 2048)")
    n.add_argument("--upload-max-age", type=int, help="seconds an upload is kept (default 3600)")
    n.add_argument("--max-connections-per-client", type=int,
                   help="open connections one client address may hold on each port (default 100)")
    n.add_argument("--header-timeout", type=float,
                   help="seconds a client has to send a request's headers (default 10)")
    n.add_argument("--body-timeout", type=float,
                   help="seconds a request's body may pause before the connection is closed (default 30)")
    n.add_argument("--max-batch", type=int, help="requests decoded together at most (default 8)")
    n.add_argument("--max-batch-per-user", type=int,
                   help="running requests per user or API key (default: --max-batch minus 1, so one place "
                        "is always free for someone else)")
    n.add_argument("--prefix-cache-gib", type=float,
                   help="GiB kept for reusing earlier prompts' KV cache (default 1; 0 = off)")
    n.add_argument("--max-kv-gib", type=float,
                   help="GiB the running batch's KV cache may take (default: from free memory)")
    n.add_argument("--prefill-chunk", type=int,
                   help="tokens of a new prompt read at a time while other requests decode, so their "
                        "streams keep flowing (default 512; 0 = read whole)")
    n.add_argument("--prompt-lookup", type=int,
                   help="tokens drafted from the context for speculative decoding, for requests that do not "
                        "set prompt_lookup_num_tokens (Transformers models; default 0 = only when asked)")
    o = p.add_argument_group("models on demand (several resident at once)")
    o.add_argument("--load-on-demand", action=argparse.BooleanOptionalAction,
                   help="a request (API, Ollama, a chat tab) naming a listed model loads it; default on for a "
                        "local single-user server, off with --listen or several users (then only the owner: the "
                        "admin key, the first user)")
    o.add_argument("--max-resident-gib", type=float,
                   help="GiB the resident models may take together; the least recently used are unloaded to "
                        "make room (default: free memory)")
    o.add_argument("--idle-unload-minutes", type=float,
                   help="unload a resident model nobody used for this many minutes (default: never)")
    a = p.add_argument_group("API")
    a.add_argument("--api", action="store_true", help="serve the OpenAI-compatible API (/v1)")
    a.add_argument("--api-port", type=int, help="API port (default 5000)")
    a.add_argument("--api-key", help="key every API request must send (required beyond loopback)")
    a.add_argument("--admin-key", help="key for the model management endpoints")
    a.add_argument("--api-cors-origin", dest="api_cors_origins", action="append",
                   help="a web origin allowed to call the API (repeat for more); none by default")
    a.add_argument("--allow-image-urls", action="store_true",
                   help="fetch http(s) image URLs that API requests send (outbound connections to public "
                        "addresses only; off: only data: URLs and base64 images)")
    t = p.add_argument_group("tools in the chat (user_data/tools/, user_data/mcp.json; docs/TOOLS.md)")
    t.add_argument("--web-search", metavar="URL",
                   help="turn on the web_search and read_page tools, searching through this SearXNG-compatible "
                        "endpoint (e.g. http://127.0.0.1:8888/search); off by default: no outbound connection")
    r = p.add_argument_group("remote engines (the only other outbound connections, and only when given)")
    r.add_argument("--remote-engine", dest="remote_engine_urls", action="append", metavar="URL",
                   help="an OpenAI-compatible engine's base URL, e.g. http://gpu-box:8000/v1 (repeat for more; "
                        "keys, names and timeouts: remote_engines in settings.yaml, see docs/SCALING.md)")
    return p


def download_request(argv: list[str] | None = None) -> dict[str, Any] | None:
    """The --download flags, or None when no download was asked for."""
    values = vars(parser().parse_args(argv))
    if "download_repo" not in values:
        return None
    return {
        "repo_id": values["download_repo"],
        "revision": values.get("download_revision", "main"),
        "patterns": tuple(values.get("download_patterns", ())),
    }


def parse_flags(argv: list[str] | None = None) -> tuple[dict[str, Any], Path | None]:
    """Returns (settings overrides, explicit settings file or None)."""
    values = vars(parser().parse_args(argv))
    values.pop("download_repo", None), values.pop("download_revision", None), values.pop("download_patterns", None)
    settings_path = values.pop("settings_path", None)
    for key in ("api_cors_origins", "extensions", "remote_engine_urls"):
        if key in values:
            values[key] = tuple(values[key])
    return values, settings_path
