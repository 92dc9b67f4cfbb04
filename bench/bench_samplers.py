"""Per-token cost of the full sampler chain vs plain sampling, in one run.

    .venv/bin/python bench/bench_samplers.py [--model demo-kjv-4m] [--tokens 100] [--rounds 11]

Two measurements:
1. end to end through the engine: tokens/s with every sampler on vs plain sampling
   (temperature only), rounds alternating; the ratio is chain / plain;
2. the chain alone on logits of the model's vocabulary size over a 1,000-token
   context: microseconds per step, next to the cost of plain softmax + multinomial.
"""

from __future__ import annotations

import statistics
import time

import torch
from report import figure
from common import PROMPT, bench_parser, load_model

from webui.generation.chain import build_chain
from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.generation.params import make_params

EVERY_SAMPLER = dict(
    repetition_penalty=1.1, presence_penalty=0.2, frequency_penalty=0.2, dry_multiplier=0.8,
    top_n_sigma=2.0, temperature=0.9, smoothing_factor=0.3, top_k=40, top_p=0.95, typical_p=0.95,
    epsilon_cutoff=3.0, eta_cutoff=3.0, tfs=0.95, top_a=0.1, min_p=0.05, xtc_probability=0.5,
    no_repeat_ngram_size=6, mirostat_mode=2,
)


def main() -> None:
    args = bench_parser(__doc__, rounds=11).parse_args()
    manager, loaded = load_model(args)
    engine = GenerationEngine(manager)
    base = {"max_new_tokens": args.tokens, "seed": 1, "ban_eos_token": True}
    plain = make_params({**base, "temperature": 0.9})
    full = make_params({**base, **EVERY_SAMPLER})
    # What people actually run: the bundled DRY preset plus a repetition penalty.
    typical = make_params({**base, "min_p": 0.05, "dry_multiplier": 0.8, "repetition_penalty": 1.1})

    def rate(params) -> float:
        start = time.perf_counter()
        stream = engine.generate(GenerationRequest(PROMPT, params))
        stream.text()
        return stream.stats.new_tokens / (time.perf_counter() - start)

    rate(plain), rate(full)  # warm-up
    ratios, typical_ratios = [], []
    for _ in range(args.rounds):
        base_rate = rate(plain)
        ratios.append(rate(full) / base_rate)
        typical_ratios.append(rate(typical) / base_rate)

    vocab = loaded.backend.vocab_size()
    chain = build_chain(full, loaded.tokenizer, loaded.backend, vocab, loaded.backend.eos_ids())
    context = torch.randint(0, vocab, (1, 1000))
    logits = torch.randn(1, vocab)

    def per_step(fn, n=200) -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n * 1e6

    plain_us = per_step(lambda: torch.multinomial(torch.softmax(logits / 0.9, -1), 1))
    chain_us = per_step(lambda: torch.multinomial(torch.softmax(chain(context, logits), -1), 1))
    print(f"model: {loaded.describe()}  vocab {vocab}  steps in chain: {len(chain)}")
    print(f"end to end, every sampler on vs plain: {statistics.median(ratios):.3f} x the tokens/s "
          f"(median of {args.rounds} rounds)")
    print(f"end to end, min_p + DRY + repetition penalty vs plain: {statistics.median(typical_ratios):.3f} x")
    print(f"chain alone: {chain_us:.0f} us/step vs plain sampling {plain_us:.0f} us/step "
          f"({chain_us / plain_us:.1f}x), 1,000-token context")
    rounds = f"median of {args.rounds} rounds of {args.tokens} tokens"
    figure(f"every sampler on ({len(chain)} steps) ÷ temperature only, end to end tokens/s",
           f"{statistics.median(ratios):.2f}", rounds)
    figure("min_p + DRY + repetition penalty ÷ temperature only, end to end tokens/s",
           f"{statistics.median(typical_ratios):.2f}", rounds)
    figure("the whole chain alone, per step", f"{chain_us / 1000:.2f} ms",
           f"vs {plain_us / 1000:.2f} ms for softmax + multinomial; 1,000-token context, vocab {vocab:,}")


if __name__ == "__main__":
    main()
