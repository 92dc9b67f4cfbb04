"""The llama.cpp backend: GGUF models, many sequences decoded in one llama_decode call.

Built on llama-cpp-python's low-level bindings (the C API), not its `Llama` class,
because `Llama` runs one sequence at a time.  One llama.cpp context holds a KV cache of
`n_ctx` cells shared by every sequence (`kv_unified`), each sequence with its own id:

- `start` prefills a prompt into a free sequence id (in n_batch-token chunks) and
  returns its last position's logits;
- `step` puts one token of every running sequence into one `llama_batch` (each with
  its own sequence id and position), decodes it in one call, and returns one logits
  row per sequence;
- `finish` keeps a finished sequence's KV in place (it stays in the cache under its
  id) so that a later prompt starting with the same tokens copies that prefix with
  `llama_memory_seq_cp` (in a unified cache a copy only tags cells with a second id:
  no data moves) and computes only the rest.  Kept sequences are the first thing
  evicted when the cache runs out of cells.

The engine runs its own sampler chain on the logits (webui/generation/chain.py), as
for Transformers models: every sampler behaves the same on either loader and a seed
gives the same choices.  What this backend cannot do is declared in `capabilities`:
classifier-free guidance and extension input embeddings.

With an image projector (`projector`, webui/loaders/gguf_vision.py) the model reads
images: `encode_images` cuts a prompt into text and image chunks, `start` feeds the text
chunks as above and has libmtmd encode the images into the sequence's cells.  The
sequence's tokens, for the prefix cache, are the vision prompt's key, where each image's
positions carry numbers drawn from its content (webui/generation/vision.py).
"""

from __future__ import annotations

import ctypes
import logging
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from webui.generation.backend import Capabilities, OutOfMemory
from webui.generation.params import SamplingParams
from webui.generation.prefix_cache import MIN_REUSE_TOKENS, shared_prefix
from webui.generation.request import GenerationError

log = logging.getLogger(__name__)

# Classifier-free guidance needs a second sequence decoded beside each request; not
# built for llama.cpp (yet), so refused by name rather than silently ignored.
# Speculative decoding is the Transformers backend's only (webui/generation/speculative.py).
UNSUPPORTED_SAMPLERS = frozenset({"guidance_scale", "negative_prompt", "prompt_lookup_num_tokens"})
SUPPORTED_SAMPLERS = frozenset(SamplingParams.model_fields) - UNSUPPORTED_SAMPLERS


NO_GUIDANCE = "classifier-free guidance (guidance_scale) is not available for llama.cpp models"
NO_EMBEDS = "llama.cpp models cannot take input embeddings from an extension"


def admits(max_batch: int, n_ctx: int, used: int, running: int, wanted: int) -> bool:
    """Whether one more sequence of `wanted` tokens fits beside `running` others that hold
    `used` cells (shared with the worker process's proxy, webui/loaders/gguf_process.py)."""
    if running >= max_batch:
        return False
    if running == 0:
        return True  # one sequence always runs: its own failure says what is wrong
    return used + wanted <= n_ctx  # kept sequences give way


class LlamaSlot:
    """One sequence: its llama.cpp sequence id and the tokens its KV covers."""

    __slots__ = ("logits", "cached_tokens", "seq", "fed", "done")

    def __init__(self, seq: int, fed: list[int], cached_tokens: int):
        self.seq = seq
        self.fed = fed
        self.cached_tokens = cached_tokens
        self.logits: torch.Tensor | None = None
        self.done = False


