"""Look inside a Transformers model: the logit lens, attention rows, hidden-state norms.

One forward pass over the user's text (at most MAX_TOKENS tokens).  Hooks on the
decoder layers read each layer's output as it is made and, there and then, apply the
model's own final norm and output layer to it (the "logit lens": what the model would
predict if it stopped after that layer), keeping only the TOP likeliest tokens per
position; the full vocabulary-wide logits of one layer never outlive its hook.  The last
layer's row is therefore the model's own next-token distribution, computed the way its
forward computes it.

Attention weights come from the model's eager attention: for the pass, the model is
switched to "eager" (whatever it was loaded with: SDPA, the engine's row-wise SDPA)
and back afterwards; a hook on each layer's attention module keeps the row of one query
position.  A model whose attention cannot be switched is refused, not approximated.

Cancellation is checked before each layer; the model is left exactly as it was.
This module knows nothing of the engine or the UI: webui/inspect/service.py lends it
the model, webui/ui/inspect_tab.py and webui/api/inspect_api.py show the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from webui.errors import AppError
from webui.generation.token_probs import in_place_texts

MAX_TOKENS = 512
# A token is rarely longer than a few dozen characters; a longer text is refused before
# the tokenizer (native code) sees it.
MAX_CHARS = MAX_TOKENS * 64
TOP = 10
# Logits computed at once: positions per chunk x vocabulary stays under this (a 152k
# vocabulary in fp32 would otherwise cost 300 MB per layer for 512 positions).
CHUNK_ELEMENTS = 1 << 24
# Where families keep their final norm, on the base model (Llama, Mistral, Qwen, Gemma,
# Phi-3, gpt-oss: norm; Phi-1/2: final_layernorm; GPT-2, Falcon, Bloom: ln_f).
NORM_NAMES = ("norm", "final_layernorm", "ln_f")
# Config fields that change the logits after the output layer in ways this lens does not
# reproduce: a model carrying one is refused rather than shown wrong.
UNKNOWN_LOGIT_CHANGES = ("logit_scale", "logits_scaling", "output_multiplier_scale", "mup_width_scale")


class InspectError(AppError, ValueError):
    """An inspection that cannot go ahead: the message says why."""

    code = "inspect_refused"


class InspectUnsupported(InspectError):
    """The model cannot be inspected at all (a GGUF or remote model, an unknown family)."""

    code = "inspect_unsupported"


class InspectCancelled(AppError, RuntimeError):
    """Stopped by the user before the last layer."""

    status, code = 409, "cancelled"


@dataclass
class Parts:
    """What the lens needs of a model, found by name (see NORM_NAMES)."""

    model: torch.nn.Module  # the transformers model (under any LoRA wrapper)
    layers: list[torch.nn.Module]
    norm: torch.nn.Module
    head: torch.nn.Module
    softcap: float | None  # Gemma 2 and 3: logits = cap * tanh(logits / cap)
    attentions: list[torch.nn.Module]


def find_parts(model: torch.nn.Module) -> Parts:
    """The decoder layers, final norm and output layer of `model`, or InspectUnsupported
    naming what is missing."""
    if hasattr(model, "get_base_model"):  # a LoRA (peft) wrapper: its layers are in the model
        model = model.get_base_model()
    name = type(model).__name__
    config = getattr(model, "config", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    base = getattr(model, "model", None) or getattr(model, "transformer", None)
    # A vision model (Llava, Gemma 3): its text decoder holds the layers and the norm.
    base = getattr(base, "language_model", base)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    norm = next((getattr(base, n) for n in NORM_NAMES if isinstance(getattr(base, n, None), torch.nn.Module)), None)
    layers = getattr(base, "layers", None) or getattr(base, "h", None)
    if head is None or norm is None or not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        raise InspectUnsupported(f"{name}: the logit lens reads transformer decoders that keep their layers and "
                                 f"final norm where Llama, Mistral, Qwen, Gemma, Phi, gpt-oss and GPT-2 do "
                                 f"({', '.join(NORM_NAMES)}); this model does not")
    changes = [f for f in UNKNOWN_LOGIT_CHANGES if getattr(config, f, None) not in (None, 1, 1.0)]
    if changes:
        raise InspectUnsupported(f"{name} rescales its logits ({', '.join(changes)}) in a way the lens does not "
                                 "reproduce")
    attentions = [getattr(layer, "self_attn", None) or getattr(layer, "attn", None) for layer in layers]
    if any(a is None for a in attentions) or not hasattr(model, "set_attn_implementation"):
        raise InspectUnsupported(f"{name}: its attention cannot be switched to eager attention for the weights")
    cap = getattr(config, "final_logit_softcapping", None)
    return Parts(model, list(layers), norm, head, float(cap) if cap else None, attentions)


@dataclass
class Lens:
    """One inspection's result: numbers only, plus the texts of the tokens they name."""

    ids: list[int]  # the text's tokens
    tokens: list[str]  # their texts, as they read in place
    position: int  # the query position whose attention rows were kept
    top_ids: np.ndarray  # [layers + 1, positions, TOP]: row 0 the embeddings, row i layer i's output
    top_probs: np.ndarray  # the same shape, float32
    norms: np.ndarray  # [layers + 1, positions]: the L2 norm of each hidden state
    attention: np.ndarray  # [layers, heads, position + 1]: weights of the query at `position`
    vocab: dict[int, str] = field(default_factory=dict)  # texts of every id in top_ids
    seconds: float = 0.0

    @property
    def layer_names(self) -> list[str]:
        return ["embeddings", *(f"layer {i}" for i in range(1, len(self.top_ids)))]

    def mean_norms(self) -> list[float]:
        """One value per row (the embeddings, then each layer): the mean over positions."""
        return [float(v) for v in self.norms.mean(axis=1)]

    def top(self, row: int, position: int) -> list[tuple[str, float]]:
        """The TOP likeliest next tokens after `position` as read at `row`."""
        return [(self.vocab[int(i)], float(p)) for i, p in zip(self.top_ids[row, position],
                                                                self.top_probs[row, position], strict=True)]

    def attention_rows(self, head: int | None) -> np.ndarray:
        """[layers, position + 1]: one head's weights, or (None) the mean over heads."""
        return self.attention.mean(axis=1) if head is None else self.attention[:, head, :]


