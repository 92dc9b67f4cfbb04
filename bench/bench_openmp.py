"""Decode on the model thread while another live thread keeps an OpenMP pool, against
the same with that pool given back (webui/openmp.py): why loads, LoRA changes, lent
jobs and each batch release their thread's pool.

    .venv/bin/python bench/bench_openmp.py [--tokens 48] [--rounds 3]

The ~0.47B random Llama of bench_gguf.py (built once into --work-dir) is loaded the
way the app loads it (`--dtype auto`) and decoded greedily through our engine.  In
"kept" rounds a helper thread has run one parallel op and stays alive, as the loading
thread (start-up, or the Model tab's) did before its pool was released; in "released"
rounds the helper gives its pool back first.  Rounds alternate; the figure is the
median of released ÷ kept decode rates, each rate = extra tokens / extra seconds
between a short and a long request.
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
from bench_gguf import build_folder
from report import figure

from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.generation.params import make_params
from webui.loaders.base import LoadOptions
from webui.loaders.registry import default_registry
from webui.model_manager import ModelManager
from webui.openmp import release_thread_pool


class PoolHolder:
    """A live thread that, on request, builds an OpenMP pool (one parallel op) and keeps
    it, or gives it back."""

    def __init__(self):
        self._orders: queue.Queue[str] = queue.Queue()
        self._done: queue.Queue[None] = queue.Queue()
        threading.Thread(target=self._run, daemon=True, name="pool-holder").start()

    def _run(self) -> None:
        while True:
            if self._orders.get() == "keep":
                torch.ones(1 << 20).mul_(2)  # far above torch's grain: runs on the pool
            else:
                release_thread_pool()
            self._done.put(None)

    def order(self, what: str) -> None:
        self._orders.put(what)
        self._done.get(timeout=60)


def decode_rate(engine: GenerationEngine, tokens: int) -> float:
    def seconds(count: int) -> float:
        params = make_params({"temperature": 0, "max_new_tokens": count, "ban_eos_token": True})
        start = time.perf_counter()
        for _ in engine.generate(GenerationRequest("And God said, Let there be light", params)):
            pass
        return time.perf_counter() - start

    short, long = seconds(8), seconds(8 + tokens)
    return tokens / (long - short)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "webui-bench-gguf")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    folder = build_folder(args.work_dir)
    manager = ModelManager(folder.parent, default_registry(), LoadOptions())
    loaded = manager.load(folder.name)
    engine = GenerationEngine(manager)
    holder = PoolHolder()
    decode_rate(engine, 4)  # warm-up
    rates: dict[str, list[float]] = {"kept": [], "released": []}
    loads = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for mode in ("kept", "released"):
            holder.order("keep")
            if mode == "released":
                holder.order("release")
            rates[mode].append(decode_rate(engine, args.tokens))
            loads.append(os.getloadavg()[0])
    engine.close()
    ratios = [released / kept for kept, released in zip(rates["kept"], rates["released"], strict=True)]
    for mode, values in rates.items():
        print(f"{mode:>8}: {statistics.median(values):5.1f} tokens/s  rounds {[round(v, 1) for v in values]}")
    print(f"released ÷ kept: {statistics.median(ratios):.2f}")
    figure("decode with another thread's OpenMP pool given back ÷ kept", f"{statistics.median(ratios):.2f}",
           f"median of {args.rounds} alternating rounds of {args.tokens} tokens; kept "
           f"{statistics.median(rates['kept']):.1f} tok/s, released {statistics.median(rates['released']):.1f} tok/s; "
           f"{loaded.describe()}, {torch.get_num_threads()} threads, "
           f"load average {min(loads):.1f}-{max(loads):.1f}")


if __name__ == "__main__":
    main()
