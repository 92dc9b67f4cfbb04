"""The seam between the engine and a model backend.

A loader returns a LoadedModel whose `backend` the engine drives.  The engine keeps
everything that is the same for every backend: the queue and fair scheduling, per-request
cancel, sampling (the chain of webui/generation/chain.py), stop strings, incremental
detokenization, extension hooks, stats and log-probabilities.  A backend only turns
token ids into next-token logits, for several sequences at once if it can:

    slot = backend.start(ids)            # prefill one sequence; slot.logits: its next-token logits
                                         # (reuse=False: compute it whole, no prefix-cache hit)
    logits = backend.step(slots, tokens) # feed one token to each slot; one row of logits each
    backend.finish(slot, keep=True)      # release it (keep=True: its KV may serve a later prompt)
    vectors = backend.embed(batch)       # optional: pooled hidden states, one row per sequence

and, where its capabilities say so:

    slot = backend.begin(ids)            # prefill_chunk: a sequence whose prompt is read later,
    done = backend.prefill(slot, n)      # n tokens at a time (True: read; slot.logits set, in the batch)
    logits = backend.verify(slot, ids)   # speculative: feed several tokens to the only running
    backend.rewind(slot, n)              # sequence (one row of logits each); forget its last n

It declares what it can do in `Capabilities`, and the UI and the API read those instead of
assuming them.  docs/LOADERS.md walks through adding one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from webui.generation.request import GenerationError


GIB = 1 << 30


@dataclass(frozen=True)
class ServingOptions:
    """How a backend serves concurrent requests (server-wide: --max-batch and friends)."""

    # Sequences decoded together at most.
    max_batch: int = 8
    # Memory for earlier sequences' KV kept for reuse (least recently used dropped); 0 = off.
    prefix_cache_bytes: int = 1 * GIB
    # Memory the running batch's KV cache may take; None = decided from free memory at load.
    kv_budget_bytes: int | None = None
    # A new prompt is read this many tokens at a time while other sequences decode
    # (their streams keep flowing between the pieces); 0 = read whole.
    prefill_chunk: int = 512
    # Tokens drafted by prompt lookup for a request that does not say (its
    # prompt_lookup_num_tokens); 0 = only for requests that ask (docs/PERFORMANCE.md says
    # why it is not on by default yet).
    prompt_lookup: int = 0


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do.  Every default says no: a backend declares what it does, so
    one that forgets a field has the API refuse it by name rather than ignore it."""

    # Sequences decoded together in one step; 1 = one request at a time.
    max_batch: int = 1
    # A new prompt that starts like an earlier one reuses that prefix's KV cache.
    prefix_cache: bool = False
    # Log-probabilities of generated tokens can be reported.
    logprobs: bool = False
    # SamplingParams fields this backend honours (besides the reply's length and seed);
    # None = all of them (the engine's own chain runs on the logits).  The API refuses,
    # and the Parameters tab marks, the rest.
    samplers: frozenset[str] | None = frozenset()
    # Classifier-free guidance (needs a second forward pass over the negative prompt).
    guidance: bool = False
    # Per-token embeddings from an extension's tokenizer_modifier can be fed in.
    input_embeddings: bool = False
    # Text embeddings (pooled hidden states) can be computed: Backend.embed.
    embeddings: bool = False
    # A row's logits do not depend on what else is in the batch (bit for bit, or to
    # fp32 rounding); without it a `deterministic` request decodes in a batch of its own.
    batch_invariant: bool = False
    # A prompt partly served from the prefix cache gets the logits it would get computed
    # whole (to fp32 rounding); without it a `deterministic` request computes its prompt
    # whole.  16-bit arithmetic rounds a step differently from a prompt read at once.
    reuse_invariant: bool = False
    # Images in the prompt are read (RenderedPrompt.images): the backend has
    # encode_images(text, images) -> VisionPrompt, and start() takes its `vision`.
    vision: bool = False
    # Speculative decoding: verify(slot, ids) feeds drafted tokens to the only running
    # sequence in one forward, rewind(slot, n) forgets the rejected ones.  None = cannot;
    # else the tokens prompt lookup drafts for a request that does not say (0 = none).
    prompt_lookup: int | None = None
    # A new prompt beside running sequences is read this many tokens at a time
    # (begin/prefill), decoding steps in between; 0 = read whole.
    prefill_chunk: int = 0
    # Control vectors can be added (webui/steer/): (hidden size, decoder layers) of the
    # model, which a vector file must fit; None = cannot steer (control_vectors refused).
    steering: tuple[int, int] | None = None
    # Each row of a batch has its own control vectors; without it (llama.cpp: one vector
    # per context) requests steered differently decode in separate batches.
    steer_rows: bool = False

    def determinism_note(self) -> str | None:
        """What a greedy or seeded reply may depend on here, for the Parameters tab."""
        parts = []
        if self.max_batch > 1 and not self.batch_invariant:
            parts.append("what it is batched with")
        if self.prefix_cache and not self.reuse_invariant:
            parts.append("a prefix-cache hit")
        if self.prefill_chunk and not self.reuse_invariant:
            parts.append("a prompt read in pieces beside other requests")
        if not parts:
            return None
        note = f"A greedy or seeded reply can change by a token with {' or '.join(parts)} on this model"
        if self.ignores({"deterministic"}):  # a remote engine that does not take it
            return note + "."
        return note + "; tick **deterministic** to compute each reply as it would be alone."

    def ignores(self, changed: set[str]) -> list[str]:
        """Which of these changed sampling fields this backend would not honour."""
        if self.samplers is not None:
            return sorted(changed - self.samplers)
        # "All of them" means all the engine's chain runs; steering is the model's own.
        return ["control_vectors"] if "control_vectors" in changed and self.steering is None else []


