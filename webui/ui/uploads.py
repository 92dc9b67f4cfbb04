"""Uploads to the UI's server are kept within quotas and pruned (docs/SECURITY.md, "Downloads").

Gradio's `/gradio_api/upload` takes files from any signed-in user, with or without an
event that uses them, and keeps them in its cache for good: one user filled 381 MB in
1.6 s.  Here every upload is counted to the user who sent it, and:

- uploads older than `max_age` are removed (the UI uses an upload at once: a card or
  a conversation is imported as soon as it arrives);
- a user's uploads together stay under `per_user` bytes: a new one first removes that
  user's oldest, and one larger than the quota by itself is refused (413);
- everyone's together stay under `total` bytes and leave `free_floor` bytes free on
  the disk: past either, an upload is refused (507) rather than taking another user's
  files or the disk.

What an upload will take is reserved from its declared length before a byte is read
(the body is capped by GuardMiddleware, webui/api/security.py, so a body without a
length counts as that cap), so parallel uploads cannot slip past a quota together.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

UPLOAD_PATH = "/gradio_api/upload"
MAX_AGE = 3600.0
PER_USER = 200 << 20
TOTAL = 2 << 30
FREE_FLOOR = 1 << 30


class UploadRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class _Upload:
    user: str
    size: int
    when: float


class UploadLedger:
    """Which user uploaded which file in the cache, and how much each holds."""

    def __init__(self, folder: Path, per_user: int = PER_USER, total: int = TOTAL,
                 max_age: float = MAX_AGE, free_floor: int = FREE_FLOOR):
        self.folder = Path(folder)
        self.per_user, self.total, self.max_age, self.free_floor = per_user, total, max_age, free_floor
        self._files: dict[Path, _Upload] = {}
        self._pending: dict[str, int] = {}  # user -> bytes reserved by uploads under way
        self._lock = threading.Lock()

    def used(self, user: str) -> int:
        with self._lock:
            return sum(u.size for u in self._files.values() if u.user == user) + self._pending.get(user, 0)

    def reserve(self, user: str, size: int) -> None:
        """Room for an upload of `size` bytes by `user`, or UploadRefused."""
        if size > self.per_user:
            raise UploadRefused(413, f"an upload may take at most {self.per_user / 2**20:.0f} MB per user")
        with self._lock:
            self._prune_old()
            mine = sorted((u.when, path) for path, u in self._files.items() if u.user == user)
            used = sum(self._files[p].size for _, p in mine) + self._pending.get(user, 0)
            for _, path in mine:  # the user's own oldest make room first
                if used + size <= self.per_user:
                    break
                used -= self._remove(path)
            if used + size > self.per_user:  # still over: the rest is under way right now
                raise UploadRefused(429, "your uploads under way fill your upload space; wait for them to finish")
            everyone = sum(u.size for u in self._files.values()) + sum(self._pending.values())
            if everyone + size > self.total:
                raise UploadRefused(507, "the server's upload space is full; try again later")
            if _free_bytes(self.folder) - size < self.free_floor:
                raise UploadRefused(507, "the server's disk is nearly full; the upload was refused")
            self._pending[user] = self._pending.get(user, 0) + size

    def release(self, user: str, size: int, paths: list[str]) -> None:
        """The upload ended: drop its reservation, and count the files it left."""
        now = time.time()
        with self._lock:
            left = self._pending.get(user, 0) - size
            self._pending.pop(user) if left <= 0 else self._pending.__setitem__(user, left)
            for name in paths:
                path = Path(name)
                try:
                    if not path.resolve().is_relative_to(self.folder.resolve()):
                        continue
                    bytes_ = path.stat().st_size
                except (OSError, ValueError):
                    continue
                owner = self._files.get(path)
                # The same content twice is one file (Gradio names it by its hash): the first owner keeps it.
                self._files[path] = _Upload(owner.user if owner else user, bytes_, now)

    def prune(self) -> None:
        with self._lock:
            self._prune_old()

    def _prune_old(self) -> None:
        cutoff = time.time() - self.max_age
        for path in [p for p, u in self._files.items() if u.when < cutoff]:
            self._remove(path)

    def _remove(self, path: Path) -> int:
        upload = self._files.pop(path)
        try:
            path.unlink(missing_ok=True)
            if path.parent != self.folder:  # Gradio's folder per upload (named by the content's hash)
                path.parent.rmdir()
        except OSError:
            pass  # not empty (another name for the same content) or gone already
        return upload.size


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 1 << 62  # cannot tell: let the quotas decide


def current_user(scope: Scope) -> str | None:
    """The signed-in user of a request to Gradio's app, as Gradio itself finds it
    (gradio/routes.py, get_current_user): its access-token cookie.  None without auth,
    or for no valid token (Gradio then answers 401 itself)."""
    app = scope.get("app")
    tokens, cookie_id = getattr(app, "tokens", None), getattr(app, "cookie_id", None)
    if not isinstance(tokens, dict) or cookie_id is None:
        return None
    cookies = Request(scope).cookies
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
    user = tokens.get(token)
    return user if isinstance(user, str) else None


class UploadQuota:
    """ASGI middleware: Gradio's upload route within the ledger's quotas."""

    def __init__(self, app: ASGIApp, ledger: UploadLedger, assumed_size: int):
        self.app = app
        self.ledger = ledger
        self.assumed_size = assumed_size  # a body with no Content-Length: the most it may be

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope["path"].endswith(UPLOAD_PATH):
            await self.app(scope, receive, send)
            return
        user = current_user(scope) or ""
        size = _declared_length(scope, self.assumed_size)
        try:
            self.ledger.reserve(user, size)
        except UploadRefused as exc:
            body = json.dumps({"detail": str(exc)}).encode()
            await send({"type": "http.response.start", "status": exc.status,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        status, chunks = 0, []

        async def noting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status == 200 and sum(map(len, chunks)) < 1 << 20:
                chunks.append(message.get("body", b""))
            await send(message)

        paths: list[str] = []
        try:
            await self.app(scope, receive, noting)
        finally:
            if status == 200:
                try:
                    answer = json.loads(b"".join(chunks))
                    paths = [p for p in answer if isinstance(p, str)] if isinstance(answer, list) else []
                except ValueError:
                    log.warning("an upload's answer was not the list of files Gradio sends")
            self.ledger.release(user, size, paths)


def _declared_length(scope: Scope, assumed: int) -> int:
    for key, value in scope["headers"]:
        if key.lower() == b"content-length":
            try:
                return max(0, min(int(value), assumed))
            except ValueError:
                return assumed
    return assumed


_ledgers: dict[tuple, UploadLedger] = {}


def ledger_for(folder: Path, per_user: int, total: int, max_age: float) -> UploadLedger:
    """One ledger per cache folder and limits: a UI rebuilt by the Session tab keeps
    counting the files the one before it took."""
    key = (str(folder), per_user, total, max_age)
    if key not in _ledgers:
        _ledgers[key] = UploadLedger(folder, per_user=per_user, total=total, max_age=max_age)
    return _ledgers[key]
