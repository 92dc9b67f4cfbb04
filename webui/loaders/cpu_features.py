"""What this CPU can do fast, and the choices that follow from it.

Pure functions of a set of CPU flags (as /proc/cpuinfo spells them), so every decision
is unit-tested with made-up flag sets; `cpu_flags()` reads the real ones.  Importable
without torch: the Model tab and "Will it fit?" ask before anything loads.
"""

from __future__ import annotations

from pathlib import Path

# bitsandbytes 0.50 registers its fast CPU int8 matmul only with AVX-512 (F + BW here),
# and its fused 4-bit kernel only with AVX-512-BF16.  Without them 8-bit casts each
# weight to fp32 on every call and 4-bit dequantizes it: 0.4x fp32 decode, measured on
# this AVX2 EPYC (docs/PERFORMANCE.md).
BNB_INT8_FLAGS = frozenset({"avx512f", "avx512bw"})
BNB_4BIT_FLAGS = frozenset({"avx512_bf16"})
# bf16 arithmetic in hardware: with either, bf16 prefill is no slower than fp32.
BF16_MATH_FLAGS = ("avx512_bf16", "amx_bf16")
# fbgemm's fp16 matmul (webui/loaders/cpu_fp16.py) widens fp16 to fp32 with F16C and
# multiplies with FMA in AVX2 (or AVX-512) registers.
FBGEMM_FP16_FLAGS = frozenset({"avx2", "fma", "f16c"})

# Relative cost per CPU feature set, measured by bench/bench_cpu_loaders.py on the
# ~0.47B-shaped Llama: decode and prefill (first token of a 1,000-token prompt) speed vs
# fp32 = 1.0, through the API with torch's default threads.  (Memory needs no table:
# "Will it fit?" counts each choice's bytes from the model's shape, webui/fit.py.)
# Only rows that were measured are here; other CPUs get no speed figure.
MEASURED = {
    # AMD EPYC (Zen 3), AVX2 without AVX-512; two threads, load average 1.9-2.0, median
    # of 3 alternating rounds (docs/PERFORMANCE.md, "Transformers on a CPU against llama.cpp").
    "avx2": {
        "fp32": {"decode": 1.0, "prefill": 1.0},
        "fp16 on fbgemm": {"decode": 2.20, "prefill": 1.05},
        "bf16": {"decode": 1.87, "prefill": 0.19},
        "cpu-int8": {"decode": 2.20, "prefill": 1.00},
        "8-bit (bitsandbytes)": {"decode": 0.40, "prefill": 0.71},
        "4-bit (bitsandbytes)": {"decode": 0.36, "prefill": 0.88},
    },
    # Intel Xeon, AVX-512 (F, BW, VNNI) without AVX512-BF16 or AMX; bench/bench_cpu_dtypes.py,
    # one thread, 128-token prefill, load average 9-12 (other sessions), median of 5
    # alternating rounds (docs/PERFORMANCE.md, "dtypes and 8-bit on a CPU").  bitsandbytes
    # is left out: its 3 rounds (load 10-23) scattered from 0.4x to 7x.
    "avx512": {
        "fp32": {"decode": 1.0, "prefill": 1.0},
        "fp16 on fbgemm": {"decode": 1.21, "prefill": 0.98},
        "bf16": {"decode": 0.98, "prefill": 0.42},
        "cpu-int8": {"decode": 2.15, "prefill": 0.78},
    },
}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first CPU's flags; empty where /proc/cpuinfo is missing (not Linux)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def feature_set(flags: frozenset[str]) -> str:
    """The row of MEASURED this CPU belongs to."""
    if any(flag in flags for flag in BF16_MATH_FLAGS):
        return "avx512-bf16"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "other"


def bitsandbytes_cpu_warning(flags: frozenset[str], bits: int) -> str | None:
    """Why bitsandbytes will be slow on this CPU at `bits`, or None when it has its fast kernel."""
    needed = BNB_INT8_FLAGS if bits == 8 else BNB_4BIT_FLAGS
    missing = sorted(needed - flags)
    if not missing:
        return None
    return (f"bitsandbytes has no fast {bits}-bit kernel for this CPU (it lacks {', '.join(missing)}): "
            f"expect about a third of fp32's decode speed. For 8 bits on a CPU use cpu-int8 (--cpu-int8), "
            "torch's own int8 kernel: 1.3-1.6x fp32's decode speed (AVX2) at a third of its memory.")


# The rows of MEASURED that `--dtype auto` may choose, and the dtype each loads.
AUTO_CHOICES = {"fp32": "fp32", "fp16 on fbgemm": "fp16", "bf16": "bf16"}
# A load whose prefill is slower than this share of fp32's is never the default, however
# fast it decodes: a long prompt would wait several times longer for its first token.
AUTO_MIN_PREFILL = 0.9


def auto_cpu_dtype(flags: frozenset[str], fbgemm: bool = True) -> str:
    """What `--dtype auto` loads on the CPU (`fbgemm`: this torch build has its kernel).

    Where this CPU kind was measured (MEASURED), the fastest decode among the dtypes
    whose prefill keeps up with fp32's.  Elsewhere, from the flags: bf16 where the CPU
    computes in bf16 (AVX512-BF16 or AMX); else fp16 wherever fbgemm's fp16 kernel runs
    (fp16 weights, fp32 arithmetic: faster than fp32 at decode and prefill, cpu_fp16.py),
    since torch's own bf16 and fp16 matmuls are emulated there (a prefill 4.5-6x slower
    than fp32); and fp32 on the rest.
    """
    packs = fbgemm and FBGEMM_FP16_FLAGS <= flags
    measured = {name: row for name, row in MEASURED.get(feature_set(flags), {}).items()
                if name in AUTO_CHOICES and (packs or AUTO_CHOICES[name] != "fp16")
                and row["prefill"] >= AUTO_MIN_PREFILL}
    if measured:
        return AUTO_CHOICES[max(measured, key=lambda name: measured[name]["decode"])]
    if any(flag in flags for flag in BF16_MATH_FLAGS):
        return "bf16"
    return "fp16" if packs else "fp32"
