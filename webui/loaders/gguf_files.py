"""GGUF files on disk: which entries of models/ are GGUF models, and what they hold.

An entry is either one `.gguf` file (listed by its file name) or a folder holding
GGUF files: several quantizations of one model, and/or a model split into
`NAME-00001-of-0000N.gguf` parts.  A split model is named by its first part; llama.cpp
finds the other parts itself.  A folder may also hold a vision model's image projector,
named as model repositories name it (`mmproj-*.gguf`, `*mmproj*.gguf`): it is never a
model to pick, it loads with the model (webui/loaders/gguf_vision.py).  Metadata is read by webui/loaders/gguf_header.py, which
maps the file and walks only the header, checking every declared count against the
bytes left: nothing is loaded.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from webui.loaders.base import LoadError
from webui.paths import is_plain_name

SUFFIX = ".gguf"
_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$")


def split_part(path: Path) -> tuple[int, int] | None:
    """(part, count) of a split file's name, or None for a whole file."""
    match = _SPLIT.match(path.name)
    return (int(match["part"]), int(match["count"])) if match else None


def is_projector_name(name: str) -> bool:
    return "mmproj" in name.lower()


def is_gguf_file(path: Path) -> bool:
    """A .gguf file that a user would pick: a whole file or the first part of a split
    (not an image projector)."""
    if path.suffix != SUFFIX or not path.is_file() or not is_plain_name(path.name) or is_projector_name(path.name):
        return False
    part = split_part(path)
    return part is None or part[0] == 1


def parts_of(first: Path) -> list[Path]:
    """Every file of a model: the file itself, or all parts of a split (first part given)."""
    part = split_part(first)
    if part is None:
        return [first]
    stem = _SPLIT.match(first.name)["stem"]
    return [first.with_name(f"{stem}-{i:05d}-of-{part[1]:05d}{SUFFIX}") for i in range(1, part[1] + 1)]


def gguf_files(folder: Path) -> dict[str, Path]:
    """The pickable GGUF files in a folder and its sub-folders one level down (hub
    repositories keep big split models in one folder per quantization), by relative
    path: "m-Q8_0.gguf", "Q4_K_M/m-Q4_K_M-00001-of-00002.gguf"."""
    if not folder.is_dir():
        return {}
    found = {p.name: p for p in sorted(folder.iterdir()) if is_gguf_file(p)}
    for sub in sorted(folder.iterdir()):
        if sub.is_dir() and is_plain_name(sub.name):
            found.update({f"{sub.name}/{p.name}": p for p in sorted(sub.iterdir()) if is_gguf_file(p)})
    return found


def projector_file(entry: Path) -> Path | None:
    """The image projector that loads with a folder's model: the largest `mmproj` GGUF
    in it (repositories that offer several precisions order them by size), or None."""
    if not entry.is_dir():
        return None
    found = [p for p in entry.iterdir() if p.suffix == SUFFIX and is_projector_name(p.name)
             and is_plain_name(p.name) and p.is_file()]
    return max(found, key=lambda p: (p.stat().st_size, p.name)) if found else None


def is_gguf_entry(path: Path) -> bool:
    """A models/ entry the llama.cpp loader reads: a .gguf file, or a folder of them
    without config.json (a folder with both is a Transformers model with extra files)."""
    if path.is_file():
        return is_gguf_file(path)
    return path.is_dir() and not (path / "config.json").is_file() and bool(gguf_files(path))


def total_bytes(first: Path) -> int:
    return sum(p.stat().st_size for p in parts_of(first) if p.exists())


def choose_file(entry: Path, wanted: str = "", room: int | None = None) -> Path:
    """The file to load for an entry.  In a folder: `wanted` if named (it must be listed),
    else the largest file whose parts fit in `room` bytes (bigger = less quantized =
    better), else the smallest."""
    if entry.is_file():
        return entry
    files = gguf_files(entry)
    if not files:
        raise LoadError(f"{entry.name}: no .gguf file in this folder")
    if wanted:
        if wanted not in files:  # looked up in the listing, never joined onto the folder
            raise LoadError(f"unknown GGUF file in {entry.name}: {wanted if wanted.isprintable() else '(invalid)'}")
        return files[wanted]
    by_size = sorted(files.values(), key=total_bytes)
    if room is not None:
        fitting = [p for p in by_size if total_bytes(p) <= room]
        if fitting:
            return fitting[-1]
    return by_size[0] if room is not None else by_size[-1]


