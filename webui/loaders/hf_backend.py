"""The Transformers backend: many sequences decoding together in one batched KV cache.

How (and why not transformers' own continuous-batching manager; see docs/LOADERS.md):
each new sequence is prefilled alone (so its prompt is computed exactly as it would be
alone), then its KV joins one left-padded batch cache; every step feeds one token per
sequence through a single forward pass, with each row's own positions and a padding
mask; a finished sequence's row is cut out and the padding every row shares is trimmed.
The engine samples each row with that request's own chain, and a decode step attends
row by row over each row's own keys (webui/loaders/row_attention.py), so requests stay
independent: a greedy reply is the same alone or beside seven others, in bf16 too.

A sequence's KV, when it ends, goes to a bounded prefix cache: a later prompt that starts
with the same tokens (the next chat turn, a regenerate) computes only what is new.

Caches with anything but plain full-attention layers (sliding windows, linear attention)
are not merged or reused: such a model decodes one sequence at a time, and says so in
its capabilities.
"""

from __future__ import annotations

import inspect
import logging
import os

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from webui.generation.backend import Capabilities, OutOfMemory
from webui.generation.embedding import mean_pool
from webui.generation.params import SamplingParams
from webui.generation.prefix_cache import MIN_REUSE_TOKENS, PrefixCache
from webui.loaders.row_attention import linear_rows_invariant, use_row_attention
from webui.steer.hooks import row_additions, steer_shape, steered

log = logging.getLogger(__name__)

GIB = 1 << 30


class HFSlot:
    """One sequence: the tokens its KV covers, and its place in the batch."""

    __slots__ = ("logits", "cached_tokens", "fed", "kv", "row", "reusable", "prompt", "steer")

    def __init__(self, logits: torch.Tensor | None, fed: list[int], kv: DynamicCache, cached_tokens: int,
                 reusable: bool = True, prompt: list[int] | None = None, steer=None):
        self.logits = logits
        # Its control vectors (webui/steer/library.py Steering), None when not steered; a
        # steered KV is never kept for reuse (it belongs to that steering only).
        self.steer = steer
        # A begun prompt (prefill reads it in pieces): its tokens, all of them.
        self.prompt = prompt
        # False when an extension fed embeddings: the KV then belongs to no token ids.
        self.reusable = reusable
        self.fed = fed  # tokens whose keys and values are in the cache, in order
        self.kv: DynamicCache | None = kv  # its own cache until it joins the batch
        self.cached_tokens = cached_tokens
        self.row = -1


def plain_layers(model) -> bool:
    """True when every layer of the model's cache is an ordinary growing KV layer."""
    try:
        probe = DynamicCache(config=model.config)
    except Exception:  # an unusual config: be conservative
        return False
    return bool(probe.layers) and all(type(layer) is DynamicLayer for layer in probe.layers)


def computes_in_fp32(model) -> bool:
    """Whether activations (and so the KV cache) are fp32: fp32 weights, or fp16 packed
    for fbgemm, which computes in fp32.  cpu-int8 keeps fp32 parameters around its int8
    layers but multiplies in bf16 (webui/loaders/cpu_int8.py), so it is not."""
    from webui.loaders.cpu_int8 import Int8Linear

    if model.dtype != torch.float32:
        return False
    return not any(isinstance(module, Int8Linear) for module in model.modules())


def cache_keyword(model) -> str:
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def kv_bytes_per_token(model) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    dtype = model.dtype if model.dtype.is_floating_point else torch.float16
    return 2 * config.num_hidden_layers * kv_heads * head_dim * dtype.itemsize


def default_kv_budget(device: str) -> int:
    """Memory the batch's KV cache may take when the user sets no limit: most of the
    GPU's free memory, or half of the RAM still available."""
    if device.startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free * 0.8)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError):
        return 4 * GIB


