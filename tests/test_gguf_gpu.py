"""--n-gpu-layers without a GPU: the value reaches llama.cpp's model parameters, a CPU
build still loads and says the option has no effect, and Will it fit? splits layers
between GPU and RAM as llama.cpp places them (the last layers, then the output head).
bench/gguf_gpu.py checks real offload on a CUDA build."""

from __future__ import annotations

from tests.conftest import make_settings
from tests.gguf_fixtures import Q8, require_llama_cpp
from webui.fit import Memory, gguf_estimate, gguf_report
from webui.loaders.gguf_files import read_info
from webui.loaders.gguf_loader import LlamaCppLoader
from webui.loaders.gguf_options import LlamaCppOptions

GIB = 1 << 30


def test_the_layer_count_and_split_reach_llama_cpps_model_parameters():
    lib = require_llama_cpp()
    for layers, expected in ((0, 0), (7, 7), (-1, 0x7FFFFFFF)):
        params = LlamaCppLoader._model_params(lib, LlamaCppOptions(n_gpu_layers=layers, tensor_split="3,1"))
        assert params.n_gpu_layers == expected
        assert list(params.tensor_split[:3]) == [3.0, 1.0, 0.0]


def test_a_cpu_build_loads_with_gpu_layers_and_says_they_have_no_effect(gguf_root, tmp_path):
    from webui.model_settings import ModelSettings
    from webui.runtime import build_runtime

    lib = require_llama_cpp()
    runtime = build_runtime(make_settings(gguf_root, tmp_path, model=None))
    report = runtime.fit_report(Q8, ModelSettings(n_gpu_layers=-1))
    loaded, _ = runtime.load_model(Q8, ModelSettings(n_gpu_layers=-1), save=False)
    assert loaded.options.n_gpu_layers == -1
    if lib.llama_supports_gpu_offload():  # a GPU build: the layers went to the GPU
        assert loaded.device == "gpu+cpu"
    else:
        assert loaded.device == "cpu"
        assert "built without GPU support: --n-gpu-layers has no effect" in report
        assert "fits in RAM (CPU)" in report


def test_will_it_fit_puts_the_last_layers_and_their_cache_on_the_gpu(gguf_root):
    info = read_info(gguf_root / Q8)
    gpu = Memory(gpus=(("GPU 0", 8 * GIB),), ram=8 * GIB)
    one = gguf_estimate(info, 512, 1, "fp16")
    text = gguf_report(info, 512, 1, "fp16", gpu, gpu_build=True)
    mib = 1 << 20
    assert f"| GPU | {one.weights_gpu / mib:.2f} MiB | {one.kv_gpu / mib:.2f} MiB |" in text
    assert f"| RAM | {one.weights_ram / mib:.2f} MiB | {one.kv_ram / mib:.2f} MiB |" in text
    assert "✅ fits (GPU + RAM)" in text and "no effect" not in text
    everything = gguf_report(info, 512, -1, "fp16", gpu, gpu_build=True)
    assert "✅ fits on the GPU" in everything
    tiny_gpu = Memory(gpus=(("GPU 0", 1000),), ram=8 * GIB)
    assert "do not fit in GPU memory; lower --n-gpu-layers" in gguf_report(info, 512, -1, "fp16", tiny_gpu, True)


def load_bench():
    import importlib.util
    import sys

    from webui.settings import PROJECT_ROOT

    sys.path.insert(0, str(PROJECT_ROOT / "bench"))  # the script imports bench/report.py
    spec = importlib.util.spec_from_file_location("gguf_gpu", PROJECT_ROOT / "bench" / "gguf_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_bench_exits_cleanly_on_a_cpu_build_and_its_measurement_runs(gguf_root, monkeypatch):
    import os
    import subprocess
    import sys

    from webui.settings import PROJECT_ROOT

    lib = require_llama_cpp()
    if not lib.llama_supports_gpu_offload():
        done = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "gguf_gpu.py"), "--gguf", str(gguf_root / Q8)],
                              env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, capture_output=True, text=True,
                              timeout=240, check=False)
        assert done.returncode == 0 and "has no GPU backend" in done.stdout, done.stderr[-2000:]
    bench = load_bench()
    # Only the GPU memory reading (CUDA through torch) is replaced; the load and decode are real.
    monkeypatch.setattr(bench, "gpu_free", lambda: 0)
    result = bench.run(gguf_root / Q8, 1, 6)
    assert len(result["tokens"]) == 6 and result["rate"] > 0
    assert result["gpu_estimate"] == gguf_estimate(read_info(gguf_root / Q8), 2048, 1, "fp16").gpu
    if not lib.llama_supports_gpu_offload():
        assert result["offloaded"] is None and result["device"] == "cpu"
