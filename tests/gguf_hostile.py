"""Hostile GGUF headers written byte by byte: counts that lie, huge tables (for
tests/test_hostile_files.py; no model or llama.cpp needed)."""

from __future__ import annotations

import struct
from pathlib import Path


def gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def write_raw_gguf(path: Path, kv: list[bytes] = (), tensors: list[bytes] = (), tail: bytes = b"",
                   tensor_count: int | None = None, kv_count: int | None = None) -> Path:
    """A GGUF v3 file from raw key/value and tensor-info records (each a bytes object), with
    counts that may lie: what a hostile file declares, not what a writer would produce."""
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors) if tensor_count is None else tensor_count,
                                   len(kv) if kv_count is None else kv_count)
    path.write_bytes(header + b"".join(kv) + b"".join(tensors) + tail)
    return path


def gguf_key_string_array(key: str, items: int) -> bytes:
    """key = ARRAY(STRING) of `items` short strings (a vocabulary)."""
    return gguf_string(key) + struct.pack("<IIQ", 9, 8, items) + b"".join(gguf_string(f"t{i}") for i in range(items))


def gguf_f32_tensor(name: str, offset: int) -> bytes:
    """Tensor info for a one-element F32 tensor at `offset` in the data section."""
    return gguf_string(name) + struct.pack("<IQIQ", 1, 1, 0, offset)