class KeptSequences:
    """Finished sequences whose KV stays in the context, least recently used first."""

    def __init__(self) -> None:
        self._tokens: OrderedDict[int, tuple[int, ...]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tokens)

    def ids(self) -> list[int]:
        return list(self._tokens)

    def cells(self) -> int:
        return sum(len(t) for t in self._tokens.values())

    def best(self, ids: list[int]) -> tuple[int | None, int]:
        """The kept sequence sharing the longest prefix with `ids` (at most len - 1: the
        last prompt token is computed for its logits), if it is worth reusing."""
        ids = tuple(ids)  # compared with the kept tuples slice by slice (a list never equals a tuple)
        best, best_len = None, 0
        for seq, tokens in self._tokens.items():
            n = min(shared_prefix(tokens, ids), len(ids) - 1)
            if n > best_len:
                best, best_len = seq, n
        if best is None or best_len < MIN_REUSE_TOKENS:
            return None, 0
        self._tokens.move_to_end(best)
        return best, best_len

    def add(self, seq: int, tokens: list[int]) -> list[int]:
        """Keep `seq`; returns the kept ids it makes useless (their tokens are a prefix of it)."""
        new = tuple(tokens)
        covered = [s for s, t in self._tokens.items() if new[: len(t)] == t]
        for s in covered:
            del self._tokens[s]
        self._tokens[seq] = new
        return covered

    def pop_oldest(self) -> int | None:
        return self._tokens.popitem(last=False)[0] if self._tokens else None

    def pop(self, seq: int) -> None:
        self._tokens.pop(seq, None)


