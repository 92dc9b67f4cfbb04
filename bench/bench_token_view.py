"""What the token view costs: greedy decoding with each token's probabilities recorded
for the view (both distributions, the alternatives' texts) against without, one run.

    .venv/bin/python bench/bench_token_view.py [--model demo-kjv-4m] [--tokens 100] [--rounds 21]

Without the view a greedy request takes the engine's fast path (the batch's argmax);
with it every step runs the request's own softmax, top-k and a few decodes.  Rounds
alternate between the two so that machine noise hits both alike; the printed ratio is
tokens/s with the view over tokens/s without.
"""

from __future__ import annotations

import statistics
import time

import torch
from common import PROMPT, bench_parser, load_model
from report import figure

from webui.generation import token_probs
from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.generation.params import make_params
from webui.generation.request import prompt_ids

ALTERNATIVES = 5  # as the UI asks (webui/ui/token_view.py)


def main() -> None:
    args = bench_parser(__doc__, rounds=21).parse_args()
    manager, loaded = load_model(args)
    engine = GenerationEngine(manager)
    params = make_params({"temperature": 0.0, "max_new_tokens": args.tokens, "ban_eos_token": True})

    def run(view: bool) -> float:
        start = time.perf_counter()
        stream = engine.generate(GenerationRequest(PROMPT, params, logprobs=ALTERNATIVES if view else None,
                                                   token_detail=view))
        for _ in stream:
            pass
        return stream.stats.new_tokens / (time.perf_counter() - start)

    run(False), run(True)  # warm-up
    plain, viewed = [], []
    for _ in range(args.rounds):
        plain.append(run(False))
        viewed.append(run(True))
    ratios = [v / p for v, p in zip(viewed, plain, strict=True)]
    print(f"model: {loaded.describe()}  threads: {torch.get_num_threads()}")
    print(f"without the token view: {statistics.median(plain):.1f} tokens/s (median of {args.rounds})")
    print(f"with the token view:    {statistics.median(viewed):.1f} tokens/s")
    print(f"ratio (with / without): {statistics.median(ratios):.3f}")
    # The record alone, on a real logits row: what each step adds, free of the machine's noise
    # in end-to-end rates.
    ids = prompt_ids(loaded.tokenizer, PROMPT)
    with torch.no_grad():
        row = loaded.model(torch.tensor([ids])).logits[:, -1]
    scores = row.clone()
    scores[:, scores.topk(40).indices[0, 5:]] = float("-inf")  # as if a sampler had cut all but 5
    calls = 200
    start = time.perf_counter()
    for _ in range(calls):
        token_probs.detailed_record(int(row.argmax()), scores, row, ALTERNATIVES, loaded.tokenizer, ids[-4:])
    per_step = (time.perf_counter() - start) / calls
    print(f"the record alone, per step: {per_step * 1000:.3f} ms (vocabulary {row.shape[-1]})")
    figure("greedy with the token view's probabilities recorded ÷ without, end to end tokens/s",
           f"{statistics.median(ratios):.3f}", f"{args.tokens} tokens, median of {args.rounds} paired rounds")
    figure("the token view's record alone, per step", f"{per_step * 1000:.3f} ms",
           f"vocabulary {row.shape[-1]}, {ALTERNATIVES} alternatives, mean of {calls}")


if __name__ == "__main__":
    main()
