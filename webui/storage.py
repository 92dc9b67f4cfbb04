"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

# atomic_write_bytes' temporaries: ".NAME." + mkstemp's 8 random characters + ".tmp".
_TEMPORARY = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder, fsync it, then rename over `path`.

    The rename is atomic on POSIX, so a crash (even SIGKILL) leaves either version
    intact; on any error the temp file is removed and the old file is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # see _TEMPORARY
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # Persist the rename itself.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temporaries(root: Path, older_than: float = 10.0) -> int:
    """Delete the temporaries of writes that never finished (the process was killed
    between writing and renaming) under `root`; returns how many.

    Only files named as atomic_write_bytes names them, and only ones untouched for
    `older_than` seconds, so a write in progress in another thread is never removed.
    """
    removed = 0
    cutoff = time.time() - older_than
    if not root.is_dir():
        return 0
    for path in root.rglob(".*.tmp"):
        try:
            if _TEMPORARY.fullmatch(path.name) and path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:
            continue  # vanished meanwhile, or not ours to remove: leave it
    return removed
