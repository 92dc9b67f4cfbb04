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


SPLIT = "tiny-split"  # a folder holding the F32 model cut into SPLIT_PARTS parts
SPLIT_PARTS = 3


def write_split(source: Path, target: Path, parts: int) -> list[Path]:
    """Copy a GGUF file into `parts` files named as llama.cpp's gguf-split names them
    (`STEM-00001-of-0000N.gguf`, from `target`'s stem), with the split.no / split.count /
    split.tensors.count keys that llama.cpp reads to find and check the other parts.
    The gguf package's writer does the splitting; metadata goes into the first part."""
    import gguf

    reader = gguf.GGUFReader(source)
    tensors = list(reader.tensors)
    per_part = -(-len(tensors) // parts)
    writer = gguf.GGUFWriter(target, str(reader.fields["general.architecture"].contents()),
                             split_max_tensors=per_part)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # the header's own counts, and what the writer writes itself
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), kind, sub_type=sub)
    for tensor in tensors:
        writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes,
                               tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in tensors:
        writer.write_tensor_data(tensor.data)
    writer.close()
    written = [target.with_name(f"{target.stem}-{i:05d}-of-{parts:05d}.gguf") for i in range(1, parts + 1)]
    assert all(path.is_file() for path in written), sorted(target.parent.iterdir())
    return written


@pytest.fixture(scope="session")
def gguf_split(gguf_root) -> Path:
    """models/tiny-split/: the F32 tiny model as SPLIT_PARTS parts; returns the first part."""
    folder = gguf_root / SPLIT
    folder.mkdir(exist_ok=True)
    return write_split(gguf_root / F32, folder / "tiny-f32.gguf", SPLIT_PARTS)[0]


# Runs llama.cpp's converter on several models in one process (each conversion in its
# own process would import torch again: most of the time), its BPE pre-tokenizer lookup
# answering a given name where one is given.  The converter names a GPT-2-style
# vocabulary's pre-tokenizer by hashing the ids its tokenizer gives a fixed text
# (get_vocab_base_pre), a table of the real vocabularies that no tiny one can be in;
# everything else (hyperparameters, tensors, vocabulary, special tokens, chat template)
# is the converter's own work.
_BATCH_SHIM = """
import json, runpy, sys
from pathlib import Path
script = Path(sys.argv[1])
sys.path.insert(1, str(script.parent / "gguf-py"))
sys.path.insert(0, str(script.parent))
import conversion.base
lookup = conversion.base.TextModel.get_vocab_base_pre
for source, out, outtype, pre in json.loads(sys.argv[2]):
    conversion.base.TextModel.get_vocab_base_pre = (lambda self, tokenizer, pre=pre: pre) if pre else lookup
    sys.argv = [str(script), source, "--outtype", outtype, "--outfile", out]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        if exc.code:
            raise
"""


def convert_many(jobs: list[tuple[Path, Path, str | None]], outtype: str = "f32") -> None:
    """Each (model folder, GGUF file, pre-tokenizer name or None) converted by llama.cpp's
    converter, as webui/loaders/gguf_convert.py's convert() would, in one process."""
    import json
    import subprocess
    import sys
    import tempfile

    from webui.loaders.gguf_convert import converter, staged

    script = converter()
    assert script is not None, "llama.cpp's converter is missing: run scripts/install.sh gguf"
    with tempfile.TemporaryDirectory() as tmp:
        plan = []
        for index, (folder, out, pre) in enumerate(jobs):
            (Path(tmp) / str(index)).mkdir()
            plan.append((str(staged(folder, Path(tmp) / str(index))), str(out), outtype, pre))
        command = [sys.executable, "-c", _BATCH_SHIM, str(script), json.dumps(plan)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
    missing = [str(out) for _, out, _ in jobs if not out.is_file()]
    assert done.returncode == 0 and not missing, (missing, done.stderr[-3000:])
