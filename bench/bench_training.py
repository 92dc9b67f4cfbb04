"""LoRA training speed and perplexity by precision, through the app's own training code.

    .venv/bin/python bench/bench_training.py [--steps 8] [--no-0.5b]

Prints:
- training tokens/s (forward + backward + optimizer, LoRA rank 16 on q/k/v/o) for the
  demo model in fp32, the demo model in 4-bit (QLoRA, bitsandbytes), and a ~0.5B-shaped
  random-weight Llama (bench/bench_batching.py builds it), each through
  TrainingService exactly as the Training tab runs it;
- the demo model's perplexity on its bundled held-out text in fp32, 8-bit and 4-bit
  nf4, and the ratios to fp32.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_batching import build_random_half_b  # noqa: E402

from report import figure  # noqa: E402
from webui.loaders.base import LoadOptions  # noqa: E402
from webui.loaders.registry import default_registry  # noqa: E402
from webui.model_manager import ModelManager  # noqa: E402
from webui.settings import DEMO_MODEL, PROJECT_ROOT  # noqa: E402
from webui.training.service import SAMPLE_FILE, SAMPLE_NAME, TrainingService  # noqa: E402
from webui.training.settings import TrainingSettings  # noqa: E402


FP32 = LoadOptions(cpu=True, dtype="fp32")  # named: on AVX2 CPUs `auto` means fp16 on fbgemm


@contextmanager
def training_on(model_dir: Path, name: str, options: LoadOptions, repeat: int) -> Iterator[tuple]:
    """(model manager, loaded model, training service) in a throwaway user_data whose
    dataset kjv.txt is the bundled sample `repeat` times; the model is unloaded after."""
    with tempfile.TemporaryDirectory() as tmp:
        user_data = Path(tmp)
        data = user_data / "training" / "datasets"
        data.mkdir(parents=True)
        (data / "kjv.txt").write_text(SAMPLE_FILE.read_text(encoding="utf-8") * repeat, encoding="utf-8")
        models = ModelManager(model_dir, default_registry(), options, lora_dir=user_data / "loras")
        loaded = models.load(name)
        try:
            yield models, loaded, TrainingService(models, user_data)
        finally:
            models.unload()


def train(service: TrainingService, steps: int, cutoff: int, micro: int):
    """A LoRA r16 on q/k/v/o over kjv.txt, to the end: (final snapshot, seconds)."""
    settings = TrainingSettings(lora_name="bench", dataset="kjv.txt", steps=steps, cutoff_len=cutoff, overlap=0,
                                micro_batch_size=micro, rank=16, alpha=32,
                                target_modules=("q_proj", "k_proj", "v_proj", "o_proj"), save_steps=100_000)
    start = time.perf_counter()
    service.start(settings)
    snap = service.wait()
    seconds = time.perf_counter() - start
    if snap.state != "done":
        raise RuntimeError(snap.line())
    return snap, seconds


def train_speed(model_dir: Path, name: str, options: LoadOptions, steps: int, cutoff: int, micro: int) -> dict:
    with training_on(model_dir, name, options, repeat=4) as (_, loaded, service):
        snap, seconds = train(service, steps, cutoff, micro)
        return {"model": loaded.describe(), "tokens_per_s": snap.tokens_per_second, "seconds": seconds,
                "first_loss": snap.losses[0][1], "last_loss": snap.losses[-1][1]}


def perplexities(model_dir: Path) -> dict[str, float]:
    results = {}
    for label, options in {"fp32": FP32, "8-bit": LoadOptions(cpu=True, load_in_8bit=True),
                           "4-bit nf4": LoadOptions(cpu=True, load_in_4bit=True)}.items():
        with tempfile.TemporaryDirectory() as tmp:
            models = ModelManager(model_dir, default_registry(), options)
            models.load(DEMO_MODEL)
            result, _ = TrainingService(models, Path(tmp)).evaluate(SAMPLE_NAME)
            results[label] = result.perplexity
            print(f"  {label:>9}: perplexity {result.perplexity:8.3f} ({result.tokens} tokens, context "
                  f"{result.context}, {result.dtype})", flush=True)
            models.unload()
    return results


def quiet() -> None:
    """Progress bars and per-call warnings would bury the figures."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--no-0.5b", dest="half_b", action="store_false", help="skip the ~0.5B model")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default); on a busy shared machine 1 can be much faster")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    quiet()
    models = PROJECT_ROOT / "models"
    import torch

    print(f"training tokens/s ({args.steps} steps each, LoRA r16 on q/k/v/o, {torch.get_num_threads()} torch "
          "threads):", flush=True)
    runs = [("demo fp32", models, DEMO_MODEL, FP32, 128, 4),
            ("demo 4-bit (QLoRA)", models, DEMO_MODEL, LoadOptions(cpu=True, load_in_4bit=True), 128, 4)]
    # Not reported: the first run in a process pays one-time costs (autograd's and the
    # optimizer's first calls, lazy imports) that would count against whichever came first.
    train_speed(models, DEMO_MODEL, FP32, 2, 128, 4)
    with tempfile.TemporaryDirectory() as tmp:
        if args.half_b:
            name = build_random_half_b(Path(tmp), models / DEMO_MODEL)
            runs.append(("random ~0.5B fp32", Path(tmp), name, FP32, 128, 1))
        for label, folder, name, options, cutoff, micro in runs:
            try:
                r = train_speed(folder, name, options, args.steps, cutoff, micro)
            except Exception as exc:  # one failing configuration does not hide the others
                print(f"  {label:>20}: failed: {exc.__class__.__name__}: {exc}", flush=True)
                continue
            print(f"  {label:>20}: {r['tokens_per_s']:8.0f} tokens/s ({micro} x {cutoff} tokens a step, "
                  f"{r['seconds']:.1f} s in all, loss {r['first_loss']:.2f} -> {r['last_loss']:.2f})", flush=True)
            figure(f"training tokens/s, {label}", f"{r['tokens_per_s']:.0f}",
                   f"{args.steps} steps of {micro} x {cutoff} tokens, LoRA r16 on q/k/v/o, "
                   f"{torch.get_num_threads()} torch threads; loss {r['first_loss']:.2f} -> {r['last_loss']:.2f}")
    print(f"perplexity of {DEMO_MODEL} on {SAMPLE_NAME}:", flush=True)
    ppl = perplexities(models)
    print(f"ratios to fp32: 8-bit {ppl['8-bit'] / ppl['fp32']:.4f}, 4-bit {ppl['4-bit nf4'] / ppl['fp32']:.4f}")
    for label, value in ppl.items():
        figure(f"perplexity of {DEMO_MODEL} on {SAMPLE_NAME}, {label}", f"{value:.3f}",
               f"÷ fp32 {value / ppl['fp32']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
