"""Entry point: flags -> settings -> runtime -> UI."""

from __future__ import annotations

import logging
import os
import signal
import sys

# Privacy first: no analytics, no hub lookups, before gradio/transformers import.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def main(argv: list[str] | None = None) -> int:
    from webui.cli import download_request, parse_flags
    from webui.settings import SettingsError, build_settings

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from transformers.utils import logging as transformers_logging

    from webui.loaders.quiet_logs import quiet_offline_notices

    quiet_offline_notices()  # before anything imports bitsandbytes
    # A "Loading weights" bar per load is noise in a server's log; the Model tab says what loads.
    transformers_logging.disable_progress_bar()
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("train", "perplexity"):  # headless commands (webui/training/cli.py)
        from webui.training.cli import main as run_command

        return run_command(argv)
    flags, settings_path = parse_flags(argv)
    try:
        settings, warnings = build_settings(flags, settings_path)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        settings.auth_pairs()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    download = download_request(argv)
    if download is not None:
        return run_download(download, settings)
    if settings.share and not settings.has_auth:
        print(
            "error: refusing to --share without a password: a share link is public on the internet. "
            "Add --gradio-auth user:password.",
            file=sys.stderr,
        )
        return 2
    if not settings.is_loopback and not settings.has_auth:
        if not settings.listen_without_auth:
            print(
                f"error: refusing to listen on {settings.host} without a password: anyone on "
                "the network could use the app. Add --gradio-auth user:password "
                "(or, on a trusted network only, --listen-without-auth).",
                file=sys.stderr,
            )
            return 2
        print("WARNING: serving beyond loopback with NO authentication.", file=sys.stderr)

    if settings.api and not settings.is_loopback and not settings.api_key:
        print(f"error: refusing to serve the API on {settings.host} without --api-key.", file=sys.stderr)
        return 2

    from webui.runtime import build_runtime
    from webui.ui.app import launch

    # An explicit --preset means "start with this preset", not with the last used values.
    runtime = build_runtime(settings, warnings=warnings, use_remembered="preset" not in flags)
    # SIGTERM (a service manager's stop) takes Ctrl+C's way out: without this Python dies
    # at once and no atexit runs, leaving the private cache folder behind every time.
    signal.signal(signal.SIGTERM, _interrupt)
    if settings.api:
        from webui.api.openai_api import APIServer

        print(f"OpenAI-compatible API at {APIServer(runtime).start()}", flush=True)
    launch(runtime, block=True)
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_download(values: dict, settings) -> int:
    """`webui --download org/name`: fetch into the model folder, print progress, exit."""
    from webui.hub import Downloader, DownloadError, DownloadRequest

    try:
        request = DownloadRequest(allow_pickle=settings.allow_pickle, **values)
        shown = -1

        def progress(p) -> None:
            nonlocal shown
            if int(p.fraction * 100) // 5 != shown:
                shown = int(p.fraction * 100) // 5
                print(f"{p.fraction:6.1%}  {p.done:,} / {p.total:,} bytes  {p.file}", flush=True)

        folder = Downloader(settings.model_dir).download(request, progress)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"downloaded to {folder}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