class Slot(Protocol):
    """One sequence inside a backend: its next-token logits ([1, vocab]) after start()."""

    logits: torch.Tensor
    # Prompt tokens served from the prefix cache rather than computed.
    cached_tokens: int


class OutOfMemory(RuntimeError):
    """The backend ran out of device memory; `slot` is the sequence it could not fit
    (None: the whole step failed and nothing was changed)."""

    def __init__(self, message: str, slot: Any = None):
        super().__init__(message)
        self.slot = slot


class BackendCrashed(GenerationError):
    """The process computing the model died (a native crash: a signal, or an exit) while
    it served a call; the requests it was decoding end with this message while the
    model is reloaded (webui/loaders/gguf_process.py).  Not the request's fault, and a
    retry shortly after is answered: 503."""

    status, code = 503, "backend_crashed"


class Backend(Protocol):
    capabilities: Capabilities
    tokenizer: Any
    device: str

    def vocab_size(self) -> int:
        """Rows of the output layer: the ids a logit exists for."""

    def eos_ids(self) -> set[int]:
        """Token ids that end a reply."""

    def can_admit(self, running: int, prompt_tokens: int, new_tokens: int) -> bool:
        """Whether one more sequence of this size fits beside `running` others."""

    def start(self, ids: list[int], embeds: torch.Tensor | None = None, reuse: bool = True) -> Slot:
        """Prefill one sequence (reusing a cached prefix where it can, unless not `reuse`);
        raises OutOfMemory."""

    def step(self, slots: list[Slot], tokens: list[int]) -> torch.Tensor:
        """Feed tokens[i] to slots[i]; return logits, one row per slot; raises OutOfMemory."""

    def finish(self, slot: Slot, keep: bool) -> None:
        """Release a sequence; with keep, its KV may be cached for a later prompt."""

    def guidance_processor(self, scale: float, negative_ids: list[int]) -> Any:
        """A LogitsProcessor for classifier-free guidance against `negative_ids`."""

    def clear_cache(self) -> None:
        """Drop whatever the backend keeps between requests (prefix cache)."""

    def begin(self, ids: list[int], reuse: bool = True) -> Slot:
        """Only with capabilities.prefill_chunk: a sequence whose prompt (after any
        prefix-cache hit) is read by prefill(); slot.logits is None until then."""

    def prefill(self, slot: Slot, tokens: int) -> bool:
        """Read up to `tokens` more of a begun prompt; True once it is read whole (its
        logits set, the sequence in the batch).  Raises OutOfMemory."""

    def verify(self, slot: Slot, ids: list[int]) -> torch.Tensor:
        """Only with capabilities.prompt_lookup not None, and `slot` the only running
        sequence: feed `ids`; one row of logits per id (what comes after it)."""

    def rewind(self, slot: Slot, tokens: int) -> None:
        """Forget the last `tokens` fed to `slot` (drafts that were not accepted)."""

    def embed(self, batch: list[list[int]]) -> torch.Tensor:
        """One vector per sequence ([len(batch), hidden], float32, on the CPU), from one
        forward pass over the padded batch; only when capabilities.embeddings.  Touches
        no running sequence (no KV is kept).  Raises OutOfMemory."""
