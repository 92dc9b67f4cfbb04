"""One Linear layer of the ~0.47B Llama (1024 -> 4608) on every CPU matmul kernel torch
offers here, at 1, 4, 64 and 256 rows (decode, a small batch, prefill), with 1 and 2
threads: why `--dtype auto` is fp16 on fbgemm on AVX2 CPUs (webui/loaders/cpu_fp16.py).

    .venv/bin/python bench/bench_cpu_kernels.py [--reps 200]

Kernels: fp32 (MKL, what fp32 weights run on), torch bf16 and fp16 (emulated without
AVX512-BF16/AMX), torch's int8 weight-only kernel (cpu-int8's decode path), fbgemm fp16
(fp16 weights, fp32 math) and fbgemm int8 with dynamically quantized activations (not
used: its one activation scale per call lets one outlier row blur every other row).
Each figure is the median of 5 timings of --reps calls, ÷ fp32 at the same rows and
threads (above 1: faster), with the relative error against fp32.  One layer fits in the
CPU's cache; the last figures run one row through --layers distinct layers, as a
decoding step reads a whole model from memory, and give the read rate in GB/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from report import figure

OUT, IN = 4608, 1024


def kernels(weight: torch.Tensor) -> dict:
    """name -> (function of fp32 input rows -> fp32 output)."""
    scale = weight.abs().amax(1) / 127
    int8 = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
    bf16, fp16, scale_bf16 = weight.bfloat16(), weight.half(), scale.bfloat16()
    fbgemm16 = torch.ops.quantized.linear_prepack_fp16(weight, None)
    with warnings.catch_warnings():  # quantized tensors are deprecated; fbgemm's int8 path needs one
        warnings.simplefilter("ignore")
        qweight = torch.quantize_per_channel(weight, scale.double(), torch.zeros(OUT, dtype=torch.long), 0,
                                             torch.qint8)
    fbgemm8 = torch.ops.quantized.linear_prepack(qweight, None)
    return {
        "fp32 (MKL)": lambda x: F.linear(x, weight),
        "torch bf16": lambda x: F.linear(x.bfloat16(), bf16).float(),
        "torch fp16": lambda x: F.linear(x.half(), fp16).float(),
        "torch int8 weight-only (cpu-int8)": lambda x: torch._weight_int8pack_mm(x.bfloat16(), int8, scale_bf16).float(),
        "fbgemm fp16 (--dtype auto)": lambda x: torch.ops.quantized.linear_dynamic_fp16(x, fbgemm16),
        "fbgemm int8, dynamic activations": lambda x: torch.ops.quantized.linear_dynamic(x, fbgemm8, True),
    }


def timed(fn, x: torch.Tensor, reps: int) -> float:
    fn(x), fn(x)
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            fn(x)
        runs.append((time.perf_counter() - start) / reps)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=100, help="calls per timing at 1-4 rows (a tenth at 64+)")
    parser.add_argument("--layers", type=int, default=48, help="layers for the whole-model read rate")
    args = parser.parse_args()
    torch.manual_seed(0)
    weight = torch.randn(OUT, IN) * 0.02
    table = kernels(weight)
    loads = [os.getloadavg()[0]]
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for rows in (1, 4, 64, 256):
            x = torch.randn(rows, IN)
            reference = F.linear(x, weight)
            reps = args.reps if rows < 16 else max(args.reps // 10, 2)
            base = timed(table["fp32 (MKL)"], x, reps)
            for name, fn in table.items():
                seconds = timed(fn, x, reps)
                error = ((fn(x) - reference).abs().max() / reference.abs().max()).item()
                figure(f"{name}, {rows} rows, {threads} thread{'s' if threads > 1 else ''}",
                       f"{base / seconds:.2f}x fp32", f"{seconds * 1e3:.2f} ms vs {base * 1e3:.2f} ms; "
                       f"max error {error:.1e} of the largest output")
            loads.append(os.getloadavg()[0])
    streaming(args.layers)
    print(f"load average {min(loads):.1f}-{max(loads):.1f}")


def streaming(layers: int) -> None:
    """One row through `layers` distinct layers, as a decoding step reads the whole model:
    unlike one layer, they do not fit in the CPU's cache, so this is the kernel's read rate
    from memory (GB/s of weights), fbgemm fp16 against MKL fp32."""
    torch.manual_seed(0)
    weights = [torch.randn(OUT, IN) * 0.02 for _ in range(layers)]
    packed = [torch.ops.quantized.linear_prepack_fp16(w, None) for w in weights]
    x = torch.randn(1, IN)
    sides = {"fbgemm fp16": (lambda rows: [torch.ops.quantized.linear_dynamic_fp16(rows, p) for p in packed], 2),
             "fp32 (MKL)": (lambda rows: [F.linear(rows, w) for w in weights], 4)}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        rates = {name: layers * OUT * IN * width / timed(run, x, 3) / 1e9 for name, (run, width) in sides.items()}
        figure(f"one row through {layers} layers (whole-model decode), {threads} thread{'s' if threads > 1 else ''}",
               f"fbgemm fp16 {rates['fbgemm fp16']:.1f} GB/s",
               f"fp32 (MKL) {rates['fp32 (MKL)']:.1f} GB/s; {rates['fbgemm fp16'] / rates['fp32 (MKL)'] * 2:.2f}x "
               f"its tokens/s (half the bytes); {layers * OUT * IN * 2 / 1e9:.2f} GB of fp16 weights")


if __name__ == "__main__":
    main()
