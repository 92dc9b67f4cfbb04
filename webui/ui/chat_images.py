"""Images in the chat tab: what the message box hands over, and how a message's images
show in its bubble.

The message box is a MultimodalTextbox: images attached, pasted or dropped there arrive
as files in Gradio's upload cache (counted against the user's upload quota,
webui/ui/uploads.py); each is read within the byte limit, checked and stored in the
user's image store (webui/images.py) and the message keeps their ids.

A bubble cannot point at the image store: user data is never served as files (app.py's
blocked_paths).  So each image shown is copied once into Gradio's private cache
(webui/ui/exports.py), under a folder whose name is an HMAC of the user's folder with a
secret made at start-up: one user cannot name another's copies, and none outlive the
process (the cache folder goes when it exits).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

import gradio as gr
from gradio.components.multimodal_textbox import MultimodalData
from pydantic import model_validator

from webui.chat.history import Conversation
from webui.images import MAX_IMAGE_BYTES, MAX_IMAGES_PER_MESSAGE, ImageRefused, ImageStore

PARAM = "message"


class _MessageData(MultimodalData):
    """The message box's value; plain text (what an API client of the UI sends, and what
    it sent before the box took images) is a message without images."""

    @model_validator(mode="before")
    @classmethod
    def _text_alone(cls, value):
        return {"text": value, "files": []} if isinstance(value, str) else value


def message_box(**options) -> gr.MultimodalTextbox:
    """Gradio's MultimodalTextbox, taking a plain string as well as {"text", "files"}.

    The data model is set on the class: Gradio rebuilds a component from its constructor
    arguments whenever an event leaves it as it was (a dict of outputs without it), which
    drops anything set on the instance; and a subclass would make Gradio write a .pyi stub
    beside its source, into our source tree.  Taking a string as the text is a superset of
    Gradio's own model, so any other MultimodalTextbox reads exactly what it read before."""
    gr.MultimodalTextbox.data_model = _MessageData
    return gr.MultimodalTextbox(**options)


def message_parts(value) -> tuple[str, list[str]]:
    """(text, uploaded file paths) of the message box's value (a dict, or a plain
    string where a client sends one)."""
    if value is None:
        return "", []
    if isinstance(value, str):
        return value, []
    if not isinstance(value, dict):
        raise ImageRefused("the message must be text with optional images", param=PARAM)
    text = value.get("text") or ""
    files = value.get("files") or []
    if not isinstance(text, str) or not isinstance(files, list):
        raise ImageRefused("the message must be text with optional images", param=PARAM)
    paths = []
    for item in files:
        path = item if isinstance(item, str) else (item.get("path") if isinstance(item, dict) else getattr(
            item, "path", None))
        if not isinstance(path, str):
            raise ImageRefused("an attached file arrived without its contents", param=PARAM)
        paths.append(path)
    return text, paths


def store_uploads(store: ImageStore, paths: list[str]) -> list[str]:
    """Check and store each uploaded image; their ids, in order.  Nothing is stored
    unless every image is read (a message is sent whole or not at all)."""
    if len(paths) > MAX_IMAGES_PER_MESSAGE:
        raise ImageRefused(f"a message carries at most {MAX_IMAGES_PER_MESSAGE} images; "
                           f"this one has {len(paths)}", param=PARAM)
    from webui.images import check_image

    checked = []
    for number, name in enumerate(paths, 1):
        path = Path(name)
        try:
            with path.open("rb") as handle:  # read at most one byte past the limit
                data = handle.read(MAX_IMAGE_BYTES + 1)
        except OSError:
            raise ImageRefused(f"attachment {number} could not be read; attach it again", param=PARAM) from None
        try:
            checked.append(check_image(data, PARAM))
        except ImageRefused as exc:
            raise ImageRefused(f"attachment {number} ({path.name[:60]}): {exc}", param=PARAM,
                               code=exc.code) from None
    for image in checked:
        store.save(image)
    return [image.id for image in checked]


class ImageShelf:
    """Copies of stored images in Gradio's cache, for the chat's bubbles."""

    def __init__(self, cache: Path | str):
        self.root = Path(cache) / "chat-images"
        self._secret = secrets.token_bytes(32)

    def for_store(self, store: ImageStore) -> Callable[[str], str | None]:
        folder = self.root / hmac.new(self._secret, str(store.folder).encode(), hashlib.sha256).hexdigest()[:32]

        def shown(image_id: str) -> str | None:
            target = folder / f"{image_id}.png"
            if target.is_file():
                return str(target)
            if not store.has(image_id):
                return None  # gone from the store: the bubble says so in text
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            partial = folder / f".{image_id}.{secrets.token_hex(4)}.tmp"
            shutil.copyfile(store.path(image_id), partial)
            os.chmod(partial, 0o600)
            os.replace(partial, target)
            return str(target)

        return shown


def bubbles(conversation: Conversation, view, shown: Callable[[str], str | None] | None) -> list[dict]:
    """The Chatbot's messages (`view`: webui/chat/display.py's Shown) with each message's
    images before its text, in the same message (the Chatbot's indices stay as they were)."""
    if shown is None:
        return view.messages
    path = conversation.path()
    out = []
    for message, position, part in zip(view.messages, view.positions, view.parts, strict=True):
        kept = path[position]
        if part != "message" or not kept.images:
            out.append(message)
            continue
        parts: list = []
        for image_id in kept.images:
            path_shown = shown(image_id)
            parts.append({"path": path_shown, "mime_type": "image/png"} if path_shown else "(image no longer stored)")
        if message["content"]:
            parts.append(message["content"])
        out.append({**message, "content": parts})
    return out
