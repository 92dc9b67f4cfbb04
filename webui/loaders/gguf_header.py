"""A GGUF header reader for hostile files: every declared count and length is checked
against the bytes left in the file before anything is read or allocated.

The `gguf` package's reader builds numpy views per array element and per tensor in a
Python loop; a 151-byte file declaring an array of 2^62 items made it loop forever
(past the end each element is an empty slice, so the offset never advances) and a
1M-token vocabulary or 200k tensors cost 20+ s and 1+ GB per read.  We need a dozen
keys and a few sums over the tensor table, so this walks the header once with
`struct.unpack_from` over a memory map, keeps only small values, and skips the rest
(fixed-size arrays in one step, string arrays by their lengths).

Format (little-endian, versions 2 and 3, which is what llama.cpp reads):
  magic "GGUF", u32 version, u64 tensor_count, u64 kv_count,
  kv_count × (string key, u32 type, value),
  tensor_count × (string name, u32 n_dims, n_dims × u64 dim, u32 ggml type, u64 offset),
  padding to general.alignment (default 32), then the tensor data.
A string is a u64 byte length and its UTF-8 bytes; an array is a u32 item type, a u64
count and the items.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from webui.loaders.base import LoadError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# Bounds far above any real model (a large vocabulary is ~260k tokens, a large MoE
# ~10k tensors, a header ~100 keys) and still cheap to walk; the byte checks below make
# every count bounded by the file's size first.
MAX_KEYS = 100_000
MAX_TENSORS = 1_000_000
MAX_ARRAY_ITEMS = 16_000_000
MAX_ARRAY_DEPTH = 3  # arrays of arrays are legal; deeper nesting is not in any model
MAX_DIMS = 4  # GGML_MAX_DIMS: llama.cpp refuses more
MAX_NAME_BYTES = 64 * 1024  # keys and tensor names (llama.cpp: GGML_MAX_NAME = 64 for tensors)
KEEP_STRING_CHARS = 1 << 20  # longer strings are skipped, not kept (a chat template is ~10 KB)
KEEP_ARRAY_ITEMS = 4096  # per-layer numbers (head counts) are kept; vocabularies are not

_STRING, _ARRAY = 8, 9
# value type -> (struct code, size); 7 is bool
_SCALARS = {0: ("B", 1), 1: ("b", 1), 2: ("H", 2), 3: ("h", 2), 4: ("I", 4), 5: ("i", 4),
            6: ("f", 4), 7: ("?", 1), 10: ("Q", 8), 11: ("q", 8), 12: ("d", 8)}
# The keys whose long strings we keep; everything else keeps short strings only.
_KEEP_LONG = {"tokenizer.chat_template", "general.name", "general.architecture"}
_BLOCK = re.compile(r"^blk\.(\d+)\.")


@dataclass
class Header:
    """What one GGUF file declares: small metadata values and sums over its tensors."""

    version: int
    tensor_count: int
    values: dict[str, object]  # kept keys only (see KEEP_*)
    parameters: int = 0
    block_bytes: dict[int, int] = field(default_factory=dict)
    output_bytes: int = 0
    data_offset: int = 0
    data_end: int = 0  # where the last tensor's data ends (absolute)


class _Cursor:
    """Reads from a byte buffer, refusing any read past `end` with the file's name."""

    def __init__(self, buf, end: int, name: str):
        self.buf, self.end, self.name, self.pos = buf, end, name, 0

    def refuse(self, what: str) -> LoadError:
        return LoadError(f"{self.name} is corrupt or truncated ({what} at byte {self.pos:,})")

    def need(self, count: int, what: str) -> None:
        if count < 0 or self.pos + count > self.end:
            raise self.refuse(f"{what} needs {count:,} bytes, {max(self.end - self.pos, 0):,} left")

    def unpack(self, code: str, size: int, what: str):
        self.need(size, what)
        value = struct.unpack_from("<" + code, self.buf, self.pos)[0]
        self.pos += size
        return value

    def u32(self, what: str) -> int:
        return self.unpack("I", 4, what)

    def u64(self, what: str) -> int:
        return self.unpack("Q", 8, what)

    def string_length(self, what: str, limit: int | None = None) -> int:
        length = self.u64(f"{what} length")
        self.need(length, what)
        if limit is not None and length > limit:
            raise self.refuse(f"{what} of {length:,} bytes (at most {limit:,})")
        return length

    def text(self, length: int, what: str) -> str:
        raw = bytes(self.buf[self.pos:self.pos + length])
        self.pos += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.refuse(f"{what} is not UTF-8") from exc

    def count(self, what: str, limit: int, min_item_bytes: int) -> int:
        """A declared count, refused when even the smallest items could not fit in what is left."""
        count = self.u64(what)
        if count > limit:
            raise self.refuse(f"{what} {count:,} (at most {limit:,})")
        if count * min_item_bytes > self.end - self.pos:
            raise self.refuse(f"{what} {count:,} cannot fit in the {self.end - self.pos:,} bytes left")
        return count


