"""What this machine is and what the app chooses on it, printed by CI before the tests,
so that a failure on another CPU kind explains itself (issue "Right on every machine").

    .venv/bin/python scripts/machine_report.py
"""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    import torch

    from webui.loaders.cpu_features import auto_cpu_dtype, bitsandbytes_cpu_warning, cpu_flags, feature_set
    from webui.loaders.cpu_fp16 import fbgemm_fp16_ready
    from webui.loaders.llama_build import avoid_amx, build_problem, cmake_args, has_amx

    flags = cpu_flags()
    wide = sorted(f for f in flags if f.startswith(("avx", "amx", "f16c", "fma")))
    print(f"CPU: {cpu_name()} ({platform.machine()}), {torch.get_num_threads()} torch threads")
    print(f"CPU kind: {feature_set(flags)}; AMX: {'yes' if has_amx(flags) else 'no'}; flags: {' '.join(wide)}")
    print(f"torch {torch.__version__}; fbgemm fp16 kernel: {fbgemm_fp16_ready()}; "
          f"CUDA: {torch.cuda.is_available()}")
    print(f"--dtype auto on the CPU loads: {auto_cpu_dtype(flags, fbgemm_fp16_ready())}")
    from webui.loaders.row_attention import linear_rows_invariant

    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        layer = torch.nn.Sequential(torch.nn.Linear(896, 4864)).to(dtype)
        print(f"{dtype} matmul rows independent of the batch here: {linear_rows_invariant(layer)}")
    for bits in (8, 4):
        print(f"bitsandbytes {bits}-bit: {bitsandbytes_cpu_warning(flags, bits) or 'fast kernel'}")
    print(f"llama.cpp CMAKE_ARGS for this CPU: {cmake_args(flags) or '(native build)'}")
    try:
        import llama_cpp
    except ImportError:
        print("llama-cpp-python: not installed")
        return
    info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    print(f"llama.cpp build: {info}")
    print(f"llama.cpp build runs here: {build_problem(info, flags) or 'yes'}; "
          f"AMX buffers kept off: {avoid_amx(info, flags)}")


if __name__ == "__main__":
    main()
