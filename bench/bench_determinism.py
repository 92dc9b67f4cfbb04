"""What same-answers-under-load costs, measured in one run.

    .venv/bin/python bench/bench_determinism.py [--model demo-kjv-4m] [--tokens 64] [--rounds 3]
    .venv/bin/python bench/bench_determinism.py --random-0.5b --dtype bf16

Prints, each as a ratio of two measurements taken here and now, alternating rounds:
- aggregate tokens/s of 8 concurrent streams with the row-wise decode attention
  (webui/loaders/row_attention.py) / with one masked attention call over the padded batch;
- a follow-up turn's time to first token with `deterministic` (prompt computed whole)
  / without it (its history served from the prefix cache).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_batching import PROMPTS, build_random_half_b, greedy, together
from common import bench_parser
from report import figure

from webui.generation.backend import ServingOptions
from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.generation.params import make_params
from webui.loaders.base import LoadOptions
from webui.loaders.registry import default_registry
from webui.loaders.row_attention import NAME, WRAPPED
from webui.model_manager import ModelManager


def engine_for(model_dir: Path, name: str, dtype: str) -> GenerationEngine:
    manager = ModelManager(model_dir, default_registry(ServingOptions(max_batch=8)), LoadOptions(dtype=dtype))
    manager.load(name)
    return GenerationEngine(manager)


def row_attention_cost(engine: GenerationEngine, tokens: int, rounds: int) -> None:
    model = engine.manager.current.model
    requests = [GenerationRequest(p, greedy(tokens), owner=f"client{i}") for i, p in enumerate(PROMPTS)]
    rates: dict[str, list[float]] = {NAME: [], WRAPPED: []}
    for _ in range(rounds):
        for attention in (NAME, WRAPPED):
            model.set_attn_implementation(attention)
            _, seconds, _ = together(engine, requests)
            rates[attention].append(len(PROMPTS) * tokens / seconds)
        print(f"  8 streams: row-wise {rates[NAME][-1]:7.1f} tok/s, one masked call {rates[WRAPPED][-1]:7.1f} tok/s")
    model.set_attn_implementation(NAME)
    ratio = statistics.median(a / b for a, b in zip(rates[NAME], rates[WRAPPED], strict=True))
    print(f"8-stream decode, row-wise attention / masked batch attention: {ratio:.3f} (median of {rounds})")
    figure("8-stream decode rate, row-wise attention ÷ one masked call", f"{ratio:.3f}",
           f"median of {rounds} alternating rounds, {tokens} tokens per stream, "
           f"{engine.manager.current.describe()}")


def deterministic_cost(engine: GenerationEngine, rounds: int) -> None:
    tokenizer = engine.manager.current.tokenizer
    target = min(1500, engine.manager.current.context_length - 80)
    history = words = " ".join(PROMPTS)
    while len(tokenizer(history + " " + words)["input_ids"]) < target:
        history += " " + words
    ratios = []
    for round_ in range(rounds):
        turn = f"{history} (turn {round_})"
        follow = turn + engine.generate(GenerationRequest(turn, greedy(16))).text() + " And then?"
        seconds = {}
        for deterministic in (False, True):
            params = make_params({"temperature": 0.0, "max_new_tokens": 1, "deterministic": deterministic})
            start = time.perf_counter()
            engine.generate(GenerationRequest(follow, params)).text()
            seconds[deterministic] = time.perf_counter() - start
        ratios.append(seconds[True] / seconds[False])
        print(f"  follow-up first token: deterministic {seconds[True] * 1000:.0f} ms, "
              f"from the prefix cache {seconds[False] * 1000:.0f} ms")
    ratio = statistics.median(ratios)
    print(f"follow-up first token, deterministic / cached: {ratio:.2f} (median of {rounds})")
    figure("follow-up turn's first token, deterministic ÷ prefix cache", f"{ratio:.2f}",
           f"median of {rounds}; ~{target}-token history; {engine.manager.current.describe()}")


def main() -> None:
    parser = bench_parser(__doc__, rounds=3)
    parser.add_argument("--random-0.5b", dest="half_b", action="store_true",
                        help="measure a ~0.5B-shaped random-weight Llama instead of --model")
    parser.add_argument("--dtype", default="auto", help="--dtype of the load (default: auto, this CPU's choice)")
    parser.set_defaults(tokens=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, name = args.model_dir, args.model
        if args.half_b:
            model_dir, name = Path(tmp), build_random_half_b(Path(tmp), args.model_dir / args.model)
        engine = engine_for(model_dir, name, args.dtype)
        print(f"model: {engine.manager.current.describe()}  threads: {torch.get_num_threads()}")
        row_attention_cost(engine, args.tokens, args.rounds)
        deterministic_cost(engine, args.rounds)
        engine.close()


if __name__ == "__main__":
    main()
