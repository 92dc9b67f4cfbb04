"""Perplexity of the loaded model (with whatever LoRAs are applied) on a text, and the
table of results kept so 16/8/4-bit and base/LoRA runs can be compared side by side.

The text is scored with a sliding window of `context` tokens that moves `stride`
tokens at a time; each token is scored once, by the window that ends with the
tokens it moved over, so it sees at least context - stride tokens before it (stride =
context: nearly disjoint windows, fastest; a smaller stride: more context per token,
closer to how the model is used, and more windows).
"""

from __future__ import annotations

from webui.errors import ServerError

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from webui.storage import atomic_write_text

MAX_RESULTS = 1000  # the table keeps the newest rows
MAX_TABLE_BYTES = 8 << 20


class ResultsError(ServerError, RuntimeError):
    """The results table on disk cannot be read; it is left as it is."""


@dataclass(frozen=True)
class Result:
    model: str
    loader: str
    dtype: str  # with the quantization, e.g. "float32 4-bit nf4"
    loras: str
    data: str
    context: int
    stride: int
    tokens: int
    perplexity: float
    date: str

    COLUMNS = ("model", "loader", "dtype", "loras", "data", "context", "stride", "tokens", "perplexity", "date")

    def row(self) -> list[Any]:
        return [getattr(self, column) for column in self.COLUMNS]


@torch.inference_mode()
def perplexity(model: Any, ids: list[int], context: int, stride: int, device: str,
               on_window: Callable[[int, int], None] | None = None) -> tuple[float, int]:
    """exp(mean negative log-likelihood) over `ids`; returns it and the tokens scored.

    Every token but the first is scored exactly once: each window scores the next
    `stride` tokens (at most context - 1, since a token is predicted from the one
    before it) and reaches back as far as the context allows.
    """
    if len(ids) < 2:
        raise ValueError("the text is too short to score (fewer than 2 tokens)")
    if not 1 <= stride <= context or context < 2:
        raise ValueError(f"stride must be between 1 and the context length ({context})")
    step = min(stride, context - 1)
    windows = math.ceil((len(ids) - 1) / step)
    total_nll, scored, done = 0.0, 0, 1  # ids[0] has nothing before it to be predicted from
    for index in range(windows):
        end = min(done + step, len(ids))
        start = max(0, end - context)
        window = torch.tensor([ids[start:end]], device=device)
        logits = model(input_ids=window).logits[0, :-1].float()
        targets = window[0, 1:].clone()
        targets[: done - start - 1] = -100  # scored by an earlier window
        total_nll += float(torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100, reduction="sum"))
        scored += end - done
        done = end
        if on_window is not None:
            on_window(index + 1, windows)
    return math.exp(total_nll / scored), scored


class ResultsTable:
    """The results, newest last, in one JSON file written atomically."""

    def __init__(self, path: Path):
        self.path = path

    def rows(self) -> list[Result]:
        if not self.path.exists():
            return []
        try:
            if self.path.stat().st_size > MAX_TABLE_BYTES:
                raise ResultsError(f"{self.path.name} is larger than {MAX_TABLE_BYTES >> 20} MiB")
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return [Result(**{k: entry[k] for k in Result.COLUMNS}) for entry in data]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ResultsError(f"{self.path.name} cannot be read ({exc.__class__.__name__}); it was left as it is "
                               "and new results are not added to it") from None

    def add(self, result: Result) -> list[Result]:
        rows = [*self.rows(), result][-MAX_RESULTS:]
        atomic_write_text(self.path, json.dumps([asdict(row) for row in rows], indent=1))
        return rows


def today() -> str:
    return time.strftime("%Y-%m-%d %H:%M")