@dataclass(frozen=True)
class GGUFInfo:
    """What the Model tab and "Will it fit?" show, read from the header."""

    file: Path
    architecture: str
    name: str
    parameters: int
    file_type: str  # the quantization: Q8_0, Q4_K_M, F16 ...
    context_length: int
    layers: int
    kv_heads: int
    heads: int
    embedding: int
    key_length: int
    value_length: int
    file_bytes: int  # all parts
    chat_template: str | None
    block_bytes: tuple[int, ...] = ()  # tensor bytes of each repeating layer ("blk.N.")
    output_bytes: int = 0  # the output head and final norm: on the GPU only when every layer is

    def describe(self) -> str:
        return (f"{self.architecture}, {self.parameters / 1e6:,.1f}M parameters, {self.file_type}, "
                f"context {self.context_length:,}, {self.file_bytes / (1 << 20):,.1f} MiB")


_CACHE_SIZE = 64  # GGUFInfo is small (a chat template at most KEEP_STRING_CHARS); files rarely exceed this
_cache: OrderedDict[tuple, GGUFInfo] = OrderedDict()
_cache_lock = threading.Lock()


def _quant_sizes() -> tuple[dict[int, tuple[int, int]], type]:
    try:
        from gguf import GGML_QUANT_SIZES, LlamaFileType
    except ImportError as exc:
        raise LoadError("reading GGUF metadata needs the `gguf` package: scripts/install.sh gguf") from exc
    return {int(kind): sizes for kind, sizes in GGML_QUANT_SIZES.items()}, LlamaFileType


def read_info(first: Path) -> GGUFInfo:
    """Metadata of a GGUF model (all parts of a split counted); raises LoadError for a
    file that is not GGUF, is corrupt or is truncated.  Read once per file version: the
    Model tab, "Will it fit?" and the loader all ask, and a pick must not re-walk a
    large header (cached by path, size and modification time of every part)."""
    parts = parts_of(first)
    stamps = []
    for part in parts:
        try:
            stat = part.stat()
        except OSError:
            raise LoadError(f"{first.name}: part {part.name} is missing") from None
        if not part.is_file():
            raise LoadError(f"{first.name}: part {part.name} is missing")
        stamps.append((str(part), stat.st_size, stat.st_mtime_ns))
    key = tuple(stamps)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    info = _read_info(first, parts)
    with _cache_lock:
        _cache[key] = info
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return info


def _read_info(first: Path, parts: list[Path]) -> GGUFInfo:
    from webui.loaders.gguf_header import read_header

    quant_sizes, file_types = _quant_sizes()
    headers = [read_header(part, quant_sizes) for part in parts]
    head = headers[0].values
    blocks: dict[int, int] = {}
    for header in headers:
        for layer, size in header.block_bytes.items():
            blocks[layer] = blocks.get(layer, 0) + size
    arch = head.get("general.architecture")
    arch = arch if isinstance(arch, str) else "unknown"

    def number(key: str, default: int = 0) -> int:
        value = head.get(f"{arch}.{key}", default)
        if isinstance(value, list):  # per-layer values: the first layer's
            value = value[0] if value else default
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            return default
        return int(value) if abs(value) < 1 << 62 else default

    file_type = head.get("general.file_type")
    try:
        quant = file_types(int(file_type)).name.removeprefix("MOSTLY_") if file_type is not None else "unknown"
    except (ValueError, TypeError, OverflowError):
        quant = f"type {file_type}"
    heads = number("attention.head_count", 1) or 1
    embedding = number("embedding_length")
    head_dim = embedding // heads if embedding else 0
    name = head.get("general.name")
    template = head.get("tokenizer.chat_template")
    return GGUFInfo(
        file=first, architecture=arch, name=name if isinstance(name, str) else first.stem,
        parameters=sum(h.parameters for h in headers), file_type=quant,
        context_length=number("context_length", 2048),
        layers=number("block_count"), kv_heads=number("attention.head_count_kv", heads) or heads,
        heads=heads, embedding=embedding,
        key_length=number("attention.key_length", head_dim) or head_dim,
        value_length=number("attention.value_length", head_dim) or head_dim,
        file_bytes=total_bytes(first), chat_template=template if isinstance(template, str) else None,
        block_bytes=tuple(blocks[i] for i in sorted(blocks)), output_bytes=sum(h.output_bytes for h in headers),
    )