def tokenize(tokenizer, text: object, context_length: int) -> list[int]:
    """The text's token ids (with the model's start token), refused naming `text` when it
    is no text or longer than MAX_TOKENS or the model's context."""
    if not isinstance(text, str) or not text.strip():
        raise InspectError("text: enter a text to inspect", param="text")
    if len(text) > MAX_CHARS:
        raise InspectError(f"text: {len(text):,} characters is more than the inspector reads "
                           f"({MAX_TOKENS} tokens at most)", param="text")
    ids = list(tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])
    limit = min(MAX_TOKENS, context_length)
    if len(ids) > limit:
        raise InspectError(f"text: {len(ids)} tokens is more than {limit}, the most the inspector reads "
                           f"{'at once' if limit == MAX_TOKENS else 'with this model'}", param="text")
    return ids


def check_position(position: object, length: int) -> int:
    """A query position (negative: counted from the end, -1 the last token), in range."""
    if isinstance(position, float) and position.is_integer():
        position = int(position)
    if position is None:
        return length - 1
    if not isinstance(position, int) or isinstance(position, bool) or not -length <= position < length:
        raise InspectError(f"position: pick a token position from 0 to {length - 1} (or -1 for the last)",
                           param="position")
    return position % length


@contextmanager
def eager_attention(model: torch.nn.Module):
    """The model attends with its eager implementation (which returns its weights) inside."""
    before = model.config._attn_implementation
    if before != "eager":
        try:
            model.set_attn_implementation("eager")
        except (ValueError, TypeError, AttributeError) as exc:
            raise InspectUnsupported(f"{type(model).__name__}: eager attention is not available ({exc})") from None
    try:
        yield
    finally:
        if model.config._attn_implementation != before:
            model.set_attn_implementation(before)


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    return kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]


