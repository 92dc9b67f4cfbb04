"""Convert a Transformers model folder to GGUF with llama.cpp's own converter.

The converter (`convert_hf_to_gguf.py`, with its `conversion/` and `gguf-py/`) is not
part of this project: it ships inside llama-cpp-python's source package, under
`vendor/llama.cpp/`.  `converter()` finds an unpacked copy (LLAMA_CPP_SRC, or the
per-user cache), and `fetch_converter()` puts one there with pip (the only step here
that needs the network).  scripts/convert_to_gguf.py is the command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# The llama-cpp-python release whose converter is used when none is installed; the
# `gguf` extra in pyproject.toml pins the same one.
LLAMA_CPP_PYTHON = "0.3.36"
OUT_TYPES = ("f16", "q8_0", "bf16", "f32")
CONVERTER = Path("vendor") / "llama.cpp" / "convert_hf_to_gguf.py"


class ConvertError(RuntimeError):
    pass


def llama_cpp_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        return LLAMA_CPP_PYTHON


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "webui"


def converter(version: str | None = None) -> Path | None:
    """llama.cpp's convert_hf_to_gguf.py from an unpacked llama-cpp-python source, if any."""
    version = version or llama_cpp_version()
    candidates = []
    if os.environ.get("LLAMA_CPP_SRC"):
        root = Path(os.environ["LLAMA_CPP_SRC"])
        candidates += [root / CONVERTER, root / "convert_hf_to_gguf.py"]
    candidates.append(cache_dir() / f"llama_cpp_python-{version}" / CONVERTER)
    return next((path for path in candidates if path.is_file()), None)


def fetch_converter(version: str | None = None) -> Path:
    """Download llama-cpp-python's source package (pip, no build) and unpack it into the cache."""
    version = version or llama_cpp_version()
    found = converter(version)
    if found:
        return found
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        # --no-binary for this one package only: its build tools may come as wheels.
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
                   "llama-cpp-python", f"llama-cpp-python=={version}", "-d", tmp]
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if done.returncode or not archives:
            raise ConvertError(f"could not download llama-cpp-python {version}'s source: {done.stderr.strip()[-500:]}")
        with tarfile.open(archives[0]) as archive:
            archive.extractall(target, filter="data")  # "data": no links out, no absolute paths
    found = converter(version)
    if found is None:
        raise ConvertError(f"llama-cpp-python {version}'s source has no {CONVERTER}")
    return found


def convert(folder: Path, out: Path, outtype: str = "q8_0", script: Path | None = None) -> Path:
    """Write `folder` (a Transformers model with safetensors) as one GGUF file `out`."""
    if outtype not in OUT_TYPES:
        raise ConvertError(f"outtype must be one of {', '.join(OUT_TYPES)}")
    script = script or converter()
    if script is None:
        raise ConvertError("llama.cpp's converter is not here: run scripts/convert_to_gguf.py --fetch once "
                           "(it downloads llama-cpp-python's source), or set LLAMA_CPP_SRC")
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(script), str(folder), "--outtype", outtype, "--outfile", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
    if done.returncode or not out.is_file():
        raise ConvertError(f"conversion of {folder.name} to {outtype} failed:\n{done.stderr.strip()[-2000:]}")
    return out
