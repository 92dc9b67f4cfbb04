"""Control vectors on a Transformers model: forward hooks on its decoder layers.

Each hooked layer adds a [rows, 1, hidden] tensor to its output: row i gets its own
request's addition (zeros for a row that is not steered), the same at every position,
as llama.cpp adds its vector to every token's state.  Hooks are installed for one
forward and removed after it, and only for layers some row steers: a batch with no
steered row runs exactly the model's own code.  x + 0 is x, so an unsteered row beside
steered ones gets the numbers it would get alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from webui.steer.library import Steering


def decoder_layers(model) -> torch.nn.ModuleList | None:
    """The model's stack of decoder layers (None where there is no plain one)."""
    candidates = []
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        try:
            candidates.append(get_decoder())
        except Exception:  # noqa: S110 - a model without a separable decoder: try the usual places
            pass
    inner = getattr(model, "model", None)
    candidates += [inner, getattr(inner, "language_model", None), getattr(inner, "model", None)]
    for place in candidates:
        layers = getattr(place, "layers", None)
        if isinstance(layers, torch.nn.ModuleList) and len(layers):
            return layers
    return None


def steer_shape(model) -> tuple[int, int] | None:
    """(hidden size, decoder layers) when the model can be steered, else None."""
    layers = decoder_layers(model)
    if layers is None:
        return None
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    hidden = getattr(config, "hidden_size", None)
    if not isinstance(hidden, int) or len(layers) != getattr(config, "num_hidden_layers", len(layers)):
        return None
    return hidden, len(layers)


def row_additions(rows: Sequence[Steering | None], device, dtype) -> dict[int, torch.Tensor]:
    """Layer -> [rows, 1, hidden] addition, for the layers any row steers."""
    steered = [s for s in rows if s is not None]
    if not steered:
        return {}
    hidden = steered[0].hidden
    numbers = sorted({layer for s in steered for layer in s.layers})
    out = {}
    for layer in numbers:
        block = torch.zeros(len(rows), 1, hidden, dtype=torch.float32)
        for row, steering in enumerate(rows):
            if steering is not None and layer in steering.layers:
                block[row, 0] = torch.from_numpy(steering.layers[layer])
        out[layer] = block.to(device=device, dtype=dtype)
    return out


@contextmanager
def steered(model, additions: dict[int, torch.Tensor]) -> Iterator[None]:
    """Add additions[layer] to that decoder layer's output while inside (nothing hooked
    when there are none)."""
    if not additions:
        yield
        return
    layers = decoder_layers(model)
    handles = []

    def hook_for(addition: torch.Tensor):
        def hook(module, args, output):
            if isinstance(output, tuple):
                return (output[0] + addition, *output[1:])
            return output + addition
        return hook

    try:
        for layer, addition in additions.items():
            handles.append(layers[layer].register_forward_hook(hook_for(addition)))
        yield
    finally:
        for handle in handles:
            handle.remove()
