"""Text embeddings: a job on the engine's queue, and the pooling and normalising math.

An embedding request runs on the engine's one model thread, like a generation: it
waits in the same fair queue (webui/generation/scheduler.py), and once admitted it holds
a place of its owner's like a running reply.  Its inputs go through `Backend.embed` in
groups, one group between two decoding steps: of at most `STEP_TOKENS` padded tokens
while replies decode, so they keep moving (one 2,048-input call, run in one go, stalled
every stream 16.6 s: hostile round 2, N20), and of `BATCH_TOKENS` when nothing else
runs.  So no request thread ever calls the model while it decodes, and a flood of
embeddings takes its turn like anyone else's requests.

Pooling (the backend's side, webui/loaders/hf_backend.py and gguf_backend.py): the mean
of the last hidden state (after the model's final norm) over the sequence's own tokens,
padding excluded.  Mean pooling because a decoder model was trained for none: the last
token alone leans on the final words, the mean reads the whole text.
The API L2-normalises it (`normalize`); `dimensions` keeps the first d components and
normalises again, which is exact for models trained for it (Matryoshka) and a lossy
projection for the rest.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from webui.errors import AppError
from webui.generation.request import CancelToken, GenerationError, GenerationRequest

# Padded tokens per forward pass (rows x longest row): bounds the activations' memory
# whatever a request sends; a request with more is split into several passes.
BATCH_TOKENS = 16_384
# The same while replies decode: a decoding step waits for at most one such group.  On
# the 2-core machine of docs/PERFORMANCE.md, 2,048 tokens of the demo model are about
# one decoding step's worth of work; bigger groups barely speed embeddings up.
STEP_TOKENS = 2_048


class EmbeddingsUnsupported(AppError, ValueError):
    """The model asked for cannot compute embeddings (its backend says so)."""

    code = "unsupported_model"


class EmbeddingJob:
    """Token ids to embed, queued like a GenerationStream (the engine's queue reads
    `request.owner`, `request.cancel`, `started`, `queued_at` and `_mailbox`); the caller
    blocks in `result()` until the model thread has answered."""

    def __init__(self, inputs: list[list[int]], owner: str, cancel: CancelToken, mailbox):
        self.inputs = inputs
        self.request = GenerationRequest("", cancel=cancel, owner=owner)
        self.started = False
        self.queued_at = time.monotonic()
        self._mailbox = mailbox
        self.done = 0  # inputs embedded so far (the model thread's alone)
        self.parts: list[torch.Tensor] = []

    @property
    def owner(self) -> str:
        return self.request.owner

    def next_group(self, budget: int) -> list[list[int]]:
        """The next inputs to embed in one pass (none when all are done)."""
        end = group_end(self.inputs, self.done, budget)
        return self.inputs[self.done:end]

    def add(self, rows: int, vectors: torch.Tensor) -> bool:
        """Record a group's vectors; True when every input has its vector."""
        self.parts.append(vectors)
        self.done += rows
        return self.done >= len(self.inputs)

    def result(self) -> torch.Tensor:
        """The pooled vectors, one row per input (not normalised)."""
        while True:
            _, final = self._mailbox.take(self._mailbox.interval)
            if final is None:
                continue
            kind, value = final
            if kind == "error":  # an AppError keeps its type and field (webui/errors.py)
                raise value if isinstance(value, AppError) else GenerationError(value)
            if not isinstance(value, torch.Tensor):  # cancelled while it waited
                raise GenerationError("the embedding request was cancelled")
            return value

    def finish(self, vectors: torch.Tensor) -> None:
        self._mailbox.finish("done", vectors)

    def fail(self, error: AppError) -> None:
        self._mailbox.finish("error", error)


def group_end(inputs: list[list[int]], start: int, budget: int) -> int:
    """The end of the group starting at `start`: as many inputs as fit in `budget` padded
    tokens (rows x longest row), at least one."""
    longest, end = 0, start
    while end < len(inputs):
        longest_with = max(longest, len(inputs[end]))
        if end > start and longest_with * (end - start + 1) > budget:
            break
        longest, end = longest_with, end + 1
    return end


def batches(inputs: list[list[int]], budget: int = BATCH_TOKENS) -> Iterator[list[list[int]]]:
    """Consecutive groups of inputs, in order, whose padded size (rows x longest row)
    stays within `budget` (a single longer input is a group of its own)."""
    start, longest = 0, 0
    for index, ids in enumerate(inputs):
        longest_with = max(longest, len(ids))
        if index > start and longest_with * (index - start + 1) > budget:
            yield inputs[start:index]
            start, longest_with = index, len(ids)
        longest = longest_with
    if start < len(inputs):
        yield inputs[start:]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `hidden` ([rows, length, width]) over the positions where `mask` is 1, in
    fp32 (a bf16 sum over hundreds of positions would round at every addition)."""
    hidden = hidden.float()
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def normalize(vectors: torch.Tensor, dimensions: int | None = None) -> torch.Tensor:
    """L2-normalised rows, cut to the first `dimensions` components first when given."""
    if dimensions is not None:
        vectors = vectors[:, :dimensions]
    return torch.nn.functional.normalize(vectors.float(), p=2.0, dim=-1)
