"""Decode on the model thread while another live thread keeps an OpenMP pool, against
the same with that pool given back (webui/openmp.py): why loads, LoRA changes and lent
jobs release their thread's pool, and the model thread its own once idle.

    .venv/bin/python bench/bench_openmp.py [--tokens 48] [--rounds 3]

The ~0.47B random Llama of bench_gguf.py (built once into --work-dir) is loaded the
way the app loads it (`--dtype auto`, `build_runtime`) and decoded greedily through our
engine.  In
"kept" rounds a helper thread has run one parallel op and stays alive, as the loading
thread (start-up, or the Model tab's) did before its pool was released; in "released"
rounds the helper gives its pool back first.  Rounds alternate; the figure is the
median of released ÷ kept decode rates, each measured as bench_gguf.py's `engine_rate`
(extra tokens / extra seconds between a short and a long request).
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import tempfile
import threading
from pathlib import Path

import torch
from bench_gguf import build_folder, engine_rate
from report import figure

from webui.openmp import release_thread_pool
from webui.runtime import build_runtime
from webui.settings import PROJECT_ROOT, Settings


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "webui-bench-gguf")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    folder = build_folder(args.work_dir)
    with tempfile.TemporaryDirectory() as user_data:
        settings = Settings(model=folder.name, model_dir=folder.parent, user_data_dir=Path(user_data),
                            presets_dir=PROJECT_ROOT / "presets", preset="Deterministic")
        runtime = build_runtime(settings, use_remembered=False)
        loaded = runtime.models.current
        if loaded is None:
            raise SystemExit(f"the model did not load: {runtime.warnings}")
        holder = PoolHolder()
        engine_rate(runtime, 4, 1)  # warm-up
        rates: dict[str, list[float]] = {"kept": [], "released": []}
        loads = [os.getloadavg()[0]]
        for _ in range(args.rounds):
            for mode in ("kept", "released"):
                holder.order("keep")
                if mode == "released":
                    holder.order("release")
                rates[mode].append(engine_rate(runtime, args.tokens, 1))
                loads.append(os.getloadavg()[0])
        runtime.engine.close()
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
