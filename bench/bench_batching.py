"""Continuous batching, prefix-cache reuse and fair scheduling, measured in one run.

    .venv/bin/python bench/bench_batching.py [--model demo-kjv-4m] [--tokens 64] [--rounds 3]
    .venv/bin/python bench/bench_batching.py --random-0.5b     # a ~0.5B-shaped random-weight Llama

Prints, each as a ratio of two measurements taken here and now:
- aggregate tokens/s of 8 concurrent streams / 1 stream (outputs checked equal to solo runs);
- time to first token of a follow-up turn with ~1,500 tokens of shared history,
  with the prefix cache / without it;
- p95 wait (submit -> first token) of short chat requests while one API owner floods
  20 long requests / the same with no flood.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
from report import figure
from common import PROMPT, bench_parser

from webui.generation.backend import ServingOptions
from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.generation.params import make_params
from webui.loaders.base import LoadOptions
from webui.loaders.registry import default_registry
from webui.model_manager import ModelManager

PROMPTS = [f"{PROMPT}, {tail}" for tail in (
    "and there was light.", "and the evening", "in the beginning", "and the waters", "saying unto them",
    "and it was so.", "upon the face of the deep", "and the spirit moved")]


def build_random_half_b(folder: Path, demo: Path) -> str:
    """A ~0.47B-parameter Llama (Qwen2.5-0.5B's depth and width class, a 32k vocabulary)
    with random weights and the demo model's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(demo)
    config = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=4608, num_hidden_layers=24,
                         num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=4096)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder / "random-0.5b")
    tokenizer.save_pretrained(folder / "random-0.5b")
    return "random-0.5b"


def engine_for(model_dir: Path, name: str, **serving) -> GenerationEngine:
    manager = ModelManager(model_dir, default_registry(ServingOptions(**serving)), LoadOptions())
    manager.load(name)
    return GenerationEngine(manager)


def greedy(tokens: int):
    return make_params({"temperature": 0.0, "max_new_tokens": tokens, "ban_eos_token": True})


def together(engine: GenerationEngine, requests: list[GenerationRequest]) -> tuple[list[str], float, list[float]]:
    """Run requests concurrently; (texts, wall seconds, per-request seconds to first piece)."""
    texts, firsts = [""] * len(requests), [0.0] * len(requests)

    def read(i: int) -> None:
        submitted = time.perf_counter()
        for piece in engine.generate(requests[i]):
            if not texts[i]:
                firsts[i] = time.perf_counter() - submitted
            texts[i] += piece

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(requests))]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return texts, time.perf_counter() - start, firsts


