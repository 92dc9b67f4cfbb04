"""Structured output: decoding speed with a JSON schema enforced / unconstrained, same run.

    .venv/bin/python bench/bench_structured.py [--tokens 128] [--rounds 3] [--skip-0.5b]

Measures the demo model and a ~0.5B-shaped random-weight Llama (bench_batching.py's),
one after the other in one process.  Each round generates --tokens tokens with and
without the schema, greedy and sampled, alternating the order, and prints tokens/s of
each and the ratio (constrained / unconstrained), by the wall clock and per CPU second
of this process (the steadier figure on a shared machine); the schema asks for a list with no
upper length, so the constrained run also goes on to --tokens.  Every constrained
reply that ended on its own is checked to parse as JSON.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_batching import build_random_half_b, engine_for
from report import figure
from common import PROMPT, bench_parser

from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.generation.grammar_compile import Constraint
from webui.generation.params import make_params
from webui.generation.samplers.grammar import GrammarState, GrammarTokenizers

SCHEMA = {
    "type": "object",
    "properties": {
        "verses": {"type": "array", "items": {
            "type": "object",
            "properties": {
                "book": {"enum": ["Genesis", "Exodus", "Psalms", "John"]},
                "chapter": {"type": "integer", "minimum": 1, "maximum": 150},
                "text": {"type": "string", "maxLength": 60},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
            },
            "required": ["book", "chapter", "text", "tags"], "additionalProperties": False,
        }},
    },
    "required": ["verses"], "additionalProperties": False,
}
MODES = {"greedy": {"temperature": 0.0}, "sampled": {"temperature": 0.8, "top_p": 0.95, "min_p": 0.02}}


def speed(engine: GenerationEngine, tokens: int, mode: str, schema: bool, seed: int) -> tuple[float, float]:
    """(tokens per wall-clock second, tokens per CPU second of this process).  The CPU
    figure counts only this process's threads, so the neighbours' load on a shared
    machine disturbs it far less than the wall clock."""
    values = {**MODES[mode], "max_new_tokens": tokens, "seed": seed, "ban_eos_token": not schema}
    if schema:
        values["json_schema"] = json.dumps(SCHEMA)
    cpu = time.process_time()
    stream = engine.generate(GenerationRequest(PROMPT, make_params(values)))
    text = stream.text()
    cpu = time.process_time() - cpu
    if schema and stream.stats.finish_reason == "stop":
        json.loads(text)  # a reply the grammar ended must be complete JSON
    return stream.stats.tokens_per_second, stream.stats.new_tokens / cpu


def grammar_step_cost(engine: GenerationEngine, tokens: int) -> float:
    """Seconds per token of the grammar step alone (mask, add, advance), walking the
    schema with random logits: a figure the machine's other load disturbs less."""
    loaded = engine.manager.current
    backend = loaded.backend
    vocab, eos = backend.vocab_size(), backend.eos_ids()
    state = GrammarState(Constraint("json_schema", json.dumps(SCHEMA)),
                         GrammarTokenizers().get(loaded.tokenizer, vocab, eos), vocab)
    generator = torch.Generator().manual_seed(0)
    spent, steps = 0.0, 0
    for _ in range(tokens):
        logits = torch.randn(1, vocab, generator=generator)
        start = time.perf_counter()
        token = int(state.restrict(logits).argmax())
        if token in eos:
            break
        state.advance(token)
        spent += time.perf_counter() - start
        steps += 1
    return spent / max(steps, 1)


def measure(engine: GenerationEngine, tokens: int, rounds: int) -> dict[str, tuple[float, float]]:
    speed(engine, 8, "greedy", True, 0)  # build the grammar tokenizer once, outside the timings
    ratios, plain_greedy = {}, 0.0
    for mode in MODES:
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for round_ in range(rounds):
            order = (False, True) if round_ % 2 == 0 else (True, False)
            for schema in order:
                runs[schema].append(speed(engine, tokens, mode, schema, round_))
        wall = [statistics.median(r[0] for r in runs[schema]) for schema in (False, True)]
        cpu = [statistics.median(r[1] for r in runs[schema]) for schema in (False, True)]
        ratios[mode] = (wall[1] / wall[0], cpu[1] / cpu[0])
        plain_greedy = plain_greedy or wall[0]
        print(f"  {mode:8s} unconstrained {wall[0]:7.1f} tok/s   JSON schema {wall[1]:7.1f} tok/s   "
              f"ratio {ratios[mode][0]:.2f} (wall clock), {ratios[mode][1]:.2f} (per CPU second: "
              f"{cpu[0]:.1f} vs {cpu[1]:.1f})")
    cost = grammar_step_cost(engine, tokens)
    print(f"  grammar step alone: {cost * 1e6:.0f} us/token; an unconstrained greedy token took "
          f"{1e6 / plain_greedy:.0f} us in this run")
    return ratios


def main() -> None:
    parser = bench_parser(__doc__, rounds=3)
    parser.add_argument("--skip-0.5b", dest="skip_half_b", action="store_true", help="measure the demo model only")
    parser.set_defaults(tokens=128)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = [(args.model_dir, args.model)]
        if not args.skip_half_b:
            models.append((Path(tmp), build_random_half_b(Path(tmp), args.model_dir / args.model)))
        for model_dir, name in models:
            engine = engine_for(model_dir, name, max_batch=8)
            print(f"model: {engine.manager.current.describe()}  threads: {torch.get_num_threads()}")
            results[name] = measure(engine, args.tokens if name == args.model else max(32, args.tokens // 4),
                                    args.rounds)
            engine.manager.unload()
    for name, ratios in results.items():
        print(f"{name}: JSON schema / unconstrained tokens/s (wall, per CPU second): "
              + ", ".join(f"{mode} {wall:.2f} / {cpu:.2f}" for mode, (wall, cpu) in ratios.items()))
        for mode, (wall, cpu) in ratios.items():
            figure(f"{name}, {mode}: tokens/s with a JSON schema ÷ unconstrained", f"{wall:.2f}",
                   f"wall clock, median of {args.rounds} alternating rounds; per CPU second {cpu:.2f}")


if __name__ == "__main__":
    main()
