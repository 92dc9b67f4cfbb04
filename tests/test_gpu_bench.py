"""bench/gpu_quant.py: exits cleanly without CUDA, and its split asks accelerate for a
GPU+CPU placement through the app's own loader arguments."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from webui.loaders.hf_kwargs import Machine, from_pretrained_kwargs
from webui.settings import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "bench" / "gpu_quant.py"


def load_script(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # the script imports bench/report.py
    spec = importlib.util.spec_from_file_location("gpu_quant", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the script would measure")
def test_without_cuda_it_says_so_and_exits_zero():
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no CUDA GPU" in done.stdout


def test_split_is_half_the_16bit_weights_on_the_gpu_rest_in_ram(monkeypatch):
    script = load_script(monkeypatch)
    options = script.split_options(2_200_000_000)
    kwargs = from_pretrained_kwargs(options, Machine(1))
    assert kwargs["device_map"] == "auto"
    assert kwargs["max_memory"] == {0: "1.02GiB", "cpu": "64GiB"}
    assert kwargs["dtype"] == torch.bfloat16
    # The ~1B config is TinyLlama's shape.
    config = script.config()
    assert config.num_hidden_layers == 22 and config.hidden_size == 2048