def batching(engine: GenerationEngine, tokens: int, rounds: int) -> None:
    solo = [engine.generate(GenerationRequest(p, greedy(tokens))).text() for p in PROMPTS]
    ratios, ones, eights = [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        engine.generate(GenerationRequest(PROMPTS[0], greedy(tokens))).text()
        one = tokens / (time.perf_counter() - start)
        # Eight clients, as eight people or tools would be (one owner holds max_batch - 1 places).
        texts, seconds, _ = together(
            engine, [GenerationRequest(p, greedy(tokens), owner=f"client{i}") for i, p in enumerate(PROMPTS)])
        eight = len(PROMPTS) * tokens / seconds
        if texts != solo:
            raise SystemExit("a batched reply differs from its solo run")
        ratios.append(eight / one)
        ones.append(one)
        eights.append(eight)
        print(f"  1 stream {one:7.1f} tok/s   8 streams {eight:7.1f} tok/s in total")
    print(f"aggregate 8 streams / 1 stream: {statistics.median(ratios):.2f} (median of {rounds}; "
          "outputs equal to solo runs)")
    figure("8 streams ÷ 1 stream, aggregate tokens/s", f"{statistics.median(ratios):.2f}",
           f"median of {rounds}, {tokens} tokens per stream; 1 stream {min(ones):.1f}–{max(ones):.1f} tok/s, "
           f"8 streams {min(eights):.1f}–{max(eights):.1f} tok/s in total; replies equal to solo runs")


def follow_up(model_dir: Path, name: str, rounds: int) -> None:
    cached = engine_for(model_dir, name, max_batch=8)
    plain = engine_for(model_dir, name, max_batch=8, prefix_cache_bytes=0)
    tokenizer = cached.manager.current.tokenizer
    # ~1,500 tokens of shared history, or as much as the context holds beside the turn.
    target = min(1500, cached.manager.current.context_length - 80)
    words = " ".join(PROMPTS)
    history = words
    while len(tokenizer(history + " " + words)["input_ids"]) < target:
        history += " " + words
    ratios, cached_ms, plain_ms = [], [], []
    for round_ in range(rounds):
        turn = f"{history} (turn {round_})"
        reply = cached.generate(GenerationRequest(turn, greedy(16))).text()
        plain.generate(GenerationRequest(turn, greedy(16))).text()
        follow = turn + reply + " And then?"
        timings = {}
        for label, engine in (("cached", cached), ("plain", plain)):
            start = time.perf_counter()
            stream = engine.generate(GenerationRequest(follow, greedy(1)))
            stream.text()
            timings[label] = (time.perf_counter() - start, stream.stats)
        ratios.append(timings["cached"][0] / timings["plain"][0])
        cached_ms.append(timings["cached"][0] * 1000)
        plain_ms.append(timings["plain"][0] * 1000)
        stats = timings["cached"][1]
        print(f"  follow-up of {stats.prompt_tokens} tokens ({stats.cached_tokens} reused): "
              f"first token {timings['cached'][0] * 1000:.0f} ms vs {timings['plain'][0] * 1000:.0f} ms")
    print(f"time to first token, follow-up turn, prefix cache / none: {statistics.median(ratios):.3f} "
          f"(median of {rounds})")
    figure("follow-up turn's first token, prefix cache ÷ none", f"{statistics.median(ratios):.3f}",
           f"median of {rounds}; {stats.prompt_tokens}-token prompt, {stats.cached_tokens} reused: "
           f"{statistics.median(cached_ms):.0f} ms vs {statistics.median(plain_ms):.0f} ms")


def fairness(engine: GenerationEngine, tokens: int) -> None:
    def chat_waits(flood: bool) -> list[float]:
        floods = []
        if flood:
            floods = [engine.generate(GenerationRequest(PROMPTS[i % 8], greedy(tokens * 2), owner="api"))
                      for i in range(20)]
            time.sleep(0.5)
        waits = []
        for i in range(6):
            _, _, firsts = together(engine, [GenerationRequest(PROMPTS[i % 8], greedy(8), owner=f"user{i}")])
            waits.append(firsts[0])
        for stream in floods:
            stream.request.cancel.cancel()
            stream.text()
        return waits

    def p95(values: list[float]) -> float:
        return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]

    quiet, flooded = chat_waits(False), chat_waits(True)
    print(f"  chat wait p95: {p95(quiet) * 1000:.0f} ms quiet, {p95(flooded) * 1000:.0f} ms while an API "
          "owner floods 20 requests")
    print(f"p95 chat wait, flooded / quiet: {p95(flooded) / p95(quiet):.2f}")
    figure("p95 chat wait, one owner flooding ÷ quiet", f"{p95(flooded) / p95(quiet):.2f}",
           f"six chat requests from six users; {p95(flooded) * 1000:.0f} ms vs {p95(quiet) * 1000:.0f} ms "
           "while an API owner floods 20 long requests")


def main() -> None:
    parser = bench_parser(__doc__, rounds=3)
    parser.add_argument("--random-0.5b", dest="half_b", action="store_true",
                        help="measure a ~0.5B-shaped random-weight Llama instead of --model")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--parts", default="batching,follow-up,fairness",
                        help="which measurements, comma-separated (default: all three)")
    parser.set_defaults(tokens=64)
    args = parser.parse_args()
    if args.threads:
        # On a loaded machine, two OpenMP threads wait for each other at every matmul of a
        # batch (a batch-8 matmul then took 5x longer than with one thread): one thread
        # keeps the ratio about batching, not about the neighbours.
        torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, name = args.model_dir, args.model
        if args.half_b:
            model_dir, name = Path(tmp), build_random_half_b(Path(tmp), args.model_dir / args.model)
        engine = engine_for(model_dir, name, max_batch=8)
        print(f"model: {engine.manager.current.describe()}  threads: {torch.get_num_threads()}")
        if "batching" in parts:
            batching(engine, args.tokens, args.rounds)
        if "follow-up" in parts:
            follow_up(model_dir, name, args.rounds)
        if "fairness" in parts:
            fairness(engine, args.tokens)


if __name__ == "__main__":
    main()