def _output(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def analyse(model: torch.nn.Module, ids: list[int], position: int,
            cancelled: Callable[[], bool] = lambda: False,
            on_layer: Callable[[int, int], None] | None = None) -> Lens:
    """Run `model` once over `ids` and read it layer by layer (see the module's doc).
    Raises InspectCancelled when `cancelled()` turns true before a layer."""
    parts = find_parts(model)
    count = len(parts.layers)
    # The input embeddings' device: where the ids go in.  The output layer's own size,
    # not its weight's (the CPU fp16 kernels keep a packed weight of their own).
    device = parts.model.get_input_embeddings().weight.device
    vocab = getattr(parts.head, "out_features", None) or parts.head.weight.shape[0]
    chunk = max(1, CHUNK_ELEMENTS // vocab)
    rows: list[tuple[torch.Tensor, torch.Tensor]] = []
    norms: list[torch.Tensor] = []
    attention: list[torch.Tensor | None] = [None] * count

    def read(hidden: torch.Tensor) -> None:
        h = hidden[0]  # [positions, width]
        norms.append(h.float().norm(dim=-1).cpu())
        tops, probs = [], []
        for start in range(0, h.shape[0], chunk):
            logits = parts.head(parts.norm(h[start:start + chunk])).float()
            if parts.softcap:
                logits = torch.tanh(logits / parts.softcap) * parts.softcap
            # The top logits and the log of the normaliser: the same probabilities as a
            # softmax's top-k, without writing a whole softmaxed copy of the logits.
            top_logits, i = logits.topk(TOP, dim=-1)
            tops.append(i.cpu())
            probs.append((top_logits - torch.logsumexp(logits, dim=-1, keepdim=True)).exp().cpu())
        rows.append((torch.cat(tops), torch.cat(probs)))

    def before_layer(index: int):
        def hook(module, args, kwargs):
            if cancelled():
                raise InspectCancelled(f"stopped before layer {index + 1} of {count}")
            if on_layer is not None:
                on_layer(index, count)
            if index == 0:
                read(_hidden(args, kwargs))
        return hook

    def after_layer(module, args, kwargs, output):
        read(_output(output))

    def keep_attention(index: int):
        def hook(module, args, kwargs, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise InspectUnsupported(f"{type(parts.model).__name__}: its attention returned no weights")
            attention[index] = weights[0, :, position, : position + 1].float().cpu()
        return hook

    handles = []
    started = time.perf_counter()
    try:
        for index, (layer, attn) in enumerate(zip(parts.layers, parts.attentions, strict=True)):
            handles.append(layer.register_forward_pre_hook(before_layer(index), with_kwargs=True))
            handles.append(layer.register_forward_hook(after_layer, with_kwargs=True))
            handles.append(attn.register_forward_hook(keep_attention(index), with_kwargs=True))
        with eager_attention(parts.model), torch.inference_mode():
            parts.model(input_ids=torch.tensor([ids], device=device), use_cache=False, logits_to_keep=1)
    finally:
        for handle in handles:
            handle.remove()
    if len(rows) != count + 1 or any(a is None for a in attention):
        raise InspectUnsupported(f"{type(parts.model).__name__}: not every layer was seen in the forward pass")
    top_ids = torch.stack([i for i, _ in rows]).numpy()
    lens = Lens(ids=list(ids), tokens=[], position=position, top_ids=top_ids,
                top_probs=torch.stack([p for _, p in rows]).numpy(), norms=torch.stack(norms).numpy(),
                attention=torch.stack(attention).numpy(), seconds=time.perf_counter() - started)
    return lens


def name_tokens(lens: Lens, tokenizer) -> Lens:
    """Fill in the texts: each input token as it reads in place, each predicted one as
    it would read after the text's last token."""
    ids = lens.ids
    lens.tokens = [in_place_texts(tokenizer, ids[max(0, i - 4):i], [token])[0] for i, token in enumerate(ids)]
    unique = sorted({int(i) for i in np.unique(lens.top_ids)})
    lens.vocab = dict(zip(unique, in_place_texts(tokenizer, ids[-1:], unique), strict=True))
    return lens


def inspect_text(model: torch.nn.Module, tokenizer, text: object, context_length: int,
                 position: object = None, cancelled: Callable[[], bool] = lambda: False,
                 on_layer: Callable[[int, int], None] | None = None) -> Lens:
    """The whole inspection of a text: checked, tokenized, analysed, named."""
    ids = tokenize(tokenizer, text, context_length)
    where = check_position(position, len(ids))
    return name_tokens(analyse(model, ids, where, cancelled, on_layer), tokenizer)


def percent(p: float) -> str:
    return "0%" if p <= 0 else "<0.1%" if p < 0.001 else f"{100 * p:.1f}%"

