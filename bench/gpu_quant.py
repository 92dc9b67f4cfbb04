"""On a CUDA GPU: 4-bit vs 16-bit bytes and speed, and a GPU+CPU split, on a ~1B model.

    .venv/bin/python bench/gpu_quant.py [--tokens 128] [--keep DIR]

Builds a random-weight Llama of ~1.1B parameters (TinyLlama's shape) and loads it
through the app's own loader arguments (webui.loaders.hf_kwargs) four ways: 16-bit,
8-bit, 4-bit nf4, and 16-bit split between the GPU and the CPU by max_memory
(--gpu-split / --cpu-memory).  Prints weight bytes, peak GPU memory and decode
tokens/s for each, and the 4-bit / 16-bit byte ratio.  Without CUDA it says so and
exits with status 0: there is nothing to measure.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import torch

from report import figure
from webui.loaders.base import LoadOptions
from webui.loaders.hf_kwargs import Machine, from_pretrained_kwargs

GIB = 1 << 30


def config():
    from transformers import LlamaConfig

    # TinyLlama-1.1B's shape: 22 layers, hidden 2048, 32 heads with 4 key/value heads.
    return LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                       num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048)


def build(folder: Path) -> int:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config()).to(torch.bfloat16)
    model.save_pretrained(folder, safe_serialization=True)
    size = model.get_memory_footprint()
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return size


def split_options(bytes_16: int) -> LoadOptions:
    """Half the 16-bit weights on GPU 0, the rest in RAM: a forced GPU+CPU split."""
    gpu_gib = max(0.25, round(bytes_16 / 2 / GIB, 2))
    return LoadOptions(dtype="bf16", gpu_split=(gpu_gib,), cpu_memory=64.0)


def measure(folder: Path, options: LoadOptions, tokens: int) -> dict:
    from transformers import AutoModelForCausalLM

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    kwargs = from_pretrained_kwargs(options, Machine.detect())
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()
    placement: dict[str, int] = {}
    for where in (getattr(model, "hf_device_map", None) or {"": "cuda:0"}).values():
        placement[str(where)] = placement.get(str(where), 0) + 1
    prompt = torch.randint(0, 32000, (1, 32), device="cuda")
    run = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, eos_token_id=None,
               pad_token_id=0)
    with torch.no_grad():
        # Warm-up at full length: the first run in a process pays CUDA's start-up costs
        # (kernel loading, allocator growth), which an 8-token warm-up did not cover.
        model.generate(prompt, **run)
        torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(prompt, **run)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    result = {
        "weights": model.get_memory_footprint(),
        "peak_gpu": torch.cuda.max_memory_allocated(),
        "tokens_per_s": tokens / seconds,
        "placement": placement,
        "max_memory": kwargs.get("max_memory"),
    }
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--keep", type=Path, help="build the model in this folder and keep it")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_quant: no CUDA GPU here; nothing to measure (run it on a machine with an NVIDIA GPU).")
        return 0
    import bitsandbytes  # noqa: F401  (fail early and clearly if the [quant] extra is missing)

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "random-1b"
        bytes_16 = build(folder)
        print(f"GPU: {torch.cuda.get_device_name(0)}; model: random Llama, {bytes_16 / 2 / 1e9:.2f}B parameters")
        runs = {
            "16-bit": LoadOptions(dtype="bf16"),
            "8-bit": LoadOptions(dtype="bf16", load_in_8bit=True),
            "4-bit nf4": LoadOptions(dtype="bf16", load_in_4bit=True, compute_dtype="bfloat16"),
            "16-bit GPU+CPU split": split_options(bytes_16),
        }
        results = {}
        for label, options in runs.items():
            results[label] = r = measure(folder, options, args.tokens)
            print(f"{label:>22}: weights {r['weights'] / GIB:6.2f} GiB, peak GPU {r['peak_gpu'] / GIB:6.2f} GiB, "
                  f"{r['tokens_per_s']:7.1f} tokens/s, layers by device {r['placement']}"
                  + (f", max_memory {r['max_memory']}" if r["max_memory"] else ""))
        ratio = results["4-bit nf4"]["weights"] / results["16-bit"]["weights"]
        speed = results["4-bit nf4"]["tokens_per_s"] / results["16-bit"]["tokens_per_s"]
        print(f"4-bit / 16-bit: bytes {ratio:.3f}, tokens/s {speed:.2f}")
        for label, r in results.items():
            figure(f"{label}: peak GPU memory / tokens/s", f"{r['peak_gpu'] / GIB:.2f} GiB / {r['tokens_per_s']:.1f}",
                   f"weights {r['weights'] / GIB:.2f} GiB; layers by device {r['placement']}")
        figure("4-bit ÷ 16-bit, weight bytes and tokens/s", f"{ratio:.3f} / {speed:.2f}",
               f"{torch.cuda.get_device_name(0)}; random Llama, {bytes_16 / 2 / 1e9:.2f}B parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