class LlamaCppBackend:
    def __init__(self, lib: Any, model: Any, ctx: Any, tokenizer: Any, *, n_ctx: int, n_batch: int,
                 max_batch: int, n_seq: int, prefix_cache: bool, projector: Any = None):
        self._lib = lib
        self._model = model
        self._ctx = ctx
        self._mem = lib.llama_get_memory(ctx)
        self.tokenizer = tokenizer
        self.device = "cpu"  # where the engine keeps logits and token ids
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.capabilities = Capabilities(
            max_batch=max_batch, prefix_cache=prefix_cache, logprobs=True, samplers=SUPPORTED_SAMPLERS,
            guidance=False, input_embeddings=False, embeddings=True, vision=projector is not None,
            # Control vectors: llama_set_adapter_cvec holds one per context, so a batch is
            # steered as a whole (the engine keeps differently steered requests apart).
            steering=(lib.llama_model_n_embd(model), lib.llama_model_n_layer(model)), steer_rows=False,
        )
        self._steer = None  # the Steering set on the context now (webui/steer/library.py), None: none
        self.projector = projector
        if projector is not None:
            tokenizer.image_marker = projector.marker
        self._vocab = tokenizer.vocab_size
        self._batch_size = max(n_batch, max_batch)
        self._batch = lib.llama_batch_init(self._batch_size, 0, 1)
        self._free = list(range(n_seq - 1, -1, -1))  # sequence ids not in use (pop() takes the lowest)
        self._running: dict[int, LlamaSlot] = {}
        self._kept = KeptSequences()
        self._closed = False
        # Where logits rows are written instead of a fresh tensor: the worker process's
        # shared memory (webui/loaders/gguf_worker.py); None in process.
        self.rows_out: np.ndarray | None = None

    # -- what the engine asks ------------------------------------------------------
    def vocab_size(self) -> int:
        return self._vocab

    def eos_ids(self) -> set[int]:
        return set(self.tokenizer.eog_ids)

    def can_admit(self, running: int, prompt_tokens: int, new_tokens: int) -> bool:
        used = sum(len(slot.fed) for slot in self._running.values())
        return admits(self.capabilities.max_batch, self.n_ctx, used, running, prompt_tokens + new_tokens)

    def guidance_processor(self, scale: float, negative_ids: list[int]):
        raise GenerationError(NO_GUIDANCE)

    def clear_cache(self) -> None:
        while (seq := self._kept.pop_oldest()) is not None:
            self._forget(seq)

    # -- images --------------------------------------------------------------------------
    def encode_images(self, text: str, images: tuple):
        """A VisionPrompt for `text` (libmtmd's marker where each image goes) and `images`:
        ids with each image's tokens as a run of placeholders, and the cache key."""
        from webui.generation.vision import ImageSpan, VisionPrompt, image_key

        chunks = self._chunks(text, images)
        try:
            pieces = chunks.pieces
        finally:
            chunks.close()
        placeholder = self.tokenizer.pad_token_id or 0
        ids: list[int] = []
        spans = []
        for piece in pieces:
            if piece.image is None:
                ids.extend(piece.tokens)
            else:
                spans.append(ImageSpan(len(ids), len(ids) + piece.size, (piece.image,)))
                ids.extend([placeholder] * piece.size)
        spans = tuple(spans)
        return VisionPrompt(ids, image_key(ids, spans, images), spans, tuple(images), {"text": text})

    def _chunks(self, text: str, images: tuple):
        if self.projector is None:
            raise GenerationError("this GGUF model has no image projector (mmproj) loaded")
        bos = self.tokenizer.bos_token
        return self.projector.tokenize(text, tuple(images), add_special=not (bos and text.startswith(bos)))

    def _feed_vision(self, slot: LlamaSlot, vision, reused: int) -> None:
        """Feed a vision prompt's chunks from position `reused` on (never inside an image:
        VisionPrompt.reuse_point), text as any prompt, images through the projector."""
        chunks = self._chunks(vision.inputs["text"], vision.images)
        try:
            position = 0
            for index, piece in enumerate(chunks.pieces):
                end = position + piece.length
                if end > reused:
                    if piece.image is None:
                        self._feed(slot, list(piece.tokens[max(reused - position, 0):]), max(reused, position),
                                   len(vision.ids))
                    else:
                        self.projector.encode(chunks, index, self._ctx, position, slot.seq, self.n_batch)
                        slot.fed.extend(vision.key[position:end])
                position = end
        finally:
            chunks.close()

    def _feed(self, slot: LlamaSlot, tokens: list[int], begin: int, prompt_tokens: int) -> None:
        """Decode `tokens` into `slot` from position `begin` on, n_batch at a time."""
        for at in range(0, len(tokens), self.n_batch):
            chunk = tokens[at : at + self.n_batch]
            self._fill([(token, begin + at + i, slot.seq) for i, token in enumerate(chunk)], last_only=True)
            self._decode(f"out of memory reading a {prompt_tokens}-token prompt")
            slot.fed.extend(chunk)

    # -- sequences ---------------------------------------------------------------------
    def _set_steering(self, steer) -> None:
        """Put `steer` on the context (None clears it); the running sequences must share it."""
        if steer is self._steer:
            return
        if self._running:  # the engine admits only requests steered as the running ones are
            if (steer.key if steer else ()) == (self._steer.key if self._steer else ()):
                return
            raise GenerationError("a request steered differently is running: llama.cpp steers a whole batch at once")
        self._apply_cvec(steer)
        self._steer = steer

    def _apply_cvec(self, steer) -> None:
        hidden, layers = self.capabilities.steering
        if steer is None:
            status = self._lib.llama_set_adapter_cvec(self._ctx, None, 0, hidden, -1, -1)
        else:
            data = steer.flat(layers)
            pointer = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            status = self._lib.llama_set_adapter_cvec(self._ctx, pointer, data.size, hidden, 1, layers - 1)
        if status != 0:
            raise GenerationError(f"llama.cpp refused the control vector (status {status})")

    def start(self, ids: list[int], embeds: torch.Tensor | None = None, reuse: bool = True,
              vision=None, steer=None) -> LlamaSlot:
        if embeds is not None:
            raise GenerationError(NO_EMBEDS)
        self._set_steering(steer)
        if steer is not None:
            reuse = False  # kept sequences hold unsteered states
        if not ids:
            raise GenerationError("empty prompt")
        if len(ids) > self.n_ctx:
            raise OutOfMemory(f"a {len(ids)}-token prompt does not fit the {self.n_ctx}-token context (--n-ctx)")
        key = list(vision.key) if vision is not None else ids  # what the kept sequences are matched on
        source, reused = self._kept.best(key) if reuse and self.capabilities.prefix_cache else (None, 0)
        if vision is not None and reused:
            reused = vision.reuse_point(reused)  # an image is encoded whole or not at all
            if reused < MIN_REUSE_TOKENS:
                source, reused = None, 0
        seq = self._take_id(keep=source)
        if source is not None:
            if source == seq:  # no free id: the kept sequence itself is continued
                self._lib.llama_memory_seq_rm(self._mem, seq, reused, -1)
            else:
                self._lib.llama_memory_seq_cp(self._mem, source, seq, 0, reused)
        slot = LlamaSlot(seq, list(key[:reused]), reused)
        self._running[seq] = slot
        try:
            if vision is not None:
                self._feed_vision(slot, vision, reused)
            else:
                self._feed(slot, ids[reused:], reused, len(ids))
        except BaseException:
            self._release(slot)
            raise
        slot.logits = self._rows(1, last=True)
        return slot

    def step(self, slots: list[LlamaSlot], tokens: list[int]) -> torch.Tensor:
        if len(slots) != len(self._running):
            raise RuntimeError("step() must be given every running sequence")
        self._fill([(token, len(slot.fed), slot.seq) for slot, token in zip(slots, tokens, strict=True)],
                   last_only=False)
        self._decode("out of memory decoding a batch")
        for slot, token in zip(slots, tokens, strict=True):
            slot.fed.append(token)
        return self._rows(len(slots), last=False)

    def finish(self, slot: LlamaSlot, keep: bool) -> None:
        if slot is None or slot.done or self._running.get(slot.seq) is not slot:
            return
        slot.done = True
        del self._running[slot.seq]
        if keep and self._steer is None and self.capabilities.prefix_cache and len(slot.fed) >= MIN_REUSE_TOKENS:
            for covered in self._kept.add(slot.seq, slot.fed):
                self._forget(covered)
        else:
            self._forget(slot.seq)
        if self._steer is not None and not self._running:  # the steered batch is over: the context is plain again
            self._apply_cvec(None)
            self._steer = None

    def embed(self, batch: list[list[int]]) -> torch.Tensor:
        """Mean of the last hidden state (after the output norm) over each sequence's tokens,
        as the Transformers backend pools (webui/generation/embedding.py).

        The context outputs per-token embeddings while this runs (llama_set_embeddings;
        a generation model's pooling type is "none"), each input in a sequence id of its
        own, several inputs packed into one llama_decode while they fit n_batch (no
        padding: every token carries its own sequence id and position); an input longer
        than n_batch is decoded in chunks.  Its KV is dropped at once; running sequences
        are not touched."""
        width = self._lib.llama_model_n_embd(self._model)
        sums = np.zeros((len(batch), width), dtype=np.float64)
        self._lib.llama_set_embeddings(self._ctx, True)
        if self._steer is not None:  # the running batch's vector is not the embedding's
            self._apply_cvec(None)
        try:
            for group in self._embedding_groups(batch):
                self._embed_group(batch, group, sums)
        finally:
            self._lib.llama_set_embeddings(self._ctx, False)
            if self._steer is not None:
                self._apply_cvec(self._steer)
        lengths = np.array([[max(1, len(ids))] for ids in batch], dtype=np.float64)
        return torch.from_numpy(sums / lengths).float()

    def _embedding_groups(self, batch: list[list[int]]) -> list[list[int]]:
        """Indices of inputs decoded together: whole inputs while their tokens fit n_batch
        and sequence ids are left (an input longer than n_batch goes alone)."""
        ids_left = max(1, len(self._free) + len(self._kept))
        groups: list[list[int]] = []
        tokens = 0
        for index, ids in enumerate(batch):
            if groups and tokens + len(ids) <= self.n_batch and len(groups[-1]) < ids_left:
                groups[-1].append(index)
                tokens += len(ids)
            else:
                groups.append([index])
                tokens = len(ids)
        return groups

    def _embed_group(self, batch: list[list[int]], group: list[int], sums: np.ndarray) -> None:
        seqs: list[int] = []
        try:
            for _ in group:
                seqs.append(self._take_id(keep=None))
            chunks = [[(index, seq, begin) for index, seq in zip(group, seqs, strict=True)
                       for begin in range(0, len(batch[index]), self.n_batch)]]
            if len(group) == 1:  # one input, maybe longer than n_batch: chunk by chunk
                chunks = [[entry] for entry in chunks[0]]
            for chunk in chunks:
                entries = [(token, begin + i, seq) for index, seq, begin in chunk
                           for i, token in enumerate(batch[index][begin : begin + self.n_batch])]
                self._fill(entries, last_only=False)
                self._decode(f"out of memory embedding {len(group)} inputs")
                rows = self._embeddings(len(entries), sums.shape[1])
                at = 0
                for index, _, begin in chunk:
                    n = len(batch[index][begin : begin + self.n_batch])
                    sums[index] += rows[at : at + n].sum(axis=0)
                    at += n
        finally:
            for seq in seqs:
                self._forget(seq)

    def _embeddings(self, n: int, width: int) -> np.ndarray:
        pointer = self._lib.llama_get_embeddings(self._ctx)
        if not pointer:
            raise RuntimeError("llama.cpp returned no embeddings")
        return np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(n, width)).copy()

    def close(self) -> None:
        """Free the context, the batch and the weights (called once, on unload)."""
        if self._closed:
            return
        self._closed = True
        if self.projector is not None:
            self.projector.close()
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(self._ctx)
        self._lib.llama_model_free(self._model)

    # -- inside ------------------------------------------------------------------------
    def _take_id(self, keep: int | None) -> int:
        """A free sequence id, evicting the oldest kept sequence (not `keep`) if need be;
        when only `keep` is left, it is taken over."""
        while not self._free:
            oldest = next((s for s in self._kept.ids() if s != keep), None)
            if oldest is None:
                if keep is None:
                    raise OutOfMemory("every sequence slot is busy")
                self._kept.pop(keep)
                return keep
            self._kept.pop(oldest)
            self._forget(oldest)
        return self._free.pop()

    def _forget(self, seq: int) -> None:
        self._lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
        self._free.append(seq)

    def _release(self, slot: LlamaSlot) -> None:
        slot.done = True
        self._running.pop(slot.seq, None)
        self._forget(slot.seq)

    def _fill(self, entries: list[tuple[int, int, int]], last_only: bool) -> None:
        """Write (token, position, sequence id) entries into the batch; logits for every
        entry, or only for the last."""
        batch = self._batch
        n = len(entries)
        for i, (token, pos, seq) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = not last_only
        if last_only:
            batch.logits[n - 1] = True
        batch.n_tokens = n

    def _decode(self, what: str) -> None:
        """llama_decode, evicting kept sequences while the KV cache has no room."""
        while True:
            status = self._lib.llama_decode(self._ctx, self._batch)
            if status == 0:
                return
            if status == 1:  # no room in the KV cache: llama.cpp left it as it was
                oldest = self._kept.pop_oldest()
                if oldest is not None:
                    self._forget(oldest)
                    continue
                raise OutOfMemory(f"{what} (the {self.n_ctx}-token context is full; raise --n-ctx)")
            raise RuntimeError(f"llama_decode failed with status {status}")

    def _rows(self, n: int, last: bool) -> torch.Tensor:
        """The logits of the batch's outputs ([n, vocab]), copied out of llama.cpp's buffer
        (the next decode overwrites it)."""
        if last:
            pointer = self._lib.llama_get_logits_ith(self._ctx, -1)
        else:
            pointer = self._lib.llama_get_logits(self._ctx)
        rows = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(n, self._vocab))
        if self.rows_out is not None:  # one copy, straight into the memory the server reads
            out = self.rows_out[:n]
            np.copyto(out, rows)
            return torch.from_numpy(out)
        return torch.from_numpy(rows.copy())
