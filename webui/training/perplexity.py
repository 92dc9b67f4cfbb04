"""Perplexity of the loaded model (with whatever LoRAs are applied) on a text, and the
table of results kept so 16/8/4-bit and base/LoRA runs can be compared side by side.

The text is scored with a sliding window: windows of `context` tokens, each starting
`stride` tokens after the one before; each token is scored once, in the first window
that predicts it with the most context before it (stride = context: disjoint windows,
fastest; a smaller stride: more context per token, closer to how the model is used).
"""

from __future__ import annotations

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


class ResultsError(RuntimeError):
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
    """exp(mean negative log-likelihood) over `ids`; returns it and the tokens scored."""
    if len(ids) < 2:
        raise ValueError("the text is too short to score (fewer than 2 tokens)")
    if not 1 <= stride <= context:
        raise ValueError(f"stride must be between 1 and the context length ({context})")
    total_nll, scored, done = 0.0, 0, 1  # ids[0] has nothing before it to be predicted from
    starts = list(range(0, len(ids) - 1, stride))
    for index, start in enumerate(starts):
        end = min(start + context, len(ids))
        if end <= done:
            continue
        window = torch.tensor([ids[start:end]], device=device)
        logits = model(input_ids=window).logits[0, :-1].float()
        targets = window[0, 1:].clone()
        targets[: max(0, done - start - 1)] = -100  # already scored with more context
        total_nll += float(torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100, reduction="sum"))
        scored += int((targets != -100).sum())
        done = end
        if on_window is not None:
            on_window(index + 1, len(starts))
        if end == len(ids):
            break
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
