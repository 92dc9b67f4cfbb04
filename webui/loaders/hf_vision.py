"""Vision models on Transformers: which folders hold one, and how a prompt's images
become tokens and pixels.

A folder is a vision model when its config names a vision tower (`vision_config`) and
it ships the processor that prepares images for it (preprocessor_config.json or
processor_config.json).  It loads with AutoModelForImageTextToText and AutoProcessor; the
processor's tokenizer is the model's tokenizer, so text-only requests run exactly as on
any other model (and batch with image requests: after the prompt, a decode step is the
language model's alone).

The chat template places the images: a message with images is rendered with content
parts ({"type": "image"} then {"type": "text"}), the form every vision template reads
(webui/chat/prompt.py), and the processor expands each placeholder it wrote into the
tokens the image takes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from webui.generation.request import PromptError, prompt_ids
from webui.generation.vision import VisionPrompt, vision_prompt

PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def is_vision_folder(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return (isinstance(config, dict) and isinstance(config.get("vision_config"), dict)
            and any((folder / name).is_file() for name in PROCESSOR_FILES))


def placeholder_id(processor, tokenizer) -> int:
    token_id = getattr(processor, "image_token_id", None)
    if isinstance(token_id, int):
        return token_id
    token = getattr(processor, "image_token", None)
    if isinstance(token, str):
        found = tokenizer.convert_tokens_to_ids(token)
        if isinstance(found, int) and found != tokenizer.unk_token_id:
            return found
    raise PromptError("this model's processor names no image token; its images cannot be placed")


def takes_token_types(model) -> bool:
    """Whether the model's forward reads `token_type_ids` (Gemma 3: image tokens attend to
    each other both ways during the prefill)."""
    import inspect

    return "token_type_ids" in inspect.signature(model.forward).parameters


def encode_images(processor, tokenizer, text: str, images: tuple, device: str, dtype,
                  token_types: bool = False) -> VisionPrompt:
    """The prompt's ids and tensors; `token_types`: keep the processor's token_type_ids
    (one per prompt position: the backend passes the part it computes)."""
    pictures = [image.image for image in images]
    bos = tokenizer.bos_token
    try:
        out = processor(text=[text], images=[pictures], return_tensors="pt",
                        add_special_tokens=not (bos and text.startswith(bos)))
    except (ValueError, TypeError, IndexError) as exc:
        # Placeholders and images that do not pair up (a template that dropped one).
        raise PromptError(f"the images could not be placed in the prompt: {exc}", param="messages") from exc
    ids = out["input_ids"][0].tolist()
    if ids == prompt_ids(tokenizer, text) and images:
        raise PromptError("this model's chat template wrote no place for the images", param="messages")
    inputs = {}
    for name, value in out.items():
        if name in ("input_ids", "attention_mask", "mm_token_type_ids"):
            continue
        if name == "token_type_ids" and not token_types:
            continue
        if isinstance(value, torch.Tensor):
            value = value.to(device, dtype) if value.is_floating_point() else value.to(device)
        inputs[name] = value
    return vision_prompt(ids, placeholder_id(processor, tokenizer), tuple(images), inputs)
