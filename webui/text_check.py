"""One check for text that arrives from a request: it must be encodable Unicode.

JSON may carry a lone surrogate ("\\ud800"), which Python accepts as a str but which
no UTF-8 encoder, tokenizer or file write will take: left in, it fails deep inside
(a save, a tokenizer) as a generic error.  The API's request models and the UI's
event guard call this on everything a request carries, so such text is refused up
front with a clear message (docs/SECURITY.md, "Request contents").
"""

from __future__ import annotations

import re

from webui.errors import AppError

_SURROGATE = re.compile("[\ud800-\udfff]")


class InvalidText(AppError, ValueError):
    """Text that is not valid Unicode (a lone surrogate, ...)."""


def check_text(value: object, what: str = "text") -> None:
    """Raise InvalidText if any string in `value` (walked iteratively through lists,
    tuples and dict keys and values, so depth cannot exhaust the stack) holds a lone
    surrogate."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise InvalidText(f"{what} is not valid Unicode (it holds a lone surrogate such as \\ud800)")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
