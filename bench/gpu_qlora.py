"""On a CUDA GPU: LoRA over a 16-bit base vs QLoRA (4-bit nf4 base), memory and speed.

    .venv/bin/python bench/gpu_qlora.py [--steps 20] [--cutoff 512] [--micro 4]

Builds a random-weight Llama of ~1.1B parameters (TinyLlama's shape, as
bench/gpu_quant.py does) and trains a rank-16 LoRA on q/k/v/o for a few steps through
the app's own TrainingService (webui/training/), once over a bf16 base and once over a
4-bit nf4 base.  Prints, for each, the weights' bytes, the peak GPU memory while
training and training tokens/s, then the QLoRA / 16-bit ratios.  Without CUDA it
says so and exits with status 0: there is nothing to measure.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_training import train, training_on  # noqa: E402

from webui.loaders.base import LoadOptions  # noqa: E402
from webui.settings import DEMO_MODEL, PROJECT_ROOT  # noqa: E402

GIB = 1 << 30


def build(folder: Path) -> None:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                         num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder / "random-1b", safe_serialization=True)
    # The demo model's tokenizer: its ids fit the 32k vocabulary.
    AutoTokenizer.from_pretrained(PROJECT_ROOT / "models" / DEMO_MODEL).save_pretrained(folder / "random-1b")
    del model
    gc.collect()
    torch.cuda.empty_cache()


def run(models_dir: Path, options: LoadOptions, steps: int, cutoff: int, micro: int) -> dict:
    with training_on(models_dir, "random-1b", options, repeat=20) as (_, loaded, service):
        weights = loaded.model.get_memory_footprint()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        snap, seconds = train(service, steps, cutoff, micro)
        result = {"weights": weights, "peak": torch.cuda.max_memory_allocated(), "tokens_per_s": snap.tokens_per_second,
                  "seconds": seconds, "loss": (snap.losses[0][1], snap.losses[-1][1]), "model": loaded.describe()}
    gc.collect()
    torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cutoff", type=int, default=512)
    parser.add_argument("--micro", type=int, default=4)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_qlora: no CUDA GPU here; nothing to measure (run it on a machine with an NVIDIA GPU).")
        return 0
    import bitsandbytes  # noqa: F401  (fail early and clearly if the [quant] extra is missing)

    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        print(f"GPU: {torch.cuda.get_device_name(0)}; random Llama ~1.1B; LoRA r16 q/k/v/o; "
              f"{args.steps} steps of {args.micro} x {args.cutoff} tokens", flush=True)
        runs = {"LoRA, bf16 base": LoadOptions(dtype="bf16"),
                "QLoRA, 4-bit nf4 base": LoadOptions(dtype="bf16", load_in_4bit=True, compute_dtype="bfloat16")}
        results = {}
        for label, options in runs.items():
            results[label] = r = run(Path(tmp), options, args.steps, args.cutoff, args.micro)
            print(f"{label:>22}: weights {r['weights'] / GIB:6.2f} GiB, peak GPU while training "
                  f"{r['peak'] / GIB:6.2f} GiB, {r['tokens_per_s']:8.0f} tokens/s, loss {r['loss'][0]:.2f} -> "
                  f"{r['loss'][1]:.2f}", flush=True)
        lora, qlora = results["LoRA, bf16 base"], results["QLoRA, 4-bit nf4 base"]
        print(f"QLoRA / LoRA: peak memory {qlora['peak'] / lora['peak']:.3f}, "
              f"tokens/s {qlora['tokens_per_s'] / lora['tokens_per_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
