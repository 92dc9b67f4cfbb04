"""A conversation's images: kept in the user's image store next to their chats
(user_data/images/ID.png beside user_data/chats/, per user in multi-user mode), named
in each message by id (webui/chat/history.py Message.images), and loaded back for the
prompt when a reply is written."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from webui.chat.history import ChatError
from webui.images import ImageInput, ImageRefused, ImageStore

# Decoded images kept for the next reply (a follow-up turn reads the same ones again).
CACHED_IMAGES = 32
_cache: OrderedDict[tuple[str, str], ImageInput] = OrderedDict()
_lock = threading.Lock()


def image_store(chats_folder: Path) -> ImageStore:
    """The image store of the user whose chats are in `chats_folder`."""
    return ImageStore(chats_folder.parent / "images")


def load_image(store: ImageStore, image_id: str) -> ImageInput:
    key = (str(store.folder), image_id)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    try:
        image = store.load(image_id)
    except (ImageRefused, OSError) as exc:
        raise ChatError(f"an image of this conversation cannot be read any more ({image_id[:8]}…): "
                        f"{exc}; edit that message to send the image again") from exc
    with _lock:
        _cache[key] = image
        while len(_cache) > CACHED_IMAGES:
            _cache.popitem(last=False)
    return image


def with_images(turns: Sequence[dict], store: ImageStore) -> list[dict]:
    """`turns` (Conversation.turns()) with each message's image ids replaced by the
    checked images themselves, for the prompt (webui/chat/prompt.py)."""
    return [{**turn, "images": tuple(load_image(store, i) for i in turn["images"])} if turn.get("images") else turn
            for turn in turns]
