"""The prompt each chat's last reply was written from, for the prompt inspector.

Kept in memory (a reload of the page still finds it; a restart does not), per user
folder and conversation, for the most recent chats only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from webui.chat.prompt import PromptInfo

KEPT_CHATS = 64
_kept: OrderedDict[tuple[str, str], PromptInfo] = OrderedDict()
_lock = threading.Lock()


def keep(folder: Path, chat_id: str, info: PromptInfo) -> None:
    with _lock:
        _kept[(str(folder), chat_id)] = info
        _kept.move_to_end((str(folder), chat_id))
        while len(_kept) > KEPT_CHATS:
            _kept.popitem(last=False)


def last(folder: Path, chat_id: object) -> PromptInfo | None:
    """The last reply's prompt in chat `chat_id` of the user whose chats are in `folder`."""
    if not isinstance(chat_id, str):
        return None
    with _lock:
        return _kept.get((str(folder), chat_id))
