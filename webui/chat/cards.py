"""Character Card V1/V2/V3 in JSON and PNG: read without decoding pixels, write back.

A card PNG carries the card as base64 JSON in a text chunk: `chara` (V2, and V1
before it) and `ccv3` (V3; preferred when both are present).  Chunks are walked
directly, so a decompression-bomb image is never decoded just to read its card, and
every size is capped (docs/SECURITY.md).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import struct
import zlib
from typing import Any

from webui.errors import AppError
from webui.safe_yaml import MAX_DEPTH, nesting_depth

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_CARD_FILE_BYTES = 20 << 20
MAX_CARD_JSON_BYTES = 4 << 20
MAX_PICTURE_PIXELS = 4096 * 4096
CARD_CHUNK_KEYS = ("ccv3", "chara")  # preference order


# The card sits a few levels down in the character's YAML; MAX_DEPTH bounds that file.
MAX_CARD_DEPTH = MAX_DEPTH // 2


class CardError(AppError, ValueError):
    """A card file that cannot be used, with the reason."""


def read_card(data: bytes) -> dict[str, Any]:
    """The card object from a PNG or JSON file's bytes."""
    if len(data) > MAX_CARD_FILE_BYTES:
        raise CardError(f"the file is larger than {MAX_CARD_FILE_BYTES >> 20} MB")
    if data.startswith(PNG_SIGNATURE):
        texts = png_text_chunks(data)
        key = next((k for k in CARD_CHUNK_KEYS if k in texts), None)
        if key is None:
            raise CardError("this PNG holds no character card (no 'ccv3' or 'chara' text chunk)")
        try:
            data = base64.b64decode(texts[key], validate=False)
        except (binascii.Error, ValueError) as exc:
            raise CardError(f"the card chunk is not base64: {exc}") from exc
    if len(data) > MAX_CARD_JSON_BYTES:
        raise CardError("the card data is too large")
    try:
        card = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CardError(f"the card is not valid JSON: {exc}") from exc
    except RecursionError:
        card = None
    if card is None or nesting_depth(card) > MAX_CARD_DEPTH:
        # The character is saved as YAML, which is read back with a nesting budget
        # (webui/safe_yaml.py): refuse here what could be saved but never loaded.
        raise CardError(f"the card is nested deeper than {MAX_CARD_DEPTH} levels")
    if not isinstance(card, dict):
        raise CardError("the card is not a JSON object")
    return card


def png_text_chunks(data: bytes) -> dict[str, str]:
    """keyword -> text for the tEXt, zTXt and iTXt chunks of a PNG."""
    texts: dict[str, str] = {}
    for kind, body in _chunks(data):
        try:
            if kind == b"tEXt":
                key, _, value = body.partition(b"\0")
                texts[key.decode("latin-1")] = value.decode("latin-1")
            elif kind == b"zTXt":
                key, _, rest = body.partition(b"\0")
                texts[key.decode("latin-1")] = _inflate(rest[1:]).decode("latin-1")
            elif kind == b"iTXt":
                key, _, rest = body.partition(b"\0")
                compressed, rest = rest[0], rest[2:]
                _language, _, rest = rest.partition(b"\0")
                _translated, _, value = rest.partition(b"\0")
                texts[key.decode("latin-1")] = (_inflate(value) if compressed else value).decode("utf-8")
        except (IndexError, UnicodeDecodeError, zlib.error) as exc:
            raise CardError(f"a PNG text chunk is damaged: {exc}") from exc
    return texts


def write_png_card(picture: bytes, card_v2: dict[str, Any], card_v3: dict[str, Any]) -> bytes:
    """`picture` with its card chunks replaced by the given cards (V2 and V3, as the V3
    spec asks of exporters, so older apps still read it)."""
    kept = [(k, b) for k, b in _chunks(picture) if not (k == b"tEXt" and _text_key(b) in CARD_CHUNK_KEYS)]
    out = io.BytesIO()
    out.write(PNG_SIGNATURE)
    for kind, body in kept:
        if kind == b"IEND":
            for key, card in (("chara", card_v2), ("ccv3", card_v3)):
                encoded = base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8"))
                _write_chunk(out, b"tEXt", key.encode("latin-1") + b"\0" + encoded)
        _write_chunk(out, kind, body)
    return out.getvalue()


def check_picture(data: bytes) -> None:
    """Refuse a PNG that is damaged or too large before anything decodes its pixels."""
    from PIL import Image, UnidentifiedImageError

    kind, header = next(_chunks(data))  # IHDR comes first: the size, read before any decoder runs
    if kind != b"IHDR" or len(header) < 8:
        raise CardError("the picture is not a valid PNG (no header)")
    width, height = struct.unpack(">II", header[:8])
    if width * height > MAX_PICTURE_PIXELS:
        raise CardError(f"the picture is too large ({width}x{height} pixels)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()  # checks structure and checksums without keeping pixels
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CardError(f"the picture is not a valid PNG: {exc}") from exc


def blank_picture() -> bytes:
    """A plain portrait-shaped PNG to carry a card that has no picture."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (256, 384), (90, 100, 120)).save(out, format="PNG")
    return out.getvalue()


# -- chunk plumbing -----------------------------------------------------------------
def _chunks(data: bytes):
    if not data.startswith(PNG_SIGNATURE):
        raise CardError("not a PNG file")
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if len(body) != length or offset + 12 + length > len(data):
            raise CardError("the PNG is truncated")
        yield kind, body
        if kind == b"IEND":
            return
        offset += 12 + length
    raise CardError("the PNG is truncated (no end chunk)")


def _write_chunk(out: io.BytesIO, kind: bytes, body: bytes) -> None:
    out.write(struct.pack(">I", len(body)))
    out.write(kind)
    out.write(body)
    out.write(struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def _text_key(body: bytes) -> str:
    return body.partition(b"\0")[0].decode("latin-1")


def _inflate(data: bytes) -> bytes:
    # Bounded: a small compressed chunk must not expand into gigabytes.
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_CARD_JSON_BYTES + 1)
    if len(out) > MAX_CARD_JSON_BYTES:
        raise CardError("a compressed PNG text chunk is too large")
    return out
