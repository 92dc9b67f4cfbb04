"""llama.cpp's build flags per CPU kind, and the checks of an installed build against the
CPU it runs on (webui/loaders/llama_build.py), with made-up flag sets and library texts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


# -- decoding threads by default: one per physical core (made-up topologies) ---------------
from webui.loaders.gguf_loader import default_threads  # noqa: E402 - beside the tests it serves

SMT_4C8T = {cpu: ("0", str(cpu % 4)) for cpu in range(8)}  # 4 cores, 2 hardware threads each
TWO_SOCKETS = {cpu: (str(cpu // 4), str(cpu % 4)) for cpu in range(8)}  # core ids repeat per package


@pytest.mark.parametrize(("cpus", "topology", "decode", "prompt"), [
    ([0, 1], {0: ("0", "0"), 1: ("0", "1")}, 2, 2),  # 2 cores, no SMT: both (llama-cpp-python took 1)
    (list(range(8)), SMT_4C8T, 4, 8),
    ([0, 4], SMT_4C8T, 1, 2),  # pinned to two threads of one core
    (list(range(8)), TWO_SOCKETS, 8, 8),
    ([0, 1, 2], {}, 3, 3),  # no topology to read: each CPU counts as a core
    ([5], SMT_4C8T, 1, 1),
])
def test_default_threads_follow_the_physical_cores(cpus, topology, decode, prompt):
    assert default_threads(False, cpus, topology) == decode
    assert default_threads(True, cpus, topology) == prompt


def test_default_threads_on_this_machine_count_its_cores():
    import os

    allowed = sorted(os.sched_getaffinity(0))
    siblings = {Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip()
                for cpu in allowed if Path(f"/sys/devices/system/cpu/cpu{cpu}/topology").is_dir()}
    assert default_threads(False) == (len(siblings) if siblings else len(allowed))
