"""GGUF files on disk: which entries of models/ are GGUF models, and what they hold.

An entry is either one `.gguf` file (listed by its file name) or a folder holding
GGUF files: several quantizations of one model, and/or a model split into
`NAME-00001-of-0000N.gguf` parts.  A split model is named by its first part; llama.cpp
finds the other parts itself.  Metadata is read with the `gguf` package, which maps the
file and reads only the header: nothing is loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from webui.loaders.base import LoadError
from webui.paths import is_plain_name

SUFFIX = ".gguf"
_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$")
GGUF_MAGIC = b"GGUF"
_BLOCK = re.compile(r"^blk\.(\d+)\.")


def split_part(path: Path) -> tuple[int, int] | None:
    """(part, count) of a split file's name, or None for a whole file."""
    match = _SPLIT.match(path.name)
    return (int(match["part"]), int(match["count"])) if match else None


def is_gguf_file(path: Path) -> bool:
    """A .gguf file that a user would pick: a whole file or the first part of a split."""
    if path.suffix != SUFFIX or not path.is_file() or not is_plain_name(path.name):
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


def _value(reader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    try:
        return field.contents()
    except (ValueError, IndexError, UnicodeDecodeError):
        return default


def check_header(path: Path) -> None:
    """Refuse a file that is not GGUF before any library parses it."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise LoadError(f"{path.name} cannot be read ({exc.strerror or exc})") from exc
    if magic != GGUF_MAGIC:
        raise LoadError(f"{path.name} is not a GGUF file (it does not start with 'GGUF')")


def read_info(first: Path) -> GGUFInfo:
    """Metadata of a GGUF model (all parts of a split counted); raises LoadError for a
    file that is not GGUF, is corrupt or is truncated."""
    try:
        from gguf import GGUFReader, LlamaFileType
    except ImportError as exc:
        raise LoadError("reading GGUF metadata needs the `gguf` package: scripts/install.sh gguf") from exc
    parameters = 0
    readers = []
    blocks: dict[int, int] = {}
    output = 0
    parts = parts_of(first)
    for part in parts:
        if not part.is_file():
            raise LoadError(f"{first.name}: part {part.name} is missing")
    for part in parts:
        check_header(part)
        try:
            reader = GGUFReader(part)
        except Exception as exc:  # the reader raises anything from ValueError to IndexError on bad bytes
            raise LoadError(f"{part.name} is corrupt or truncated ({exc.__class__.__name__}: {exc})") from exc
        size = part.stat().st_size
        for tensor in reader.tensors:
            end = int(tensor.data_offset) + int(tensor.n_bytes)  # data_offset is absolute
            if end > size:
                raise LoadError(f"{part.name} is truncated ({size:,} bytes; tensor {tensor.name} ends at {end:,})")
            parameters += int(tensor.n_elements)
            layer = _BLOCK.match(tensor.name)
            if layer:
                blocks[int(layer[1])] = blocks.get(int(layer[1]), 0) + int(tensor.n_bytes)
            elif tensor.name.startswith("output"):
                output += int(tensor.n_bytes)
        readers.append(reader)
    head = readers[0]
    arch = str(_value(head, "general.architecture", "unknown"))

    def arch_value(key: str, default: int = 0) -> int:
        value = _value(head, f"{arch}.{key}", default)
        return int(value[0] if isinstance(value, list) and value else value or default)

    file_type = _value(head, "general.file_type")
    try:
        quant = LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_") if file_type is not None else "unknown"
    except ValueError:
        quant = f"type {file_type}"
    heads = arch_value("attention.head_count", 1) or 1
    embedding = arch_value("embedding_length")
    head_dim = embedding // heads if embedding else 0
    return GGUFInfo(
        file=first, architecture=arch, name=str(_value(head, "general.name", first.stem)),
        parameters=parameters, file_type=quant, context_length=arch_value("context_length", 2048),
        layers=arch_value("block_count"), kv_heads=arch_value("attention.head_count_kv", heads) or heads,
        heads=heads, embedding=embedding,
        key_length=arch_value("attention.key_length", head_dim) or head_dim,
        value_length=arch_value("attention.value_length", head_dim) or head_dim,
        file_bytes=total_bytes(first), chat_template=_value(head, "tokenizer.chat_template"),
        block_bytes=tuple(blocks[i] for i in sorted(blocks)), output_bytes=output,
    )
