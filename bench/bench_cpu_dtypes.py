"""dtype and quantization on the CPU: decode and prefill speed and weight memory, ÷ fp32.

Loads the ~0.47B-shaped random Llama (bench_batching.py's) once per choice through the
real Transformers loader, then measures in alternating rounds (fp32, fp16 on fbgemm,
bf16, cpu-int8, bitsandbytes 8-bit and 4-bit, fp32, ...) so that a busy machine slows every choice alike; each
figure is the median of the per-round ratios to fp32, with the load average said.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_batching import build_random_half_b
from common import bench_parser
from report import figure

from webui.loaders.base import LoadOptions
from webui.loaders.cpu_features import cpu_flags, feature_set
from webui.loaders.cpu_layers import weight_bytes
from webui.loaders.hf_transformers import TransformersLoader

CHOICES = {
    "fp32": {"dtype": "fp32"},
    "fp16 on fbgemm": {"dtype": "fp16"},  # --dtype auto on AVX2 + F16C CPUs (cpu_fp16.py)
    "bf16": {"dtype": "bf16"},
    "cpu-int8": {"cpu_int8": True},
    "8-bit (bitsandbytes)": {"load_in_8bit": True},
    "4-bit (bitsandbytes)": {"load_in_4bit": True},
}


def decode_rate(model, tokens: int) -> float:
    ids = torch.arange(1, 9).unsqueeze(0)
    with torch.inference_mode():
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, eos_token_id=None)
    return tokens / (time.perf_counter() - start)


def prefill_seconds(model, length: int) -> float:
    ids = torch.randint(3, 32000, (1, length), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        start = time.perf_counter()
        model(ids, use_cache=False, logits_to_keep=1)
    return time.perf_counter() - start


def main() -> None:
    parser = bench_parser(__doc__, rounds=3)
    parser.add_argument("--prompt", type=int, default=128, help="prefill length in tokens")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--only", default=",".join(CHOICES), help="choices, comma-separated")
    parser.set_defaults(tokens=16)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = [name for name in CHOICES if name in args.only.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        name = build_random_half_b(Path(tmp), args.model_dir / args.model)
        loader = TransformersLoader()
        models = {c: loader.load(name, Path(tmp) / name, LoadOptions(cpu=True, **CHOICES[c])).model for c in chosen}
        flags = cpu_flags()
        print(f"CPU features: {feature_set(flags)}  threads: {torch.get_num_threads()}")
        for model in models.values():  # warm-up: first-call allocations and kernel choice
            decode_rate(model, 2)
        decode = {c: [] for c in chosen}
        prefill = {c: [] for c in chosen}
        loads = []
        for round_ in range(args.rounds):
            for choice, model in models.items():
                decode[choice].append(decode_rate(model, args.tokens))
                prefill[choice].append(prefill_seconds(model, args.prompt))
            loads.append(os.getloadavg()[0])
            print(f"round {round_ + 1}: " + "  ".join(
                f"{c} {decode[c][-1]:.2f} tok/s, prefill {prefill[c][-1]:.1f} s" for c in chosen), flush=True)
        load = f"load average {min(loads):.0f}-{max(loads):.0f}, {torch.get_num_threads()} threads"
        base = "fp32" if "fp32" in chosen else chosen[0]
        base_bytes = weight_bytes(models[base])
        for choice in chosen:
            speed = statistics.median(d / b for d, b in zip(decode[choice], decode[base], strict=True))
            fill = statistics.median(b / p for p, b in zip(prefill[choice], prefill[base], strict=True))
            memory = weight_bytes(models[choice]) / base_bytes
            figure(f"{choice} ÷ {base}, ~0.47B Llama on the CPU ({feature_set(flags)})",
                   f"decode {speed:.2f}x, prefill {fill:.2f}x, memory {memory:.2f}x",
                   f"{choice} decode {statistics.median(decode[choice]):.2f} tok/s, "
                   f"{args.prompt}-token prefill {statistics.median(prefill[choice]):.1f} s, "
                   f"weights {weight_bytes(models[choice]) / 2**30:.2f} GiB; median of {args.rounds} "
                   f"alternating rounds, {args.tokens} tokens; {load}")


if __name__ == "__main__":
    main()