class TransformersBackend:
    def __init__(self, loaded, max_batch: int = 8, kv_budget: int | None = None,
                 prefix_cache_bytes: int = 1 * GIB, prefill_chunk: int = 0, prompt_lookup: int = 0):
        self._loaded = loaded  # the LoadedModel: a LoRA swaps its .model in place
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        # A vision model's processor (AutoProcessor): images -> placeholder tokens + pixels.
        self.processor = getattr(loaded, "processor", None)
        self._token_types: bool | None = None  # whether forward reads token_type_ids (hf_vision.py)
        mergeable = plain_layers(loaded.model)
        shape = steer_shape(loaded.model)
        if mergeable and max_batch > 1:
            # A reply must not depend on what it is batched with (row_attention.py says why).
            self.row_attention = use_row_attention(loaded.model)
        else:
            self.row_attention = False
        self.capabilities = Capabilities(
            max_batch=max_batch if mergeable else 1, prefix_cache=mergeable and prefix_cache_bytes > 0,
            # The engine's own chain runs on these logits: every sampler, guidance and
            # an extension's input embeddings are honoured.
            logprobs=True, guidance=True, input_embeddings=True, embeddings=True,
            # fp32 arithmetic: rows agree to fp32 rounding.  16-bit: only where this
            # machine's kernels keep rows exactly independent (asked, not assumed).
            batch_invariant=self.row_attention and (computes_in_fp32(loaded.model)
                                                    or linear_rows_invariant(loaded.model)),
            reuse_invariant=computes_in_fp32(loaded.model),
            vision=self.processor is not None,
            # Drafts are verified on a sequence's own cache, which only a plain one can cut.
            prompt_lookup=prompt_lookup if mergeable else None,
            # Every sampler (None: all); without prompt lookup, a request asking for
            # drafts is refused by name, not ignored.
            samplers=None if mergeable else frozenset(SamplingParams.model_fields) - {"prompt_lookup_num_tokens"}
            - ({"control_vectors"} if shape is None else set()),
            prefill_chunk=prefill_chunk if mergeable else 0,
            # Control vectors: a per-row addition to the decoder layers' output (webui/steer/hooks.py).
            steering=shape, steer_rows=True,
        )
        self.kv_budget = kv_budget if kv_budget is not None else default_kv_budget(self.device)
        self.token_bytes = kv_bytes_per_token(loaded.model)
        self.prefix_cache = PrefixCache(prefix_cache_bytes)
        self._cache_model = loaded.model
        # transformers renamed forward's `past_key_values` to `cache` during 5.x; speak
        # whichever this installed version (and model class) understands.
        self._cache_kw = cache_keyword(loaded.model)
        self._rows: list[HFSlot] = []
        self._batch: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [rows, length]; 0 = left padding
        self._padded = False
        # The batch's per-row additions, kept while the rows' steerings are the same ones.
        self._additions: tuple[tuple, dict[int, torch.Tensor]] = ((), {})

    # -- what the engine asks ------------------------------------------------------
    @property
    def model(self):
        return self._loaded.model

    def vocab_size(self) -> int:
        head = self.model.get_output_embeddings()
        # A cpu-int8 head (webui/loaders/cpu_int8.py) has no float `weight`, only its shape.
        rows = getattr(head, "out_features", None)
        return rows if isinstance(rows, int) else head.weight.shape[0]

    def eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def can_admit(self, running: int, prompt_tokens: int, new_tokens: int) -> bool:
        if running >= self.capabilities.max_batch:
            return False
        if running == 0:
            return True  # one sequence always runs: its own failure says what is wrong
        length = max(self._length() + new_tokens, prompt_tokens + new_tokens)
        return (running + 1) * length * self.token_bytes <= self.kv_budget

    def guidance_processor(self, scale: float, negative_ids: list[int]):
        from transformers import UnbatchedClassifierFreeGuidanceLogitsProcessor

        negative = torch.tensor([negative_ids], device=self.device)
        return UnbatchedClassifierFreeGuidanceLogitsProcessor(scale, self.model, negative)

    def clear_cache(self) -> None:
        self.prefix_cache.clear()

    # -- sequences ---------------------------------------------------------------------
    def encode_images(self, text: str, images: tuple):
        """The prompt's ids with each image expanded by the model's processor, and the
        pixel tensors that go with them (webui/loaders/hf_vision.py)."""
        from webui.loaders.hf_vision import encode_images, takes_token_types

        if self._token_types is None:  # read off forward's signature once, not per request
            self._token_types = takes_token_types(self.model)
        return encode_images(self.processor, self.tokenizer, text, images, self.device, self.model.dtype,
                             token_types=self._token_types)

    def _reused(self, key: list[int], reuse: bool, embeds, vision) -> tuple[DynamicCache, int]:
        """A fresh cache for one sequence, holding the longest cached prefix of `key`."""
        if self.model is not self._cache_model:  # a LoRA came or went: old KV is stale
            self.prefix_cache.clear()
            self._cache_model = self.model
        reused = 0
        cache = DynamicCache(config=self.model.config)
        if embeds is None and reuse and self.capabilities.prefix_cache:
            entry, reused = self.prefix_cache.lookup(key)
            if vision is not None:
                reused = vision.reuse_point(reused)  # never inside an image
                if reused < MIN_REUSE_TOKENS:
                    entry, reused = None, 0
            if entry is not None:
                for layer, (keys, values) in zip(cache.layers, entry.value, strict=True):
                    layer.update(keys[..., :reused, :], values[..., :reused, :])
        return cache, reused

    def _steering(self, rows: list[HFSlot]) -> dict[int, torch.Tensor]:
        """Layer -> [rows, 1, hidden] addition for these rows; {} when none is steered."""
        steers = tuple(slot.steer for slot in rows)
        if all(s is None for s in steers):
            return {}
        kept, additions = self._additions
        if len(kept) != len(steers) or any(a is not b for a, b in zip(kept, steers, strict=True)):
            additions = row_additions(steers, self.device, self.model.dtype)
            self._additions = (steers, additions)
        return additions

    @torch.inference_mode()
    def start(self, ids: list[int], embeds: torch.Tensor | None = None, reuse: bool = True,
              vision=None, steer=None) -> HFSlot:
        # A vision prompt is cached under its key: image placeholders stand for the image's content.
        key = vision.key if vision is not None else ids
        cache, reused = self._reused(key, reuse and steer is None, embeds, vision)
        pixels = dict(vision.inputs) if vision is not None and vision.needs_pixels(reused) else {}
        if "token_type_ids" in pixels:  # per prompt position: the part computed now
            pixels["token_type_ids"] = pixels["token_type_ids"][:, reused:]
        additions = row_additions([steer], self.device, self.model.dtype) if steer is not None else {}
        try:
            with steered(self.model, additions):
                if embeds is not None:
                    out = self.model(inputs_embeds=embeds, **{self._cache_kw: cache}, use_cache=True,
                                     logits_to_keep=1)
                else:
                    new = torch.tensor([ids[reused:]], device=self.device)
                    positions = torch.arange(reused, len(ids), device=self.device).unsqueeze(0)
                    out = self.model(input_ids=new, position_ids=positions, **{self._cache_kw: cache},
                                     use_cache=True, logits_to_keep=1, **pixels)
        except torch.OutOfMemoryError as exc:
            del cache
            self._free()
            raise OutOfMemory(f"out of memory reading a {len(ids)}-token prompt") from exc
        slot = HFSlot(out.logits[:, -1, :], list(key), cache, reused, reusable=embeds is None and steer is None,
                      steer=steer)
        self._join(slot)
        return slot

    def begin(self, ids: list[int], reuse: bool = True) -> HFSlot:
        """A sequence holding its cached prefix; prefill() reads the rest a piece at a time."""
        cache, reused = self._reused(ids, reuse, None, None)
        return HFSlot(None, list(ids[:reused]), cache, reused, prompt=list(ids))

    @torch.inference_mode()
    def prefill(self, slot: HFSlot, tokens: int) -> bool:
        """Read the next `tokens` of a begun prompt into its own cache (the batch is not
        touched); the last piece sets its logits and joins it to the batch."""
        done = len(slot.fed)
        end = min(len(slot.prompt), done + max(1, tokens))
        new = torch.tensor([slot.prompt[done:end]], device=self.device)
        positions = torch.arange(done, end, device=self.device).unsqueeze(0)
        try:
            out = self.model(input_ids=new, position_ids=positions, **{self._cache_kw: slot.kv}, use_cache=True,
                             logits_to_keep=1)
        except torch.OutOfMemoryError as exc:
            for layer in slot.kv.layers:  # the piece is read again, whole, by a retry
                layer.keys, layer.values = layer.keys[..., :done, :], layer.values[..., :done, :]
            self._free()
            raise OutOfMemory(f"out of memory reading a {len(slot.prompt)}-token prompt") from exc
        slot.fed.extend(slot.prompt[done:end])
        if end < len(slot.prompt):
            return False
        slot.logits, slot.prompt = out.logits[:, -1, :], None
        self._join(slot)
        return True

    @torch.inference_mode()
    def verify(self, slot: HFSlot, ids: list[int]) -> torch.Tensor:
        """Feed several tokens to the only sequence in the batch (drafts to check): one
        forward, one row of logits per token.  Its row has no padding (a lone row's is
        trimmed), so this is the same computation as a prompt read after a cached prefix."""
        if self._rows != [slot] or self._padded:
            raise RuntimeError("verify() needs the slot to be the only running sequence")
        before = len(slot.fed)
        inputs = torch.tensor([ids], device=self.device)
        positions = torch.arange(before, before + len(ids), device=self.device).unsqueeze(0)
        try:
            with steered(self.model, self._steering(self._rows)):
                out = self.model(input_ids=inputs, position_ids=positions, **{self._cache_kw: self._batch},
                                 use_cache=True)
        except torch.OutOfMemoryError as exc:
            self._cut(before)
            self._free()
            raise OutOfMemory("out of memory checking drafted tokens") from exc
        slot.fed.extend(ids)
        self._mask = torch.ones(1, len(slot.fed), dtype=torch.long, device=self.device)
        return out.logits[0]

    def rewind(self, slot: HFSlot, tokens: int) -> None:
        """Forget the last `tokens` fed to the only running sequence (rejected drafts)."""
        if tokens <= 0:
            return
        if self._rows != [slot]:
            raise RuntimeError("rewind() needs the slot to be the only running sequence")
        keep = len(slot.fed) - tokens
        del slot.fed[keep:]
        self._cut(keep)
        self._mask = self._mask[:, :keep]

    def _cut(self, length: int) -> None:
        for layer in self._batch.layers:
            if layer.keys.shape[-2] > length:
                layer.keys, layer.values = layer.keys[..., :length, :], layer.values[..., :length, :]

    @torch.inference_mode()
    def embed(self, batch: list[list[int]]) -> torch.Tensor:
        """Mean of the last hidden state over each sequence's tokens (webui/generation/embedding.py).

        Right padding: with causal attention a real token never sees the padding after
        it, and its positions are the ones it has alone, so a row comes out as it would
        alone (to float rounding).  No cache: the running batch's KV is not touched."""
        longest = max(len(ids) for ids in batch)
        ids = torch.zeros(len(batch), longest, dtype=torch.long)
        mask = torch.zeros(len(batch), longest, dtype=torch.long)
        for row, tokens in enumerate(batch):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        try:
            # logits_to_keep=1: the output layer runs for one position, not every token.
            out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False,
                             logits_to_keep=1)
        except torch.OutOfMemoryError as exc:
            self._free()
            raise OutOfMemory(f"out of memory embedding {len(batch)} inputs of up to {longest} tokens") from exc
        return mean_pool(out.hidden_states[-1], mask).cpu()

    def _join(self, slot: HFSlot) -> None:
        """Add a prefilled sequence's KV to the batch, left-padding whichever is shorter."""
        own, slot.kv = slot.kv, None
        length = len(slot.fed)
        if self._batch is None:
            self._batch, self._rows = own, [slot]
            self._mask = torch.ones(1, length, dtype=torch.long, device=self.device)
            slot.row = 0
            return
        total = self._length()
        if length > total:  # the newcomer is longer: pad every row already there
            for layer in self._batch.layers:
                layer.keys, layer.values = _pad_left(layer.keys, length - total), _pad_left(layer.values, length - total)
            self._mask = torch.nn.functional.pad(self._mask, (length - total, 0))
            total = length
        for layer, mine in zip(self._batch.layers, own.layers, strict=True):
            layer.keys = torch.cat([layer.keys, _pad_left(mine.keys, total - length)])
            layer.values = torch.cat([layer.values, _pad_left(mine.values, total - length)])
        row_mask = torch.ones(1, total, dtype=torch.long, device=self.device)
        row_mask[:, : total - length] = 0
        self._mask = torch.cat([self._mask, row_mask])
        slot.row = len(self._rows)
        self._rows.append(slot)
        self._padded = bool((self._mask[:, 0] == 0).any())

    @torch.inference_mode()
    def step(self, slots: list[HFSlot], tokens: list[int]) -> torch.Tensor:
        if len(slots) != len(self._rows):
            raise RuntimeError("step() must be given every running sequence")
        ordered = [0] * len(slots)
        for slot, token in zip(slots, tokens, strict=True):
            ordered[slot.row] = token
        inputs = torch.tensor(ordered, device=self.device).unsqueeze(1)
        positions = torch.tensor([len(s.fed) for s in self._rows], device=self.device).unsqueeze(1)
        mask = torch.nn.functional.pad(self._mask, (0, 1), value=1)
        before = self._length()
        try:
            with steered(self.model, self._steering(self._rows)):
                out = self.model(input_ids=inputs, attention_mask=mask if self._padded else None,
                                 position_ids=positions, **{self._cache_kw: self._batch}, use_cache=True)
        except torch.OutOfMemoryError as exc:
            self._cut(before)  # layers already grown by this step: the batch is as it was
            self._free()
            raise OutOfMemory("out of memory decoding a batch") from exc
        self._mask = mask
        for slot, token in zip(slots, tokens, strict=True):
            slot.fed.append(token)
        logits = out.logits[:, -1, :]
        if all(slot.row == i for i, slot in enumerate(slots)):
            return logits
        return logits[torch.tensor([slot.row for slot in slots], device=logits.device)]

    def finish(self, slot: HFSlot, keep: bool) -> None:
        if slot.row < 0 or slot.row >= len(self._rows) or self._rows[slot.row] is not slot:
            return
        row = slot.row
        pad = int((self._mask[row] == 0).sum())
        if keep and slot.reusable and self.capabilities.prefix_cache and self.model is self._cache_model:
            kv = [(layer.keys[row : row + 1, :, pad:, :].clone(), layer.values[row : row + 1, :, pad:, :].clone())
                  for layer in self._batch.layers]
            nbytes = sum(k.numel() * k.element_size() * 2 for k, _ in kv)
            self.prefix_cache.add(slot.fed, kv, nbytes)
        slot.row = -1
        del self._rows[row]
        if not self._rows:
            self._batch, self._mask, self._padded = None, None, False
            return
        keep_rows = torch.tensor([i for i in range(len(self._rows) + 1) if i != row], device=self.device)
        for layer in self._batch.layers:
            layer.keys, layer.values = layer.keys[keep_rows], layer.values[keep_rows]
        self._mask = self._mask[keep_rows]
        for i, other in enumerate(self._rows):
            other.row = i
        shared = int((self._mask == 0).all(dim=0).long().cumprod(0).sum())  # columns padding in every row
        if shared:
            for layer in self._batch.layers:
                layer.keys, layer.values = layer.keys[..., shared:, :], layer.values[..., shared:, :]
            self._mask = self._mask[:, shared:]
        self._padded = bool((self._mask[:, 0] == 0).any())

    def _length(self) -> int:
        return 0 if self._mask is None else self._mask.shape[1]

    def _free(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _pad_left(tensor: torch.Tensor, n: int) -> torch.Tensor:
    if n <= 0:
        return tensor
    return torch.nn.functional.pad(tensor, (0, 0, n, 0))
