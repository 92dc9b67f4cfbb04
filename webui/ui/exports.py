"""Files the UI hands out for download (exported conversations and character cards).

They are written straight into Gradio's file cache, which then serves them as they
are (a file outside it would be copied there, and the copy would outlive anything we
delete).  Each user has a folder there, each export a fresh random folder in it;
folders are 0700 and files 0600, so other accounts on the machine can neither list
nor read them.  Exports are removed when the conversation or character they came from
is deleted, and any older than an hour whenever a new one is made
(docs/SECURITY.md, "Downloads").

Exporting the same thing again hands out the file already written (a user clicking
Export on a 38 MB chat eight times wrote 294 MB), and each user keeps at most
MAX_PER_USER exports and MAX_USER_BYTES of them: a new one removes that user's oldest.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

MAX_AGE = 3600.0  # seconds an export stays downloadable
MAX_PER_USER = 16  # exports each user keeps at most (the newest)
MAX_USER_BYTES = 256 << 20  # and bytes, together
CACHE_PREFIX = "webui-gradio-"
OWNER_FILE = "webui.pid"  # in our cache folder: the process that made it
SOURCE_FILE = ".source"  # in an export's folder: what it was made from (see forget)


def private_cache() -> Path:
    """A private folder for Gradio's cache (uploads, and the exports below), unless one
    is configured with GRADIO_TEMP_DIR.  Gradio's default, /tmp/gradio, is listable by
    every account on the machine.  Set before any component is built: each reads it
    once, when it is created.

    The folder is removed when the process exits (SIGTERM included: webui/__main__.py
    turns it into the Ctrl+C path); one left by a killed process is removed at the next
    start (remove_stale_caches).  Before, every start left a new folder forever."""
    configured = os.environ.get("GRADIO_TEMP_DIR")
    if configured:
        return Path(configured)
    remove_stale_caches()
    folder = Path(tempfile.mkdtemp(prefix=CACHE_PREFIX))  # mkdtemp makes it 0700
    fd = os.open(folder / OWNER_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(str(os.getpid()))
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    atexit.register(_remove_own_cache, folder, os.getpid())
    return folder


def _remove_own_cache(folder: Path, pid: int) -> None:
    if os.getpid() == pid:  # never from a forked child that happens to run atexit
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale_caches(base: Path | None = None) -> int:
    """Remove cache folders left by webui processes that are gone; returns how many.

    Only what is provably ours and dead: a real folder (not a link) named CACHE_PREFIX…,
    owned by this account, mode 0700, holding OWNER_FILE (a plain file) with the id of a
    process that no longer exists.  Anything else under the temp folder is left alone."""
    base = Path(base or tempfile.gettempdir())
    removed = 0
    try:
        entries = sorted(base.glob(CACHE_PREFIX + "*"))[:1000]  # bounded: a full /tmp is not our loop
    except OSError:
        return 0
    for entry in entries:
        try:
            info = entry.lstat()
            if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid()
                    or stat.S_IMODE(info.st_mode) != 0o700):
                continue
            fd = os.open(entry / OWNER_FILE, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd) as handle:
                pid = int(handle.read(20).strip())
        except (OSError, ValueError):
            continue
        if pid <= 0 or pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed += 1
    return removed


def _source(export: Path) -> str | None:
    """What an export was made from, when it says (Exports.write's `source`)."""
    try:
        return (export / SOURCE_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class Exports:
    def __init__(self, cache: str | Path, max_age: float = MAX_AGE, max_per_user: int = MAX_PER_USER,
                 max_user_bytes: int = MAX_USER_BYTES):
        self.root = Path(cache) / "webui-exports"
        self.max_age = max_age
        self.max_per_user, self.max_user_bytes = max_per_user, max_user_bytes
        self._digests: dict[Path, str] = {}  # export written here -> its content's digest

    def write(self, user: str | None, name: str, data: bytes | str, source: str | None = None) -> str:
        """Write one export for `user`; returns its path (inside Gradio's cache).  The
        same name and content as an export still kept returns that one, written once.
        `source`: the name of what it was made from when that differs from `name` (an
        extension's Markdown of chat-ID.json), so forget() finds it too."""
        self.prune()
        raw = data.encode("utf-8") if isinstance(data, str) else data
        digest = hashlib.sha256(raw).hexdigest()
        user_folder = self._user_folder(user)
        for path, known in list(self._digests.items()):
            if not path.is_file():  # pruned, or its conversation deleted
                del self._digests[path]
            elif (known == digest and path.name == name and path.parent.parent == user_folder
                  and _source(path.parent) == source):
                os.utime(path.parent)  # handed out again: kept for another max_age
                return str(path)
        folder = Path(tempfile.mkdtemp(dir=user_folder))
        if source:
            (folder / SOURCE_FILE).write_text(source, encoding="utf-8")
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
        self._digests[path] = digest
        self._keep_newest(user_folder, keep=folder)
        return str(path)

    def _keep_newest(self, user_folder: Path, keep: Path) -> None:
        """Remove the user's oldest exports past the count and byte caps (never `keep`)."""
        exports = []
        for export in user_folder.iterdir():
            try:
                size = sum(f.stat().st_size for f in export.iterdir() if f.is_file())
                exports.append((export.stat().st_mtime, export, size))
            except OSError:
                continue
        exports.sort(reverse=True)  # newest first
        count, total = 0, 0
        for _, export, size in exports:
            count, total = count + 1, total + size
            if export != keep and (count > self.max_per_user or total > self.max_user_bytes):
                shutil.rmtree(export, ignore_errors=True)
                count, total = count - 1, total - size

    def forget(self, user: str | None, *names: str) -> int:
        """Remove `user`'s exports with these file names (the thing they came from is
        gone); returns how many."""
        removed = 0
        folder = self._user_folder(user)
        for export in list(folder.iterdir()):
            made_from = _source(export)
            for name in names:
                if (export / name).is_file() or made_from == name:
                    shutil.rmtree(export, ignore_errors=True)
                    removed += 1
                    break
        return removed

    def prune(self) -> None:
        """Remove every user's exports older than max_age."""
        if not self.root.is_dir():
            return
        cutoff = time.time() - self.max_age
        for user in self.root.iterdir():
            for export in user.iterdir() if user.is_dir() else ():
                try:
                    if export.stat().st_mtime < cutoff:
                        shutil.rmtree(export, ignore_errors=True)
                except OSError:
                    continue

    def _user_folder(self, user: str | None) -> Path:
        # A digest, not the name: user names may hold anything a folder name may not.
        key = hashlib.sha256((user or "").encode("utf-8", "surrogatepass")).hexdigest()[:16]
        folder = self.root / key
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for part in (self.root, folder):
            part.chmod(0o700)  # mkdir's mode is filtered by the umask, and may predate us
        return folder
