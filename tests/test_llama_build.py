"""llama.cpp's build flags per CPU kind, and the checks of an installed build against the
CPU it runs on (webui/loaders/llama_build.py), with made-up flag sets and library texts."""

from __future__ import annotations

import subprocess
import sys

from webui.loaders.cpu_features import cpu_flags
from webui.loaders.llama_build import avoid_amx, build_problem, built_with, cmake_args

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "pni", "ssse3"})
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512vbmi"}
AVX512_BF16 = AVX512 | {"avx512_bf16"}
AMX = AVX512_BF16 | {"amx_tile", "amx_int8", "amx_bf16", "avx_vnni"}
NATIVE_AMX_BUILD = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
                    "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | "
                    "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")
AVX2_BUILD = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | OPENMP = 1 | REPACK = 1 |"


def test_only_an_amx_cpu_leaves_the_native_build():
    for flags in (AVX2, AVX512, AVX512_BF16, frozenset()):
        assert cmake_args(flags) == ""
    args = cmake_args(AMX).split()
    assert "-DGGML_NATIVE=OFF" in args
    assert {"-DGGML_AVX512=ON", "-DGGML_AVX512_BF16=ON", "-DGGML_AVX512_VNNI=ON", "-DGGML_AVX2=ON"} <= set(args)
    assert {"-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"} <= set(args)
    assert not any(arg.startswith("-DGGML_AMX") and arg.endswith("=ON") for arg in args)
    # An AMX CPU without AVX512-VBMI: that set is named off, not assumed.
    assert "-DGGML_AVX512_VBMI=OFF" in cmake_args(AMX - {"avx512vbmi"}).split()


def test_a_build_for_another_cpu_is_refused_before_it_dies_of_an_illegal_instruction():
    assert "AMX_INT8" in built_with(NATIVE_AMX_BUILD) and "LLAMAFILE" in built_with(NATIVE_AMX_BUILD)
    problem = build_problem(NATIVE_AMX_BUILD, AVX2)
    assert problem and "AVX512" in problem and "AMX_INT8" in problem and "--no-cache-dir" in problem
    assert build_problem(NATIVE_AMX_BUILD, AMX) is None
    assert build_problem(AVX2_BUILD, AMX) is None  # an older CPU's build runs on a newer one
    assert build_problem(NATIVE_AMX_BUILD, frozenset()) is None  # no flags to compare (not Linux)


def test_amx_buffers_are_kept_off_only_where_the_library_has_them_and_the_cpu_runs_them():
    assert avoid_amx(NATIVE_AMX_BUILD, AMX)
    assert not avoid_amx(AVX2_BUILD, AMX)
    assert not avoid_amx(NATIVE_AMX_BUILD.replace("AMX_INT8 = 1 | ", ""), AMX)


def test_the_installed_build_runs_on_this_cpu_and_install_sh_reads_the_same_choice():
    import pytest

    llama_cpp = pytest.importorskip("llama_cpp")
    info = llama_cpp.llama_print_system_info().decode()
    assert build_problem(info, cpu_flags()) is None, info
    printed = subprocess.run([sys.executable, "-m", "webui.loaders.llama_build"], capture_output=True, text=True,
                             check=True, timeout=60).stdout.strip()
    assert printed == cmake_args(cpu_flags())
