"""Plain text from bytes: a BOM says the encoding; else UTF-8; else Windows-1252 (what
an old Western text file most likely is).  Binary data is refused, not decoded."""

from __future__ import annotations

import codecs


class NotText(ValueError):
    pass


def decode_text(data: bytes) -> str:
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                          (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    if b"\x00" in data[:65536]:
        raise NotText("this file holds binary data, not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")
