"""Our streaming engine vs raw `model.generate`, same model and settings, one run.

    .venv/bin/python bench/bench_engine.py [--model demo-kjv-4m] [--tokens 100] [--rounds 31]

Short paired rounds keep slow drifts of a shared machine out of the ratio.
Both sides decode greedily from the same prompt; the engine adds what the product needs
(its own step loop over the backend, the model thread, incremental detokenization, stop
string scan, per-request cancel check).  Rounds alternate between the two so that
machine noise hits both alike; the printed ratio is engine tokens/s over raw tokens/s.
"""

from __future__ import annotations

import statistics
import time

import torch
from report import figure
from common import PROMPT, bench_parser, load_model

from webui.generation.engine import POOL_IDLE_SECONDS, GenerationEngine, GenerationRequest
from webui.generation.params import make_params
from webui.openmp import release_thread_pool


def main() -> None:
    parser = bench_parser(__doc__, rounds=31)
    parser.add_argument("--stop", action="append", default=[], help="stop strings for the engine side")
    args = parser.parse_args()

    manager, loaded = load_model(args)
    engine = GenerationEngine(manager)
    # End-of-text banned on our side (the raw side has it switched off): both run the full count.
    params = make_params({"temperature": 0.0, "max_new_tokens": args.tokens, "stop": args.stop,
                          "ban_eos_token": True})
    ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]

    def raw() -> tuple[int, float]:
        start = time.perf_counter()
        out = loaded.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids),
            pad_token_id=loaded.tokenizer.pad_token_id, eos_token_id=None, max_new_tokens=args.tokens,
            do_sample=False, temperature=None, top_p=None, top_k=None,
        )
        seconds = time.perf_counter() - start
        # A script that only calls generate has one OpenMP pool, and so has the app; this
        # thread's pool left alive would slow the engine's side (webui/openmp.py).
        release_thread_pool()
        return out.shape[1] - ids.shape[1], seconds

    def ours() -> tuple[int, float]:
        start = time.perf_counter()
        stream = engine.generate(GenerationRequest(PROMPT, params))
        for _ in stream:
            pass
        seconds = time.perf_counter() - start
        # Likewise the model thread keeps its pool until it has idled POOL_IDLE_SECONDS:
        # the raw side must not run beside it.
        time.sleep(POOL_IDLE_SECONDS + 0.5)
        return stream.stats.new_tokens, seconds

    raw(), ours()  # warm-up
    ratios, raw_rates, our_rates = [], [], []
    for _ in range(args.rounds):
        n_raw, t_raw = raw()
        n_ours, t_ours = ours()
        raw_rates.append(n_raw / t_raw)
        our_rates.append(n_ours / t_ours)
        ratios.append(our_rates[-1] / raw_rates[-1])
    print(f"model: {loaded.describe()}  threads: {torch.get_num_threads()}")
    print(f"raw model.generate : {statistics.median(raw_rates):8.1f} tokens/s (median of {args.rounds})")
    print(f"webui engine       : {statistics.median(our_rates):8.1f} tokens/s (median of {args.rounds})")
    quartiles = statistics.quantiles(ratios, n=4)
    print(
        f"ratio engine/raw   : {statistics.median(ratios):.3f} (target >= 0.97; "
        f"per-round quartiles {quartiles[0]:.3f}..{quartiles[2]:.3f})"
    )
    figure("one stream, engine ÷ raw `model.generate`", f"{statistics.median(ratios):.3f}",
           f"median of {args.rounds} rounds of {args.tokens} tokens, quartiles {quartiles[0]:.3f}..{quartiles[2]:.3f}; "
           f"raw {statistics.median(raw_rates):.1f} tok/s, engine {statistics.median(our_rates):.1f} tok/s; "
           f"{loaded.describe()}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
