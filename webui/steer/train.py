"""Train a control vector from contrast pairs (the repeng method, written small).

For each prompt, the model reads it after the positive persona and after the negative
one; the decoder layers' outputs at the last token are taken (hooks on the layers, the
same places the vector is later added: webui/steer/hooks.py).  Per layer, the
direction is the first principal component of the differences (positive - negative),
uncentred so that the mean difference, the thing that tells the two personas apart,
is what it finds; its sign is turned so the positive side projects higher.  It is
scaled by the mean projection: strength 1 moves a hidden state by the pairs' own
average gap on that layer, so strengths mean the same on a small model and a large one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from webui.errors import AppError
from webui.steer.cvec_file import ControlVector
from webui.steer.hooks import decoder_layers

MAX_PROMPTS = 2000
MAX_TEXT_CHARS = 4000
MAX_TOKENS = 512  # of one persona + prompt


class SteerTrainingError(AppError, ValueError):
    """Training values that cannot be used, or a model that cannot be steered."""


@dataclass(frozen=True)
class Pairs:
    positive: str  # persona or instruction, put before each prompt
    negative: str
    prompts: tuple[str, ...]

    def check(self) -> None:
        if not self.positive.strip() or not self.negative.strip():
            raise SteerTrainingError("write a positive and a negative persona", param="positive")
        if self.positive.strip() == self.negative.strip():
            raise SteerTrainingError("the positive and negative personas are the same", param="negative")
        if not 2 <= len(self.prompts) <= MAX_PROMPTS:
            raise SteerTrainingError(f"give 2 to {MAX_PROMPTS} prompts, one per line", param="prompts")
        if any(len(t) > MAX_TEXT_CHARS for t in (self.positive, self.negative, *self.prompts)):
            raise SteerTrainingError(f"a persona or prompt is longer than {MAX_TEXT_CHARS} characters",
                                     param="prompts")

    def texts(self, prompt: str) -> tuple[str, str]:
        return f"{self.positive.strip()} {prompt}", f"{self.negative.strip()} {prompt}"


class Stopped(Exception):
    """Training was stopped by the user."""


@torch.inference_mode()
def last_states(model, ids: list[int], layers: list[int]) -> np.ndarray:
    """The outputs of the given decoder layers at the last token: [len(layers), hidden]."""
    stack = decoder_layers(model)
    captured: dict[int, torch.Tensor] = {}

    def keep(number: int):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            captured[number] = hidden[0, -1].float().cpu()
        return hook

    handles = [stack[number].register_forward_hook(keep(number)) for number in layers]
    try:
        device = next(model.parameters()).device
        model(input_ids=torch.tensor([ids], device=device), use_cache=False, logits_to_keep=1)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack([captured[number] for number in layers]).numpy()


def directions(differences: np.ndarray) -> tuple[np.ndarray, float]:
    """The first uncentred principal component of [n, hidden] differences, turned to
    point along them and scaled by their mean projection; and that projection."""
    _, _, vt = np.linalg.svd(differences.astype(np.float64), full_matrices=False)
    direction = vt[0]
    projection = float((differences @ direction).mean())
    if projection < 0:
        direction, projection = -direction, -projection
    return (direction * projection).astype(np.float32), projection


def train_vector(model, tokenizer, pairs: Pairs, model_hint: str = "",
                 on_prompt: Callable[[int, int], None] | None = None,
                 stop: threading.Event | None = None) -> ControlVector:
    """A ControlVector for every steerable layer (1 to layers - 1, llama.cpp's numbers)."""
    pairs.check()
    stack = decoder_layers(model)
    if stack is None or len(stack) < 2:
        raise SteerTrainingError("this model has no decoder layers that can be steered")
    layers = list(range(1, len(stack)))
    positive, negative = [], []
    for index, prompt in enumerate(pairs.prompts):
        if stop is not None and stop.is_set():
            raise Stopped
        for text, into in zip(pairs.texts(prompt), (positive, negative), strict=True):
            ids = tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"][-MAX_TOKENS:]
            into.append(last_states(model, ids, layers))
        if on_prompt is not None:
            on_prompt(index + 1, len(pairs.prompts))
    differences = np.stack(positive) - np.stack(negative)  # [prompts, layers, hidden]
    found = {layer: directions(differences[:, i])[0] for i, layer in enumerate(layers)}
    return ControlVector(found, model_hint)


def split_prompts(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())

