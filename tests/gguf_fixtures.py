"""Tiny GGUF models for the llama.cpp tests, built once per session (no downloads).

The tests' tiny Llama (SentencePiece tokenizer, random weights) is converted with
llama.cpp's own converter (webui/loaders/gguf_convert.py) to F32, so its greedy output
can be compared token for token with the Transformers loader on the same weights, and
quantized to Q8_0 with llama.cpp's quantizer.  Loaded as a pytest plugin from
tests/conftest.py.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path

import pytest

from tests.tiny_models import build_llama

HF_NAME = "tiny-llama"
F32 = "tiny-f32.gguf"
Q8 = "tiny-q8_0.gguf"
FOLDER = "tiny-GGUF"  # a folder holding both quantizations


def require_llama_cpp():
    """The llama.cpp tests run in CI (./test.sh installs the gguf extra); they fail, not
    skip, when it is missing, unless WEBUI_SKIP_GGUF=1 says that is intended."""
    try:
        import llama_cpp
    except ImportError:
        if os.environ.get("WEBUI_SKIP_GGUF") == "1":
            pytest.skip("llama-cpp-python not installed (WEBUI_SKIP_GGUF=1)")
        raise
    return llama_cpp


def quantize(source: Path, target: Path, ftype_name: str = "LLAMA_FTYPE_MOSTLY_Q8_0") -> Path:
    lib = require_llama_cpp()
    params = lib.llama_model_quantize_default_params()
    params.ftype = getattr(lib, ftype_name)
    params.nthread = 1
    status = lib.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    assert status == 0, f"llama_model_quantize returned {status}"
    return target


@pytest.fixture(scope="session")
def gguf_root(tmp_path_factory) -> Path:
    """models/ with the tiny Llama as a Transformers folder, as F32 and Q8_0 .gguf files,
    and as a folder holding both."""
    from webui.loaders.gguf_convert import convert, converter

    require_llama_cpp()
    script = converter()  # tests never download: scripts/install.sh gguf fetched it
    assert script is not None, "llama.cpp's converter is missing: run scripts/install.sh gguf"

    root = tmp_path_factory.mktemp("gguf_models")
    folder = build_llama(root / HF_NAME)
    convert(folder, root / F32, "f32", script)
    quantize(root / F32, root / Q8)
    both = root / FOLDER
    both.mkdir()
    for name in (F32, Q8):
        shutil.copy(root / name, both / name)
    return root
