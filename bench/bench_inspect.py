"""What the Inspect tab's logit lens costs: one inspection of 512 tokens (every layer's
top-10 over the vocabulary, the eager attention pass, the norms) ÷ one plain forward
pass over the same tokens, measured in the same run, on the demo model and on a
~0.5B-shaped random Llama.

    .venv/bin/python bench/bench_inspect.py [--rounds 5] [--only demo|0.5b]

The plain forward is the model's own call with its loaded attention (SDPA) and the
logits of every position, what a prefill of the text costs.  The inspection adds one
output layer per layer (the lens), eager attention (to read the weights) and the
top-k; "naming" (the token texts for the table) is timed apart.  Rounds alternate
between the two so that machine noise hits both alike; medians are printed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_batching import build_random_half_b
from common import bench_parser
from report import figure

from webui.inspect.lens import MAX_TOKENS, analyse, name_tokens
from webui.loaders.base import LoadOptions
from webui.loaders.registry import default_registry
from webui.model_manager import ModelManager
from webui.training.service import SAMPLE_FILE


def tokens_of(tokenizer, count: int) -> list[int]:
    """`count` tokens of the bundled King James sample, the start token first."""
    text = SAMPLE_FILE.read_text(encoding="utf-8")
    ids = tokenizer(text[:count * 16], add_special_tokens=True, verbose=False)["input_ids"][:count]
    if len(ids) != count:
        raise SystemExit(f"the sample gave {len(ids)} tokens, not {count}")
    return ids


def measure(model_dir: Path, name: str, label: str, rounds: int) -> None:
    manager = ModelManager(model_dir, default_registry(), LoadOptions())
    loaded = manager.load(name)
    model, count = loaded.model, min(MAX_TOKENS, loaded.context_length)
    ids = tokens_of(loaded.tokenizer, count)
    batch = torch.tensor([ids])

    def forward() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            model(input_ids=batch, use_cache=False)
        return time.perf_counter() - start

    def inspect() -> tuple[float, float]:
        start = time.perf_counter()
        lens = analyse(model, ids, count - 1)
        middle = time.perf_counter()
        name_tokens(lens, loaded.tokenizer)
        return middle - start, time.perf_counter() - middle

    forward(), inspect()  # warm-up
    plain, lensed, naming = [], [], []
    for _ in range(rounds):
        plain.append(forward())
        seconds, named = inspect()
        lensed.append(seconds)
        naming.append(named)
    ratios = [a / b for a, b in zip(lensed, plain, strict=True)]
    print(f"{label}: {loaded.describe()}  threads: {torch.get_num_threads()}  tokens: {count}")
    print(f"  one forward pass:        {statistics.median(plain) * 1000:.1f} ms (median of {rounds})")
    print(f"  the inspection:          {statistics.median(lensed) * 1000:.1f} ms")
    print(f"  naming the tokens:       {statistics.median(naming) * 1000:.1f} ms")
    print(f"  ratio (inspection / forward): {statistics.median(ratios):.2f}")
    figure(f"logit lens + attention + norms of {count} tokens ÷ one forward pass ({label})",
           f"{statistics.median(ratios):.2f}",
           f"{statistics.median(lensed) * 1000:.0f} ms vs {statistics.median(plain) * 1000:.0f} ms, "
           f"{loaded.dtype}, vocabulary {model.config.vocab_size}, {model.config.num_hidden_layers} layers, "
           f"median of {rounds} paired rounds; naming the tokens {statistics.median(naming) * 1000:.0f} ms more")
    manager.unload()


def main() -> None:
    parser = bench_parser(__doc__, rounds=5)
    parser.add_argument("--only", choices=("demo", "0.5b"))
    args = parser.parse_args()
    if args.only != "0.5b":
        measure(args.model_dir, args.model, "demo model", args.rounds)
    if args.only != "demo":
        with tempfile.TemporaryDirectory() as tmp:
            name = build_random_half_b(Path(tmp), args.model_dir / args.model)
            measure(Path(tmp), name, "~0.47B random Llama", max(1, args.rounds // 2))


if __name__ == "__main__":
    main()
