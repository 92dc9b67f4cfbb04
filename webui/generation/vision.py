"""Images inside a token prompt: where they sit, and how the prefix cache tells them apart.

A vision model's processor expands each image in the prompt into a run of copies of
one placeholder token (LLaVA's `<image>` x 576, SmolVLM's `<image>` x 64 per tile...);
the model replaces those positions' embeddings with the image encoder's output.  The
ids alone are therefore the same for every picture, and a prefix cache keyed on them
would serve one image's KV to a question about another.

So the engine keys a vision prompt on `VisionPrompt.key`: the ids, with each image's
placeholder positions replaced by negative numbers drawn from that image's content id
(webui/images.py).  A negative number is never a token id, so a key never matches a
text-only prompt's ids; the same image in the next chat turn gives the same key (its KV
is reused, the image is not encoded again); a different image parts at its first
placeholder.  A cached prefix that would end inside an image is cut back to the image's
start: an image is encoded whole or not at all.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from webui.generation.request import PromptError
from webui.images import ImageInput


@dataclass(frozen=True)
class ImageSpan:
    """Positions [start, end) of the prompt holding the placeholders of `images` (one
    image, or several whose placeholders run together)."""

    start: int
    end: int
    images: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class VisionPrompt:
    """A tokenized prompt with images: what the backend feeds and how it caches it."""

    ids: list[int]
    key: list[int]  # ids with image placeholders replaced by image-derived negatives
    spans: tuple[ImageSpan, ...]
    images: tuple[ImageInput, ...]
    # The processor's tensors for all images (pixel values and whatever else the
    # model's forward takes with them), passed when the images are computed.
    inputs: dict[str, Any] = field(default_factory=dict, repr=False)

    def reuse_point(self, reused: int) -> int:
        """Where computing must start given `reused` cached positions: never inside an
        image, and before every image that is computed (the processor's tensors are for
        all images at once, so they go in together or not at all)."""
        if not self.spans or reused <= self.spans[0].start:
            return reused
        if reused >= self.spans[-1].end:
            return reused
        return self.spans[0].start  # some image is not covered: compute them all

    def needs_pixels(self, start: int) -> bool:
        """Whether the positions from `start` on hold any image."""
        return bool(self.spans) and start < self.spans[-1].end


def find_spans(ids: list[int], placeholder: int, count: int) -> tuple[ImageSpan, ...]:
    """The runs of `placeholder` in `ids`, matched to `count` images in order.  One run
    per image is the usual layout; when runs and images do not pair up one to one
    (tiles split an image into several runs, or images sit side by side), all images are
    taken as one span from the first placeholder to the last: correct, reused only whole."""
    runs: list[tuple[int, int]] = []
    start = None
    for index, token in enumerate(ids):
        if token == placeholder and start is None:
            start = index
        elif token != placeholder and start is not None:
            runs.append((start, index))
            start = None
    if start is not None:
        runs.append((start, len(ids)))
    if count == 0:
        if runs:
            raise PromptError("the prompt holds image placeholders but no image")
        return ()
    if not runs:
        raise PromptError("this model's chat template wrote no place for the image; the image cannot be read")
    if len(runs) == count:
        return tuple(ImageSpan(s, e, (i,)) for i, (s, e) in enumerate(runs))
    return (ImageSpan(runs[0][0], runs[-1][1], tuple(range(count))),)


def image_key(ids: list[int], spans: tuple[ImageSpan, ...], images: tuple[ImageInput, ...]) -> list[int]:
    key = list(ids)
    for span in spans:
        digest = hashlib.sha256("|".join(images[i].id for i in span.images).encode()).digest()
        base = int.from_bytes(digest[:7], "big")  # < 2**56: the offsets below stay distinct
        for position in range(span.start, span.end):
            key[position] = -1 - base - (position - span.start)
    return key


def vision_prompt(ids: list[int], placeholder: int, images: tuple[ImageInput, ...],
                  inputs: dict[str, Any]) -> VisionPrompt:
    spans = find_spans(ids, placeholder, len(images))
    return VisionPrompt(ids, image_key(ids, spans, images), spans, images, inputs)
