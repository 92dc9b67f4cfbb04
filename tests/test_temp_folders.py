"""Round 2, N35/N44: the private Gradio cache folder is removed at exit (SIGTERM too) and a
killed process's folder at the next start; the Markdown export extension writes through
the app's private exports.  The app runs as a user starts it (python -m webui)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY, free_port
from webui.ui.exports import CACHE_PREFIX, OWNER_FILE, Exports, remove_stale_caches


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return child.pid


def cache_folder(base: Path, name: str, pid: int | None, mode: int = 0o700) -> Path:
    folder = base / f"{CACHE_PREFIX}{name}"
    folder.mkdir()
    folder.chmod(mode)
    if pid is not None:
        (folder / OWNER_FILE).write_text(str(pid))
    (folder / "upload.bin").write_bytes(b"x" * 100)
    return folder


def test_only_our_own_folders_of_dead_processes_are_removed(tmp_path):
    gone = dead_pid()
    stale = cache_folder(tmp_path, "stale", gone)
    alive = cache_folder(tmp_path, "alive", os.getppid())
    readable = cache_folder(tmp_path, "open", gone, mode=0o755)
    unmarked = cache_folder(tmp_path, "unmarked", None)
    garbage = cache_folder(tmp_path, "garbage", None)
    (garbage / OWNER_FILE).write_text("not a pid")
    linked_target = cache_folder(tmp_path, "target-of-link", None)
    (tmp_path / f"{CACHE_PREFIX}link").symlink_to(linked_target)
    other = tmp_path / "gradio-other"
    other.mkdir(mode=0o700)
    (other / OWNER_FILE).write_text(str(gone))
    assert remove_stale_caches(tmp_path) == 1
    assert not stale.exists()
    assert all(p.exists() for p in (alive, readable, unmarked, garbage, linked_target, other))


def start_webui(models_root: Path, tmp_path: Path, env: dict) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "webui", "--model-dir", str(models_root), "--model", TINY,
         "--user-data-dir", str(tmp_path / "ud"), "--listen-port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=Path(__file__).parent.parent)
    deadline = time.monotonic() + 180  # bounded wait for the start-up line
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        if "running at" in line:
            return server
        if not line and server.poll() is not None:
            break
    server.kill()
    pytest.fail("the app did not start")


def test_each_start_leaves_no_cache_folder_behind(models_root, tmp_path):
    """On main each start made a new /tmp/webui-gradio-* that nothing ever removed."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
    env["TMPDIR"] = str(temp)  # tempfile.gettempdir() in the child

    def ours() -> list[Path]:
        return sorted(temp.glob(CACHE_PREFIX + "*"))

    server = start_webui(models_root, tmp_path, env)
    try:
        assert len(ours()) == 1
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert ours() == []  # removed at exit
    killed = start_webui(models_root, tmp_path, env)
    left = ours()
    killed.kill()  # no atexit here
    killed.wait(timeout=60)
    assert ours() == left and len(left) == 1
    again = start_webui(models_root, tmp_path, env)
    try:
        assert left[0] not in ours() and len(ours()) == 1  # the dead one's folder went at this start
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(timeout=60)
    assert ours() == []


def test_markdown_exports_are_private_pruned_and_go_with_their_chat(models_root, tmp_path):
    from gradio_client import Client

    from tests.conftest import make_settings
    from webui.runtime import build_runtime
    from webui.settings import PROJECT_ROOT
    from webui.ui.app import launch

    settings = make_settings(models_root, tmp_path, extensions=("markdown_export",),
                             extensions_dir=PROJECT_ROOT / "extensions", gradio_auth="ann:ann-pw-1")
    runtime = build_runtime(settings)
    chats = runtime.users.get("ann").chats
    chat = chats.new("Assistant", "Ann's chat")
    chat.append("user", "Hello")
    chats.save(chat)
    app, url = launch(runtime, block=False, port=free_port())
    # The private cache is the test session's: other tests' exports may be there already.
    cache = Path(os.environ["GRADIO_TEMP_DIR"]) / "webui-exports"
    before = set(cache.rglob("*.md"))
    try:
        client = Client(url, auth=("ann", "ann-pw-1"), verbose=False)
        _, path = client.predict(chat.id, api_name="/markdown_export")
        served = Path(path)
        # gradio_client downloads a copy; the server's own file is in the private cache
        written = [p for p in cache.rglob("*.md") if p not in before]
        assert [p.name for p in written] == [served.name] and written[0].read_text() == served.read_text()
        assert oct(written[0].parent.stat().st_mode & 0o777) == "0o700"
        assert oct(written[0].stat().st_mode & 0o777) == "0o600"
        assert Exports(cache.parent).forget("ann", f"chat-{chat.id}.json") == 1  # what deleting the chat does
        assert not written[0].exists()
    finally:
        app.close()
