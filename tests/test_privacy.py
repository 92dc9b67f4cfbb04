"""Nothing leaves the machine: the server process (audit hook on connects and lookups)
and the page (the browser's request log) contact loopback only, while a real browser
loads the app and chats."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from tests.conftest import TINY, free_port
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, LOOPBACK

ALLOWED = LOOPBACK | {"::ffff:127.0.0.1"}


def test_server_and_page_contact_only_loopback(models_root, tmp_path):
    from playwright.sync_api import sync_playwright

    log = tmp_path / "sockets.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE")}
    server = subprocess.Popen(  # the app as a user starts it: __main__ sets the privacy switches itself
        [sys.executable, str(Path(__file__).with_name("audited_server.py")), str(log),
         "--model-dir", str(models_root), "--model", TINY, "--user-data-dir", str(tmp_path / "ud"),
         "--listen-port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        cwd=Path(__file__).parent.parent,
    )
    try:
        url = None
        deadline = time.monotonic() + 120  # bounded wait for the start-up line
        while time.monotonic() < deadline and url is None:
            line = server.stdout.readline()
            if "running at" in line:
                url = line.split("running at", 1)[1].strip()
            elif not line and server.poll() is not None:
                break
        assert url, "the app did not start"
        page_hosts: set[str] = set()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.on("request", lambda r: page_hosts.add(urlparse(r.url).hostname or r.url.split(":")[0]))
            page.goto(url)
            page.locator("#chat-input textarea").fill("Hello there")
            page.locator("#chat-send").click()
            page.wait_for_function(
                "document.querySelector('#chat-stats') && document.querySelector('#chat-stats').innerText.includes('tokens/s')",
                timeout=90_000,
            )
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    events = log.read_text().split("\n")
    contacted = {e.split(" ", 1)[1] for e in events if e}
    assert any(e.startswith("connect") for e in events), "premise: the hook saw the server's own connects"
    assert {h for h in contacted if not h.startswith("unix:")} <= ALLOWED, contacted
    assert page_hosts <= LOOPBACK | {"data", "blob"}, page_hosts


def test_the_audit_hook_sees_outbound_attempts(tmp_path):
    """The check above can fail: a lookup of an outside name is logged (and fails here)."""
    log = tmp_path / "sockets.log"
    code = (
        "import socket, sys; sys.path.insert(0, 'tests'); from audited_server import install_hook; "
        f"install_hook({str(log)!r})\n"
        "try:\n    socket.getaddrinfo('example.invalid', 80)\nexcept OSError:\n    pass\n"
        "s = socket.socket()\ns.settimeout(0.2)\n"
        "try:\n    s.connect(('192.0.2.1', 9))\nexcept OSError:\n    pass\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent, timeout=60)
    logged = log.read_text().splitlines()
    assert "lookup example.invalid" in logged and "connect 192.0.2.1" in logged