def _value(cur: _Cursor, kind: int, key: str, depth: int = 0) -> object:
    """One value of type `kind`, or None when it is skipped (too long to keep)."""
    if kind in _SCALARS:
        code, size = _SCALARS[kind]
        return cur.unpack(code, size, f"value of {key}")
    if kind == _STRING:
        length = cur.string_length(f"string of {key}")
        if length > (KEEP_STRING_CHARS * 4 if key in _KEEP_LONG else 256):
            cur.pos += length
            return None
        return cur.text(length, f"string of {key}")
    if kind == _ARRAY:
        if depth >= MAX_ARRAY_DEPTH:
            raise cur.refuse(f"arrays nested deeper than {MAX_ARRAY_DEPTH} in {key}")
        item = cur.u32(f"array type of {key}")
        if item in _SCALARS:
            code, size = _SCALARS[item]
            count = cur.count(f"array count of {key}", MAX_ARRAY_ITEMS, size)
            if count > KEEP_ARRAY_ITEMS:
                cur.pos += count * size  # fixed-size items: skipped in one step
                return None
            values = list(struct.unpack_from(f"<{count}{code}", cur.buf, cur.pos))
            cur.pos += count * size
            return values
        if item == _STRING:
            count = cur.count(f"array count of {key}", MAX_ARRAY_ITEMS, 8)
            keep = count <= KEEP_ARRAY_ITEMS and depth == 0 and key not in ("tokenizer.ggml.tokens",
                                                                            "tokenizer.ggml.merges")
            values = []
            unpack, buf, end = struct.unpack_from, cur.buf, cur.end
            pos = cur.pos
            for _ in range(count):  # the one per-item loop left: each step is one unpack
                if pos + 8 > end:
                    cur.pos = pos
                    raise cur.refuse(f"string {len(values):,} of {key} runs past the end")
                length = unpack("<Q", buf, pos)[0]
                pos += 8
                if length > end - pos:
                    cur.pos = pos
                    raise cur.refuse(f"string of {key} of {length:,} bytes runs past the end")
                if keep:
                    cur.pos = pos
                    values.append(cur.text(length, f"string of {key}") if length <= 256 else None)
                pos += length
            cur.pos = pos
            return values if keep else None
        if item == _ARRAY:
            count = cur.count(f"array count of {key}", MAX_ARRAY_ITEMS, 12)  # each: u32 type + u64 count
            for _ in range(count):
                _value(cur, _ARRAY, key, depth + 1)
            return None
        raise cur.refuse(f"unknown array item type {item} in {key}")
    raise cur.refuse(f"unknown value type {kind} for {key}")


