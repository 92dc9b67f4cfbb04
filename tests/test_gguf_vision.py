"""What works of GGUF vision so far (docs/LOADERS.md, "GGUF vision"): a tiny Gemma 3
converts with llama.cpp's own converter into a GGUF and its mmproj, and llama.cpp's
multimodal library (llama-cpp-python's `llama_cpp.mtmd_cpp`) reads an image through them:
the prompt is split around the image, which the projector encodes into its tokens, and
different images give different greedy replies.  Run in a child process
(tests/mtmd_probe.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.gguf_fixtures import require_llama_cpp
from tests.tiny_vision import build_gemma3

PROBE = Path(__file__).parent / "mtmd_probe.py"
PROMPT = "<s><start_of_turn>user\n<image>What is in the picture?<end_of_turn>\n<start_of_turn>model\n"


def legacy_names(folder: Path, out: Path) -> Path:
    """`folder` with the tensor names llama.cpp's converter knows: transformers 5 saves
    the SigLIP tower as `vision_tower.*`, the checkpoints it was written for say
    `vision_tower.vision_model.*`."""
    from safetensors.torch import load_file, save_file

    out.mkdir()
    for item in folder.iterdir():
        if item.name != "model.safetensors":
            (out / item.name).symlink_to(item.resolve())
    tensors = load_file(folder / "model.safetensors")
    renamed = {(name.replace("vision_tower.", "vision_tower.vision_model.", 1) if name.startswith("vision_tower.")
                else name): value.contiguous() for name, value in tensors.items()}
    save_file(renamed, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def gemma3_gguf(tmp_path_factory):
    from webui.loaders.gguf_convert import converter, staged

    require_llama_cpp()
    script = converter()
    assert script is not None, "llama.cpp's converter is missing: run scripts/install.sh gguf"
    root = tmp_path_factory.mktemp("gguf-vision")
    folder = legacy_names(build_gemma3(root / "tiny-gemma3-hf"), root / "tiny-gemma3-legacy")
    model, projector = root / "tiny-gemma3.gguf", root / "mmproj-tiny-gemma3.gguf"
    with tempfile.TemporaryDirectory() as tmp:
        source = staged(folder, Path(tmp))
        for extra, out in (((), model), (("--mmproj",), projector)):
            done = subprocess.run([sys.executable, str(script), str(source), "--outtype", "f32", "--outfile", str(out),
                                   *extra], capture_output=True, text=True, timeout=300)
            assert done.returncode == 0 and out.is_file(), done.stderr[-2000:]
    return model, projector


def probe(model: Path, projector: Path, *images: str) -> list[dict]:
    done = subprocess.run([sys.executable, str(PROBE), str(model), str(projector), PROMPT, *images],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_tiny_gemma3_and_its_mmproj_read_an_image_through_llama_cpp(gemma3_gguf):
    model, projector = gemma3_gguf
    assert projector.stat().st_size < 1 << 20  # the projector is a file of its own, tiny here
    one, other, resized = probe(model, projector, "1:32x32", "2:32x32", "1:48x40")
    # Text before, the image (encoded into its 4 tokens), text after.
    assert one["chunks"] == other["chunks"] == resized["chunks"] == 3
    text_only = probe_text_positions(model)
    assert one["positions"] == other["positions"] == resized["positions"] >= text_only + 4
    assert len(one["tokens"]) == len(resized["tokens"]) == 8  # another size is resized by the projector's preprocessor
    assert one["tokens"] != other["tokens"]  # the image reaches the reply


def probe_text_positions(model: Path) -> int:
    """Tokens of PROMPT without its image, from llama.cpp's own tokenizer."""
    code = ("import sys, llama_cpp as L\n"
            "L.llama_backend_init()\n"
            "m = L.llama_model_load_from_file(sys.argv[1].encode(), L.llama_model_default_params())\n"
            "v = L.llama_model_get_vocab(m)\n"
            "t = sys.argv[2].replace('<image>', '').encode()\n"
            "buf = (L.llama_token * 512)()\n"
            "print(L.llama_tokenize(v, t, len(t), buf, 512, False, True))\n")
    done = subprocess.run([sys.executable, "-c", code, str(model), PROMPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip().splitlines()[-1])
