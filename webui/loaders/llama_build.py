"""How llama.cpp is built for this CPU, and whether the build installed runs right on it.

Why: llama-cpp-python compiles llama.cpp with `-march=native`.  On Intel CPUs with AMX,
that build puts quantized weights (Q8_0, Q4_*) in llama.cpp's AMX buffer type, whose
matmul segfaults on the first decode (upstream llama.cpp #20824; F16 files are not
affected).  So on a CPU with AMX the build names each instruction set the CPU has, AMX
left out: measured on such a CPU, the Q8_0 demo then chats and an F16 file decodes ~8%
below the native build (docs/LOADERS.md, "llama.cpp on CPUs with AMX").  Every other CPU keeps the
native build.

A build made on one CPU can be installed on another (a reused wheel cache, a copied
venv), so at load `build_problem` compares what the library says it was built with
(`llama_print_system_info`) with the CPU's flags, and `avoid_amx` keeps llama.cpp's
AMX buffer type off wherever the library has it.

Pure functions of flag sets and the library's text, tested with made-up ones
(tests/test_llama_build.py).  `python -m webui.loaders.llama_build` prints the CMake
arguments for this machine (scripts/install.sh runs it before torch is installed: no
imports beyond the standard library and cpu_features).
"""

from __future__ import annotations

import re
import sys

from webui.loaders.cpu_features import cpu_flags

AMX_FLAGS = frozenset({"amx_tile", "amx_int8", "amx_bf16"})
# llama.cpp's CMake option -> the /proc/cpuinfo flag that instruction set needs.  Listed
# in the order CMake reads them; AMX is never switched on.
CMAKE_OPTIONS = (
    ("GGML_SSE42", "sse4_2"),
    ("GGML_F16C", "f16c"),
    ("GGML_FMA", "fma"),
    ("GGML_BMI2", "bmi2"),
    ("GGML_AVX", "avx"),
    ("GGML_AVX2", "avx2"),
    ("GGML_AVX_VNNI", "avx_vnni"),
    ("GGML_AVX512", "avx512f"),
    ("GGML_AVX512_VBMI", "avx512vbmi"),
    ("GGML_AVX512_VNNI", "avx512_vnni"),
    ("GGML_AVX512_BF16", "avx512_bf16"),
)
# llama_print_system_info's names -> the flag the CPU must have to run that code.
SYSTEM_INFO_FLAGS = {
    "SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "AVX_VNNI": "avx_vnni", "F16C": "f16c",
    "FMA": "fma", "BMI2": "bmi2", "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16", "AMX_INT8": "amx_int8",
}


def has_amx(flags: frozenset[str]) -> bool:
    return bool(flags & AMX_FLAGS)


def cmake_args(flags: frozenset[str]) -> str:
    """CMAKE_ARGS for llama-cpp-python on a CPU with these flags: "" (native) unless the
    CPU has AMX; then every instruction set it has, by name, and no AMX."""
    if not has_amx(flags):
        return ""
    options = ["-DGGML_NATIVE=OFF"]
    options += [f"-D{option}={'ON' if flag in flags else 'OFF'}" for option, flag in CMAKE_OPTIONS]
    options += ["-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]
    return " ".join(options)


def built_with(system_info: str) -> frozenset[str]:
    """The instruction sets llama.cpp's CPU backend says it was built with ("AVX2 = 1 | ...")."""
    return frozenset(name for name, value in re.findall(r"([A-Z0-9_]+) = (\d+)", system_info) if value != "0")


def build_problem(system_info: str, flags: frozenset[str]) -> str | None:
    """Why this llama.cpp build cannot run on this CPU (it would die of an illegal
    instruction), or None.  No flags (not Linux): nothing can be checked."""
    if not flags:
        return None
    missing = sorted(name for name in built_with(system_info)
                     if name in SYSTEM_INFO_FLAGS and SYSTEM_INFO_FLAGS[name] not in flags)
    if not missing:
        return None
    return (f"this llama-cpp-python was built for another CPU (it uses {', '.join(missing)}, which this CPU "
            "lacks): reinstall it here with `.venv/bin/pip install --force-reinstall --no-cache-dir "
            "--no-deps llama-cpp-python` (scripts/install.sh chooses the build flags)")


def avoid_amx(system_info: str, flags: frozenset[str]) -> bool:
    """Keep llama.cpp's extra buffer types (where its AMX matmul lives) off: the library
    has AMX code and the CPU would run it."""
    return "AMX_INT8" in built_with(system_info) and has_amx(flags)


if __name__ == "__main__":
    sys.stdout.write(cmake_args(cpu_flags()) + "\n")
