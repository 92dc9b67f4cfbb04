"""Images in API requests: OpenAI's content parts and Ollama's `images`, read under the
same checks and limits as the chat's (webui/images.py), each refusal a 400 naming the
field it came from (messages[1].content[2].image_url.url, images[0]...)."""

from __future__ import annotations

from typing import Any

from webui.api.image_fetch import fetch_image
from webui.generation.request import CannotSee
from webui.images import (
    MAX_IMAGES_PER_MESSAGE,
    ImageInput,
    ImageRefused,
    check_image,
    decode_base64,
    decode_data_url,
)

# Images one request may carry in all its messages.
MAX_IMAGES_PER_REQUEST = 16
IMAGE_PARTS = ("image_url", "input_image")


def openai_images(messages: list[Any], allow_urls: bool) -> dict[int, tuple[ImageInput, ...]]:
    """Each message's images (by message index), from its image_url content parts."""
    found: dict[int, tuple[ImageInput, ...]] = {}
    total = 0
    for index, message in enumerate(messages):
        if not isinstance(message.content, list):
            continue
        images = []
        for number, part in enumerate(message.content):
            if part.type not in IMAGE_PARTS:
                continue
            param = f"messages[{index}].content[{number}].image_url"
            raw = (part.model_extra or {}).get("image_url")
            url = raw.get("url") if isinstance(raw, dict) else raw
            if not isinstance(url, str) or not url:
                raise ImageRefused("an image part needs image_url.url (a data: URL)", param=param)
            param += ".url"
            if message.role != "user":
                raise ImageRefused("images are read in user messages only", param=param)
            total += 1
            if len(images) >= MAX_IMAGES_PER_MESSAGE or total > MAX_IMAGES_PER_REQUEST:
                raise ImageRefused(f"at most {MAX_IMAGES_PER_MESSAGE} images per message and "
                                   f"{MAX_IMAGES_PER_REQUEST} per request", param=param, code="too_many_images")
            data = decode_data_url(url, param) if url[:5].lower() == "data:" else fetch_image(url, param, allow_urls)
            images.append(check_image(data, param))
        if images:
            found[index] = tuple(images)
    return found


def ollama_images(images: list[str] | None, param: str) -> tuple[ImageInput, ...]:
    """Ollama's `images`: base64 strings (no data: prefix, as Ollama sends them; one is accepted too)."""
    if not images:
        return ()
    if len(images) > MAX_IMAGES_PER_MESSAGE:
        raise ImageRefused(f"at most {MAX_IMAGES_PER_MESSAGE} images per message", param=param,
                           code="too_many_images")
    checked = []
    for number, text in enumerate(images):
        where = f"{param}[{number}]"
        try:
            data = decode_data_url(text, where) if isinstance(text, str) and text[:5].lower() == "data:" else (
                decode_base64(text, where))
            checked.append(check_image(data, where))
        except ImageRefused as exc:
            # Ollama's error body is a message alone: the message names the field.
            raise ImageRefused(f"{where}: {exc}", param=where, code=exc.code, status=exc.status) from None
    return tuple(checked)


def require_vision(model: Any, count: int, capabilities) -> None:
    """A model that reads only text is told so before anything is queued."""
    if count and not getattr(capabilities, "vision", False):
        raise CannotSee(f"{model.name} reads only text and cannot see the {count} image{'s' if count > 1 else ''} "
                        "sent; load a vision model, or send text only", param="messages")


def total_images(found: dict[int, tuple[ImageInput, ...]]) -> int:
    return sum(len(images) for images in found.values())
