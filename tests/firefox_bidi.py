"""Drive Debian's stock Firefox over WebDriver BiDi, the W3C protocol Firefox speaks
natively, for the few browser tests that must run in Firefox too.

Playwright drives Firefox only through its own patched build (downloaded from its
servers, which this machine cannot reach) or through BiDi commands newer than Firefox
ESR has; the handful of BiDi commands below work with any Firefox since 128.
Key presses go through BiDi's input module: trusted key events, as a person's are.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox")
# WebDriver's key codes for keys that are not characters.
ENTER, SHIFT = "\ue007", "\ue008"
# The remote agent already turns off updates and telemetry; these close the rest of
# Firefox's start-up traffic so the test browser contacts only the app on loopback.
QUIET_PREFS = {
    "app.update.auto": False, "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False, "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False, "browser.newtabpage.enabled": False,
    "extensions.getAddons.cache.enabled": False, "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False, "browser.region.network.url": "", "network.dns.disablePrefetch": True,
}


class BidiError(RuntimeError):
    pass


class Firefox:
    """A headless Firefox with one tab; `evaluate` runs an expression in the page."""

    def __init__(self, timeout: float = 60.0):
        from websockets.sync.client import connect

        self.profile = Path(tempfile.mkdtemp(prefix="webui-firefox-"))
        (self.profile / "user.js").write_text(
            "".join(f'user_pref("{k}", {json.dumps(v)});\n' for k, v in QUIET_PREFS.items()))
        self.process = subprocess.Popen(
            [FIREFOX, "--headless", "--no-remote", "--remote-debugging-port=0", "--profile", str(self.profile)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = self._listening_url(timeout)
        self.ids = itertools.count(1)
        self.socket = connect(f"{url}/session", max_size=None, open_timeout=timeout)
        self.send("session.new", {"capabilities": {}})
        self.context = self.send("browsingContext.getTree", {})["contexts"][0]["context"]

    def _listening_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                raise BidiError(f"Firefox exited with {self.process.returncode} before listening")
            found = re.search(r"WebDriver BiDi listening on (ws://\S+)", line)
            if found:
                return found.group(1)
        raise BidiError("Firefox did not start its WebDriver BiDi listener")

    def send(self, method: str, params: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        command_id = next(self.ids)
        self.socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:  # events may arrive before our answer; they are not needed here
            message = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == command_id:
                if message.get("type") == "error":
                    raise BidiError(f"{method}: {message.get('error')}: {message.get('message')}")
                return message["result"]

    def goto(self, url: str) -> None:
        self.send("browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"})

    def evaluate(self, expression: str) -> Any:
        result = self.send("script.evaluate", {"expression": expression, "target": {"context": self.context},
                                               "awaitPromise": True})
        if result.get("type") == "exception":
            raise BidiError(result["exceptionDetails"].get("text", "script failed"))
        return _plain(result["result"])

    def press(self, *keys: str) -> None:
        """Press `keys` together (the first ones held as modifiers), then release them."""
        actions = [{"type": "keyDown", "value": k} for k in keys] + [{"type": "keyUp", "value": k}
                                                                     for k in reversed(keys)]
        self.send("input.performActions", {"context": self.context,
                                           "actions": [{"type": "key", "id": "keyboard", "actions": actions}]})

    def type(self, text: str) -> None:
        for character in text:
            self.press(character)

    def close(self) -> None:
        # Firefox may already be gone: the process is stopped below either way.
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(BidiError, ConnectionClosed, OSError, TimeoutError):
            self.send("browser.close", {}, timeout=10)
        self.socket.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


def _plain(value: dict[str, Any]) -> Any:
    """A BiDi remote value as a Python value (the kinds these tests read)."""
    kind = value.get("type")
    if kind in ("string", "number", "boolean"):
        return value["value"]
    if kind in ("null", "undefined"):
        return None
    if kind == "array":
        return [_plain(item) for item in value.get("value", [])]
    raise BidiError(f"cannot read a {kind} value")
