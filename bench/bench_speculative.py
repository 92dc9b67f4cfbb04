"""Speculative decoding by prompt lookup: one stream's tokens/s with drafts ÷ without.

    .venv/bin/python bench/bench_speculative.py [--model demo-kjv-4m] [--tokens 100] [--rounds 9] [--drafts 2,4,8]

Two texts, each decoded greedily by the same engine with `prompt_lookup_num_tokens` = 0
and = each --drafts value, in alternating rounds (so a busy machine slows every side
alike): a repetitive one (a passage given three times and begun a fourth: the reply
goes on copying it) and a plain one (nothing to copy).  Each figure is the median of the
per-round ratios, with the share of drafted tokens accepted and the forward passes
counted on the model; the replies are compared token for token (they must be equal).
"""

from __future__ import annotations

import os
import statistics
import time

import torch
from common import PROMPT, bench_parser, load_model
from report import figure

from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.generation.params import make_params

PASSAGE = ("In the beginning God created the heaven and the earth. And the earth was without form, and void; "
           "and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters. ")
TEXTS = {"repetitive": PASSAGE * 3 + "In the beginning God", "plain": PROMPT}


def main() -> None:
    parser = bench_parser(__doc__, rounds=9)
    parser.add_argument("--drafts", default="2,4,8", help="prompt_lookup_num_tokens values, comma-separated")
    args = parser.parse_args()
    drafts = [int(d) for d in args.drafts.split(",")]
    manager, loaded = load_model(args)
    engine = GenerationEngine(manager)
    passes = [0]
    loaded.model.register_forward_pre_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))

    def run(text: str, k: int) -> tuple[float, str, int, int, int]:
        params = make_params({"temperature": 0.0, "max_new_tokens": args.tokens, "ban_eos_token": True,
                              "prompt_lookup_num_tokens": k})
        before = passes[0]
        start = time.perf_counter()
        stream = engine.generate(GenerationRequest(text, params))
        reply = stream.text()
        seconds = time.perf_counter() - start
        stats = stream.stats
        return stats.new_tokens / seconds, reply, stats.drafted_tokens, stats.accepted_tokens, passes[0] - before

    print(f"model: {loaded.describe()}  threads: {torch.get_num_threads()}  "
          f"reuse_invariant: {loaded.backend.capabilities.reuse_invariant}")
    for name, text in TEXTS.items():
        for k in [0, *drafts]:
            run(text, k)  # warm-up, and the prompt in the prefix cache for every side alike
        ratios = {k: [] for k in drafts}
        accepted = {k: [0, 0, 0] for k in drafts}
        loads = []
        same = True
        for _ in range(args.rounds):
            base, reply, _, _, base_passes = run(text, 0)
            for k in drafts:
                rate, mine, drafted, kept, count = run(text, k)
                same &= mine == reply
                ratios[k].append(rate / base)
                accepted[k][0] += drafted
                accepted[k][1] += kept
                accepted[k][2] += count
            loads.append(os.getloadavg()[0])
        load = f"load average {min(loads):.1f}-{max(loads):.1f}, {torch.get_num_threads()} threads"
        for k in drafts:
            drafted, kept, count = accepted[k]
            quartiles = statistics.quantiles(ratios[k], n=4)
            share = kept / drafted if drafted else 0.0
            print(f"{name:10} drafts {k}: {statistics.median(ratios[k]):.2f}x tokens/s "
                  f"(quartiles {quartiles[0]:.2f}..{quartiles[2]:.2f}), {share:.0%} of {drafted // args.rounds} "
                  f"drafts accepted, {count / args.rounds:.0f} vs {base_passes} forward passes, "
                  f"replies {'identical' if same else 'DIFFER'}; {load}")
            figure(f"prompt lookup ({k} drafts) ÷ none, one stream, {name} text",
                   f"{statistics.median(ratios[k]):.2f}",
                   f"median of {args.rounds} alternating rounds of {args.tokens} greedy tokens, quartiles "
                   f"{quartiles[0]:.2f}..{quartiles[2]:.2f}; {share:.0%} of drafts accepted, "
                   f"{count / args.rounds:.0f} vs {base_passes} forward passes; replies "
                   f"{'identical' if same else 'DIFFER'}; {loaded.describe()}; {load}")
    engine.close()


if __name__ == "__main__":
    main()
