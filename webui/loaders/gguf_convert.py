"""Convert a Transformers model folder to GGUF with llama.cpp's own converter.

The converter (`convert_hf_to_gguf.py`, with its `conversion/` and `gguf-py/`) is not
part of this project: it ships inside llama-cpp-python's source package, under
`vendor/llama.cpp/`.  `converter()` finds an unpacked copy (LLAMA_CPP_SRC, or the
per-user cache), and `fetch_converter()` puts one there with pip (the only step here
that needs the network).  scripts/convert_to_gguf.py is the command line.
"""

from __future__ import annotations

import json
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
    with tempfile.TemporaryDirectory() as tmp:
        source = staged(folder, Path(tmp))
        command = [sys.executable, str(script), str(source), "--outtype", outtype, "--outfile", str(out)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
    if done.returncode or not out.is_file():
        raise ConvertError(f"conversion of {folder.name} to {outtype} failed:\n{done.stderr.strip()[-2000:]}")
    return out


def staged(folder: Path, tmp: Path) -> Path:
    """`folder` as the converter should see it: links to its files, and a
    tokenizer_config.json that names the special tokens.

    llama.cpp's converter learns which added tokens are special (chat markers such as
    <|user|>, stored as CONTROL tokens so that llama.cpp reads them as one token and
    hides them in replies) from tokenizer_config.json's `added_tokens_decoder`, which
    transformers 5 no longer writes.  The same list is in tokenizer.json's
    `added_tokens`; without it the demo model's chat markers were cut into characters."""
    stage = tmp / folder.name
    stage.mkdir()
    for item in folder.iterdir():
        (stage / item.name).symlink_to(item.resolve())
    config_file, tokenizer_file = folder / "tokenizer_config.json", folder / "tokenizer.json"
    if not (config_file.is_file() and tokenizer_file.is_file()):
        return stage
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        added = json.loads(tokenizer_file.read_text(encoding="utf-8")).get("added_tokens") or []
    except (OSError, ValueError) as exc:
        raise ConvertError(f"{folder.name}: unreadable tokenizer files ({exc})") from exc
    if not isinstance(config, dict) or "added_tokens_decoder" in config:
        return stage
    config["added_tokens_decoder"] = {
        str(token["id"]): {"content": token["content"], "special": bool(token.get("special"))}
        for token in added if isinstance(token, dict) and isinstance(token.get("id"), int)
        and isinstance(token.get("content"), str)
    }
    (stage / config_file.name).unlink()
    (stage / config_file.name).write_text(json.dumps(config, indent=2), encoding="utf-8")
    return stage
