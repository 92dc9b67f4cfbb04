"""GGUF on a GPU: does --n-gpu-layers offload, does Will it fit? say what it takes, and how fast.

    .venv/bin/python bench/gguf_gpu.py [--gguf FILE] [--tokens 128] [--work-dir DIR]

Needs llama-cpp-python built with a GPU backend (README.md, "GGUF models"); on a CPU
build it says so and exits 0 without measuring.  Without --gguf it builds bench_gguf.py's
~0.47B random Llama as Q8_0 (once, into --work-dir).  For --n-gpu-layers 0, half the
layers and -1 it loads the file through our loader and reports: the layers llama.cpp says
it offloaded (its own log line), the GPU memory the load took (cudaMemGetInfo through
torch, so llama.cpp's allocations count) against Will it fit?'s GPU estimate, decode
tokens/s, and whether the greedy tokens match the CPU run's.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from report import figure  # noqa: E402

PROMPT = "And God said, Let there be light: and there was light."
MIB = 1 << 20


class OffloadLine(logging.Handler):
    """Keeps llama.cpp's "offloaded N/M layers to GPU" line."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.found: tuple[int, int] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        match = re.search(r"offloaded (\d+)/(\d+) layers to GPU", record.getMessage())
        if match:
            self.found = (int(match[1]), int(match[2]))


def gpu_free() -> int:
    import torch

    torch.cuda.synchronize()
    return torch.cuda.mem_get_info()[0]


def run(file: Path, layers: int, tokens: int) -> dict:
    from webui.fit import gguf_estimate
    from webui.loaders.gguf_files import read_info
    from webui.loaders.gguf_loader import LlamaCppLoader
    from webui.loaders.gguf_options import LlamaCppOptions

    handler = OffloadLine()
    library_log = logging.getLogger("llama.cpp")
    library_log.addHandler(handler)
    library_log.setLevel(logging.INFO)
    before = gpu_free()
    loader = LlamaCppLoader()
    options = LlamaCppOptions(n_gpu_layers=layers, n_ctx=2048, flash_attn=True)
    loaded = loader.load(file.name, file, options)
    try:
        used = before - gpu_free()
        backend = loaded.backend
        slot = backend.start(loaded.tokenizer(PROMPT)["input_ids"])
        out = [int(slot.logits.argmax())]
        started = time.perf_counter()
        for _ in range(tokens - 1):
            out.append(int(backend.step([slot], [out[-1]]).argmax()))
        rate = (tokens - 1) / (time.perf_counter() - started)
        backend.finish(slot, keep=False)
    finally:
        loader.unload(loaded)
        library_log.removeHandler(handler)
        library_log.setLevel(logging.WARNING)
    estimate = gguf_estimate(read_info(file), 2048, layers, "fp16")
    return {"offloaded": handler.found, "gpu_used": used, "gpu_estimate": estimate.gpu, "rate": rate,
            "tokens": out, "device": loaded.device}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", type=Path, help="a .gguf file (default: build bench_gguf.py's Q8_0 model)")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "webui-bench-gguf",
                        help="where the built model is kept (shared with bench_gguf.py)")
    args = parser.parse_args(argv)
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        print("gguf_gpu: this llama-cpp-python has no GPU backend; rebuild it with CMAKE_ARGS=\"-DGGML_CUDA=on\" "
              "(README.md, GGUF models). Nothing measured.")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("gguf_gpu: torch sees no CUDA GPU, so GPU memory cannot be read here. Nothing measured.")
        return 0
    file = args.gguf
    if file is None:
        from bench_gguf import build_model

        args.work_dir.mkdir(parents=True, exist_ok=True)
        file = build_model(args.work_dir)[1]
    from webui.loaders.gguf_files import read_info

    info = read_info(file)
    print(f"GPU: {torch.cuda.get_device_name(0)}; {info.describe()}")
    results = {}
    for layers in (0, info.layers // 2, -1):
        results[layers] = r = run(file, layers, args.tokens)
        same = sum(a == b for a, b in zip(r["tokens"], results[0]["tokens"], strict=True))
        print(f"--n-gpu-layers {layers:>3}: llama.cpp offloaded {r['offloaded']}, device {r['device']}, "
              f"GPU used {r['gpu_used'] / MIB:8.1f} MiB (Will it fit? {r['gpu_estimate'] / MIB:8.1f} MiB "
              f"+ compute buffers), {r['rate']:7.1f} tokens/s, greedy tokens equal to CPU {same}/{args.tokens}")
    full, cpu = results[-1], results[0]
    if full["offloaded"] is None or full["offloaded"][0] == 0:
        print("gguf_gpu: FAILED: --n-gpu-layers -1 offloaded no layer")
        return 1
    figure("GGUF --n-gpu-layers -1 ÷ 0, decode tokens/s", f"{full['rate'] / cpu['rate']:.2f}",
           f"{torch.cuda.get_device_name(0)}; {info.describe()}; offloaded {full['offloaded']}")
    figure("GGUF all layers on GPU: GPU memory used / Will it fit? estimate",
           f"{full['gpu_used'] / MIB:.0f} / {full['gpu_estimate'] / MIB:.0f} MiB",
           "used includes llama.cpp's compute buffers, which the estimate leaves out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
