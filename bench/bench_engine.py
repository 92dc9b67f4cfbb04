"""Our streaming engine vs raw `model.generate`, same model and settings, one run.

    .venv/bin/python bench/bench_engine.py [--model demo-kjv-4m] [--tokens 100] [--rounds 31]

Short paired rounds keep slow drifts of a shared machine out of the ratio.
Both sides decode greedily from the same prompt, so they produce the same tokens; the
engine adds what the product needs (worker thread, incremental detokenization, stop
string scan, per-request cancel check).  Rounds alternate between the two so that
machine noise hits both alike; the printed ratio is engine tokens/s over raw tokens/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from webui.generation.engine import GenerationEngine, GenerationRequest, sampling_kwargs  # noqa: E402
from webui.loaders.base import LoadOptions  # noqa: E402
from webui.loaders.registry import default_registry  # noqa: E402
from webui.model_manager import ModelManager  # noqa: E402
from webui.presets import make_params  # noqa: E402
from webui.settings import DEMO_MODEL, PROJECT_ROOT  # noqa: E402

PROMPT = "And God said, Let there be light"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", default=str(PROJECT_ROOT / "models"))
    parser.add_argument("--model", default=DEMO_MODEL)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--stop", action="append", default=[], help="stop strings for the engine side")
    args = parser.parse_args()

    from pathlib import Path

    manager = ModelManager(Path(args.model_dir), default_registry(), LoadOptions())
    loaded = manager.load(args.model)
    engine = GenerationEngine(manager)
    params = make_params({"temperature": 0.0, "max_new_tokens": args.tokens, "stop": args.stop})
    ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    eos_off = {"eos_token_id": None}  # both sides run the full token count

    def raw() -> tuple[int, float]:
        start = time.perf_counter()
        out = loaded.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids),
            pad_token_id=loaded.tokenizer.pad_token_id, **eos_off, **sampling_kwargs(params, args.tokens),
        )
        return out.shape[1] - ids.shape[1], time.perf_counter() - start

    def ours() -> tuple[int, float]:
        start = time.perf_counter()
        stream = engine.generate(GenerationRequest(PROMPT, params))
        for _ in stream:
            pass
        return stream.stats.new_tokens, time.perf_counter() - start

    loaded.model.generation_config.eos_token_id = None  # engine side: no early EOS either
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


if __name__ == "__main__":
    main()
