"""Download a model from the Hugging Face Hub into models/, only when the user asks.

This is the one part of the app that contacts the network.  webui/__main__.py starts
with HF_HUB_OFFLINE=1, and huggingface_hub reads that variable once, at import, into
`huggingface_hub.constants.HF_HUB_OFFLINE`; its HTTP hook refuses every request while
that constant is true.  A download therefore lifts the constant for its own duration
only (the Downloader's lock keeps downloads one at a time, so nothing restores it
early) and puts it back afterwards, whatever happens.  Model loading always passes
local_files_only=True, so nothing else reaches out while a download runs.

Names are checked before any request: `org/name`, a revision and glob patterns from a
strict alphabet, and every file the server lists must land inside the target folder.
Files arrive over huggingface_hub's HTTP session (its endpoint, token and offline
rules); a partial file in the target's .download/ folder is continued with an HTTP
Range request by the next run.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from webui.errors import AppError
from webui.paths import NameRefused, new_entry

# GitHub-like: each part starts with a letter or digit; at most 96 characters each.
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}")
REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,127}")
PATTERN = re.compile(r"[A-Za-z0-9_.*?\-\[\]/]{1,128}")
PICKLE_GLOBS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
# What a Transformers folder needs; weights as safetensors.  Other formats (TF, Flax,
# ONNX, GGUF) and remote code are left behind unless the user names them.
DEFAULT_PATTERNS = (
    "*.safetensors", "*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken", "tokenizer*",
)
MAX_FILES = 5000


class DownloadError(AppError, RuntimeError):
    """A download that was refused or failed, with a message fit to show the user."""

    code = "download_failed"


@dataclass(frozen=True)
class DownloadRequest:
    repo_id: str
    revision: str = "main"
    patterns: tuple[str, ...] = ()
    allow_pickle: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.repo_id, str) or not REPO_ID.fullmatch(self.repo_id) or ".." in self.repo_id:
            raise DownloadError("give the model as org/name (letters, digits, '.', '-', '_')")
        if not isinstance(self.revision, str) or not REVISION.fullmatch(self.revision) or ".." in self.revision:
            raise DownloadError("invalid revision: a branch, tag or commit name")
        for pattern in self.patterns:
            if not isinstance(pattern, str) or not PATTERN.fullmatch(pattern) or ".." in pattern or pattern[0] == "/":
                raise DownloadError(f"invalid file pattern: {pattern!r}")

    @property
    def folder_name(self) -> str:
        """org/name -> org_name, the Text Generation WebUI layout."""
        return self.repo_id.replace("/", "_")


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int


def choose_files(files: Sequence[RemoteFile], request: DownloadRequest) -> list[RemoteFile]:
    """The files to fetch: the user's patterns (or the defaults), safetensors preferred.

    Pickle weights come only when the repository has no safetensors and the user
    allowed pickle on the command line; a listed name that could leave the target
    folder is refused outright.
    """
    for remote in files:
        if not safe_relative(remote.name):
            raise DownloadError(f"the server listed an unsafe file name: {remote.name!r}")
    patterns = request.patterns or DEFAULT_PATTERNS
    has_safetensors = any(f.name.endswith(".safetensors") for f in files)
    pickles_wanted = request.allow_pickle and not has_safetensors

    def wanted(name: str) -> bool:
        is_pickle = any(fnmatch.fnmatch(name, g) for g in PICKLE_GLOBS)
        if is_pickle:
            return pickles_wanted and (not request.patterns or any(fnmatch.fnmatch(name, p) for p in patterns))
        return any(fnmatch.fnmatch(name, p) for p in patterns)

    has_pickles = any(fnmatch.fnmatch(f.name, g) for f in files for g in PICKLE_GLOBS)
    if not request.patterns and not has_safetensors and has_pickles and not pickles_wanted:
        # Without weights the folder would be useless; say why instead.
        raise DownloadError(f"{request.repo_id} has no safetensors weights; its pickle weights can run code "
                            "when loaded and need --allow-pickle")
    ggufs = gguf_choices(files)
    if not request.patterns and not has_safetensors and ggufs:
        # A GGUF repository holds one file per quantization, often tens of GiB in all:
        # fetch only the one the user names.
        listed = ", ".join(f"{f.name} ({f.size / (1 << 30):.2f} GiB)" for f in ggufs[:20])
        raise DownloadError(f"{request.repo_id} holds GGUF files; name the one to download in files: {listed}")
    chosen = [f for f in files if wanted(f.name)]
    # A split GGUF named by its first part comes with all its parts.
    firsts = {_split_stem(f.name) for f in chosen if _split_stem(f.name)}
    chosen += [f for f in files if f not in chosen and _split_stem(f.name) in firsts]
    if not chosen:
        raise DownloadError(f"no files to download in {request.repo_id}")
    return chosen


_GGUF_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$")


def _split_stem(name: str) -> str | None:
    """'dir/m-Q4_K_M-00001-of-00003.gguf' -> 'dir/m-Q4_K_M-of-00003' (one key per split model)."""
    match = _GGUF_SPLIT.match(name)
    return f"{match['stem']}-of-{match['count']}" if match else None


def gguf_choices(files: Sequence[RemoteFile]) -> list[RemoteFile]:
    """A repository's GGUF models: whole files, and each split model as its first part
    with the size of all its parts."""
    totals: dict[str, int] = {}
    for f in files:
        stem = _split_stem(f.name)
        if stem:
            totals[stem] = totals.get(stem, 0) + f.size
    choices = []
    for f in files:
        if not f.name.endswith(".gguf"):
            continue
        match = _GGUF_SPLIT.match(f.name)
        if match is None:
            choices.append(f)
        elif int(match["part"]) == 1:
            choices.append(RemoteFile(f.name, totals[_split_stem(f.name)]))
    return choices


def safe_relative(name: object) -> bool:
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        return False
    # Split by hand: PurePosixPath would quietly drop "." and "" parts.
    return all(part not in ("", ".", "..") for part in name.split("/"))


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    file: str

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


class Downloader:
    """Downloads into `model_dir`, one at a time (see the module docstring)."""

    def __init__(self, model_dir: Path, endpoint: str | None = None):
        self.model_dir = model_dir
        self.endpoint = endpoint
        self._lock = threading.Lock()

    def list_gguf(self, request: DownloadRequest) -> list[RemoteFile]:
        """The repository's GGUF models with their sizes (a split model: its first part,
        all parts' bytes), for the user to pick one."""
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError

        token = os.environ.get("HF_TOKEN") or False
        with self._lock, _hub_online():
            try:
                info = HfApi(endpoint=self.endpoint, token=token).model_info(
                    request.repo_id, revision=request.revision, files_metadata=True)
            except HfHubHTTPError as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                raise DownloadError(_http_message(request, status)) from exc
            except Exception as exc:  # connection refused, DNS, TLS, timeouts: a message, not a crash
                raise DownloadError(f"cannot reach the hub: {exc.__class__.__name__}: {exc}") from exc
        files = [RemoteFile(s.rfilename, int(s.size or 0)) for s in (info.siblings or [])[:MAX_FILES]]
        return [f for f in gguf_choices(files) if safe_relative(f.name)]

    def download(
        self, request: DownloadRequest, on_progress: Callable[[Progress], None] | None = None
    ) -> Path:
        """Fetch the chosen files into models/org_name; returns that folder.

        Safe to repeat: finished files are skipped and a partial one is resumed.
        """
        from huggingface_hub import HfApi, hf_hub_url
        from huggingface_hub.errors import HfHubHTTPError

        try:
            target = new_entry(self.model_dir, request.folder_name, "", "model folder")
        except NameRefused as exc:
            raise DownloadError(str(exc)) from exc
        report = on_progress or (lambda _p: None)
        # The token comes from the environment only, never from a request.
        token = os.environ.get("HF_TOKEN") or False
        if not self._lock.acquire(blocking=False):
            raise DownloadError("another download is running; try again when it ends")
        try:
            with _hub_online():
                try:
                    info = HfApi(endpoint=self.endpoint, token=token).model_info(
                        request.repo_id, revision=request.revision, files_metadata=True
                    )
                except HfHubHTTPError as exc:
                    status = getattr(getattr(exc, "response", None), "status_code", None)
                    raise DownloadError(_http_message(request, status)) from exc
                except Exception as exc:  # connection refused, DNS, TLS, timeouts: a message, not a crash
                    raise DownloadError(f"cannot reach the hub: {exc.__class__.__name__}: {exc}") from exc
                siblings = info.siblings or []
                if len(siblings) > MAX_FILES:
                    raise DownloadError(f"{request.repo_id} lists more than {MAX_FILES} files")
                files = choose_files([RemoteFile(s.rfilename, int(s.size or 0)) for s in siblings], request)
                total = sum(f.size for f in files)
                done = 0
                target.mkdir(parents=True, exist_ok=True)
                for remote in files:
                    url = hf_hub_url(request.repo_id, remote.name, revision=info.sha or request.revision,
                                     endpoint=self.endpoint)
                    _fetch(url, target, remote.name, token,
                           lambda n, d=done, name=remote.name: report(Progress(d + n, total, name)))
                    done += remote.size
                    report(Progress(done, total, remote.name))
        finally:
            self._lock.release()
        return target