def read_header(path: Path, quant_sizes: dict[int, tuple[int, int]]) -> Header:
    """Walk one GGUF file's header; raises LoadError naming the file for anything that
    is not a well-formed, self-consistent GGUF header.  `quant_sizes` maps a ggml type to
    (elements per block, bytes per block)."""
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            if size < 24:
                raise LoadError(f"{path.name} is corrupt or truncated ({size} bytes)")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _walk(buf, size, path.name, quant_sizes)
    except OSError as exc:
        raise LoadError(f"{path.name} cannot be read ({exc.strerror or exc})") from exc


def _walk(buf, size: int, name: str, quant_sizes) -> Header:
    cur = _Cursor(buf, size, name)
    if bytes(buf[:4]) != MAGIC:
        raise LoadError(f"{name} is not a GGUF file (it does not start with 'GGUF')")
    cur.pos = 4
    version = cur.u32("version")
    if version not in (2, 3):
        if version & 0xFFFF == 0:
            raise LoadError(f"{name} is a big-endian GGUF file, which llama.cpp here cannot read")
        raise LoadError(f"{name} has GGUF version {version}; versions 2 and 3 are supported")
    tensor_count = cur.count("tensor count", MAX_TENSORS, 8 + 4 + 4 + 8)
    kv_count = cur.count("key count", MAX_KEYS, 8 + 4 + 1)
    values: dict[str, object] = {}
    for _ in range(kv_count):
        key = cur.text(cur.string_length("key", MAX_NAME_BYTES), "key")
        if key in values:
            raise cur.refuse(f"key {key[:100]!r} appears twice")
        kind = cur.u32(f"type of {key[:100]}")
        values[key] = _value(cur, kind, key)
    header = Header(version=version, tensor_count=tensor_count, values=values)
    # The tensor table: only sums are kept, so 200k tensors cost a few MB, not a GB.
    names: set[str] = set()
    entries: list[tuple[str, int, int]] = []  # (name, n_bytes, relative offset)
    for _ in range(tensor_count):
        tensor = cur.text(cur.string_length("tensor name", MAX_NAME_BYTES), "tensor name")
        if tensor in names:
            raise cur.refuse(f"tensor {tensor[:100]!r} appears twice")
        names.add(tensor)
        n_dims = cur.u32("tensor dimension count")
        if n_dims > MAX_DIMS:
            raise cur.refuse(f"tensor {tensor[:100]} has {n_dims:,} dimensions (at most {MAX_DIMS})")
        cur.need(8 * n_dims + 12, f"tensor {tensor[:100]}")
        dims = struct.unpack_from(f"<{n_dims}Q", buf, cur.pos)
        cur.pos += 8 * n_dims
        kind, offset = struct.unpack_from("<IQ", buf, cur.pos)
        cur.pos += 12
        if kind not in quant_sizes:
            raise cur.refuse(f"tensor {tensor[:100]} has unknown type {kind}")
        elements = 1
        for dim in dims:
            elements *= dim
        block, type_size = quant_sizes[kind]
        if elements % block:
            raise cur.refuse(f"tensor {tensor[:100]}: {elements:,} elements are not whole blocks of {block}")
        n_bytes = elements // block * type_size
        header.parameters += elements
        entries.append((tensor, n_bytes, offset))
        layer = _BLOCK.match(tensor)
        if layer:
            header.block_bytes[int(layer[1])] = header.block_bytes.get(int(layer[1]), 0) + n_bytes
        elif tensor.startswith("output"):
            header.output_bytes += n_bytes
    alignment = values.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
        raise LoadError(f"{name} is corrupt (general.alignment {alignment!r} is not a power of two)")
    header.data_offset = -(-cur.pos // alignment) * alignment
    for tensor, n_bytes, offset in entries:
        end = header.data_offset + offset + n_bytes
        if end > size:
            raise LoadError(f"{name} is truncated ({size:,} bytes; tensor {tensor[:100]} ends at {end:,})")
        header.data_end = max(header.data_end, end)
    return header
