"""llama.cpp's control-vector file: a GGUF file with general.architecture
"controlvector", `controlvector.model_hint` (the architecture it was made for) and
`controlvector.layer_count`, and one f32 tensor `direction.N` of n_embd values per
layer N.  What llama.cpp's cvector-generator writes and its control-vector loader reads.

Layer numbers are llama.cpp's: direction.N is added to the output of decoder layer N
(counted from 0), for N from 1 (llama.cpp never steers layer 0's output; its
llama_set_adapter_cvec takes a buffer that starts at layer 1).  The Transformers hooks
(webui/steer/hooks.py) use the same numbers, so one file steers both loaders alike.

A file dropped into user_data/control-vectors/ may come from anywhere: it is read with
the repo's bounded GGUF walker (webui/loaders/gguf_header.py), every declared count and
length checked against the bytes there before anything is read, the file's size capped.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from webui.errors import AppError
from webui.loaders.base import LoadError
from webui.loaders.gguf_header import DEFAULT_ALIGNMENT, MAX_NAME_BYTES, _Cursor, _value
from webui.storage import atomic_write_bytes

ARCHITECTURE = "controlvector"
# Far above a real vector set (126 layers x 16384 values x 4 bytes is 8 MB).
MAX_FILE_BYTES = 64 << 20
MAX_TENSORS = 4096
MAX_LAYER = 4096
MAX_WIDTH = 1 << 17
_F32 = 0
_DIRECTION = re.compile(r"direction\.(\d{1,4})")


class VectorFileError(AppError, ValueError):
    """A control-vector file that cannot be used; the message names the file."""

    code = "invalid_control_vector"


@dataclass(frozen=True)
class ControlVector:
    """Directions by llama.cpp layer number (1 = decoder layer 1's output), f32 [width]."""

    directions: dict[int, np.ndarray]
    model_hint: str = ""

    @property
    def width(self) -> int:
        return next(iter(self.directions.values())).shape[0] if self.directions else 0

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def encode(vector: ControlVector) -> bytes:
    """The GGUF bytes of `vector` (version 3, little-endian, 32-byte aligned data)."""
    layers = vector.layers
    if not layers or layers[0] < 1:
        raise ValueError("a control vector needs directions for layers numbered from 1")
    metadata = [
        _string("general.architecture") + struct.pack("<I", 8) + _string(ARCHITECTURE),
        _string("controlvector.model_hint") + struct.pack("<I", 8) + _string(vector.model_hint),
        # cvector-generator writes an i32 here; llama.cpp's loader does not read it back.
        _string("controlvector.layer_count") + struct.pack("<I", 5) + struct.pack("<i", len(layers)),
    ]
    infos, data, offset = [], [], 0
    for layer in layers:
        values = np.ascontiguousarray(vector.directions[layer], dtype="<f4")
        infos.append(_string(f"direction.{layer}") + struct.pack("<IQIQ", 1, values.shape[0], _F32, offset))
        blob = values.tobytes()
        blob += b"\0" * (-len(blob) % DEFAULT_ALIGNMENT)
        data.append(blob)
        offset += len(blob)
    header = struct.pack("<4sIQQ", b"GGUF", 3, len(layers), len(metadata)) + b"".join(metadata) + b"".join(infos)
    header += b"\0" * (-len(header) % DEFAULT_ALIGNMENT)
    return header + b"".join(data)


def write(path: Path, vector: ControlVector) -> None:
    atomic_write_bytes(path, encode(vector))


def read(path: Path) -> ControlVector:
    """Read and check a control-vector file; VectorFileError naming it for anything else."""
    name = path.name
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise VectorFileError(f"{name}: {size:,} bytes is more than a control vector file holds "
                                  f"(at most {MAX_FILE_BYTES >> 20} MiB)")
        if size < 24:
            raise VectorFileError(f"{name} is not a GGUF control vector file ({size} bytes)")
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(buf, size, name)
    except LoadError as exc:  # the walker's refusal of a malformed header
        raise VectorFileError(str(exc)) from None
    except OSError as exc:
        raise VectorFileError(f"{name} cannot be read ({exc.strerror or exc})") from None


def _parse(buf, size: int, name: str) -> ControlVector:
    cur = _Cursor(buf, size, name)
    if bytes(buf[:4]) != b"GGUF":
        raise VectorFileError(f"{name} is not a GGUF file (it does not start with 'GGUF')")
    cur.pos = 4
    if cur.u32("version") not in (2, 3):
        raise VectorFileError(f"{name}: GGUF versions 2 and 3 are read")
    tensors = cur.count("tensor count", MAX_TENSORS, 8 + 4 + 8 + 4 + 8)
    keys = cur.count("key count", 1000, 8 + 4 + 1)
    values: dict[str, object] = {}
    for _ in range(keys):
        key = cur.text(cur.string_length("key", MAX_NAME_BYTES), "key")
        values[key] = _value(cur, cur.u32(f"type of {key[:100]}"), key)
    if values.get("general.architecture") != ARCHITECTURE:
        raise VectorFileError(f"{name} is not a control vector (general.architecture is "
                              f"{str(values.get('general.architecture'))[:60]!r}, not {ARCHITECTURE!r})")
    table: list[tuple[int, int, int]] = []  # (layer, width, offset)
    for _ in range(tensors):
        tensor = cur.text(cur.string_length("tensor name", 256), "tensor name")
        dims = cur.u32("tensor dimension count")
        if dims > 4:
            raise VectorFileError(f"{name}: tensor {tensor[:60]} has {dims:,} dimensions (at most 4)")
        shape = [cur.u64("tensor dimension") for _ in range(dims)]
        kind = cur.u32("tensor type")
        offset = cur.u64("tensor offset")
        match = _DIRECTION.fullmatch(tensor)
        if match is None:
            continue  # other tensors are not ours to read (llama.cpp skips them too)
        if dims != 1:
            raise VectorFileError(f"{name}: {tensor} has {dims} dimensions; a direction has 1")
        layer, width = int(match[1]), shape[0]
        if kind != _F32:
            raise VectorFileError(f"{name}: {tensor} is of ggml type {kind}; directions are f32")
        if not 1 <= layer <= MAX_LAYER or not 1 <= width <= MAX_WIDTH:
            raise VectorFileError(f"{name}: {tensor} with {width:,} values is out of range")
        table.append((layer, width, offset))
    if not table:
        raise VectorFileError(f"{name} holds no direction.N tensors")
    widths = {width for _, width, _ in table}
    if len(widths) > 1:
        raise VectorFileError(f"{name}: its directions differ in length ({sorted(widths)[:4]})")
    alignment = values.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
        raise VectorFileError(f"{name}: general.alignment {alignment!r} is not a power of two")
    start = -(-cur.pos // alignment) * alignment
    directions: dict[int, np.ndarray] = {}
    for layer, width, offset in table:
        begin = start + offset
        if begin + 4 * width > size:
            raise VectorFileError(f"{name} is truncated (direction.{layer} runs past its end)")
        if layer in directions:
            raise VectorFileError(f"{name}: direction.{layer} appears twice")
        values_ = np.frombuffer(buf, dtype="<f4", count=width, offset=begin).astype(np.float32)
        if not np.isfinite(values_).all():
            raise VectorFileError(f"{name}: direction.{layer} holds values that are not finite")
        directions[layer] = values_
    hint = values.get("controlvector.model_hint")
    return ControlVector(directions, hint if isinstance(hint, str) else "")