def _http_message(request: DownloadRequest, status: int | None) -> str:
    if status in (401, 403):
        return f"{request.repo_id} needs access: accept its licence on the hub and set HF_TOKEN"
    if status == 404:
        return f"{request.repo_id} (revision {request.revision}) was not found on the hub"
    return f"the hub answered HTTP {status}" if status else "the hub could not be reached"


@contextmanager
def _hub_online() -> Iterator[None]:
    from huggingface_hub import constants

    was = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = was


PARTIAL_DIR = ".download"  # inside the model folder; the loader ignores it
CHUNK = 1 << 20


def _fetch(url: str, target: Path, name: str, token: str | bool, report: Callable[[int], None]) -> None:
    """One file into target/name, continuing a partial file left by an earlier run.

    huggingface_hub 2.x writes each attempt to a fresh temporary file, so it resumes
    only within one call; here the partial file keeps a stable name and is continued
    with a Range request, then checked (size, and sha256 for LFS files) and renamed
    into place atomically.
    """
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    destination = target / name
    partial = target / PARTIAL_DIR / f"{name}.part"
    if not (destination.resolve().is_relative_to(target.resolve())
            and partial.resolve().is_relative_to(target.resolve())):
        raise DownloadError(f"unsafe file name: {name!r}")
    try:
        meta = get_hf_file_metadata(url, token=token)
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise DownloadError(f"{name}: the hub answered HTTP {status}") from exc
    except Exception as exc:  # the connection dropped between files
        raise DownloadError(f"{name}: cannot reach the hub ({exc.__class__.__name__}); run it again") from exc
    size, etag = meta.size, (meta.etag or "")
    if destination.is_file() and size is not None and destination.stat().st_size == size:
        report(size)
        return  # finished in an earlier run
    partial.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.exists() else 0
    if size is not None and have > size:
        partial.unlink()
        have = 0
    headers = build_hf_headers(token=token)
    headers["Accept-Encoding"] = "identity"
    if not _same_origin(meta.location, url):
        # The hub sends file bodies from a CDN or storage host: the token is for the hub
        # alone (huggingface_hub drops it there too), so it never leaves with a redirect.
        headers.pop("authorization", None)
        headers.pop("Authorization", None)
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with get_session().stream("GET", meta.location, headers=headers, follow_redirects=True) as response:
            hf_raise_for_status(response)
            mode = "ab" if have and response.status_code == 206 else "wb"
            if mode == "wb":
                have = 0  # the server ignored the Range: start over
            with partial.open(mode) as handle:
                report(have)
                for chunk in response.iter_bytes(CHUNK):
                    if size is not None and have + len(chunk) > size:
                        raise _TooLong  # limits on write equal limits on read: never past the declared size
                    handle.write(chunk)
                    have += len(chunk)
                    report(have)
    except _TooLong:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{name}: the server sent more than the {size:,} bytes it declared; "
                            "the partial file was removed") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise DownloadError(f"{name}: the hub answered HTTP {status}") from exc
    except Exception as exc:  # network errors of any kind: keep the partial file for next time
        raise DownloadError(
            f"{name}: download interrupted at {have:,} bytes ({exc.__class__.__name__}); "
            "run it again to continue") from exc
    if size is not None and have != size:
        raise DownloadError(f"{name}: got {have:,} of {size:,} bytes; run it again to continue")
    if re.fullmatch(r"[0-9a-f]{64}", etag) and _sha256(partial) != etag:
        partial.unlink()
        raise DownloadError(f"{name}: checksum mismatch; the partial file was removed, run it again")
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, destination)


class _TooLong(Exception):
    """A body went past its declared size (caught in _fetch, never escapes)."""


def _same_origin(location: str, url: str) -> bool:
    """Same scheme, host and port: where the hub's own token may be sent."""
    from urllib.parse import urlsplit

    a, b = urlsplit(location), urlsplit(url)
    try:
        return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)
    except ValueError:  # a port that is not a number
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
