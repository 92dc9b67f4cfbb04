"""Images in: time to first token for one 512x512 image ÷ the same text without it, and a
follow-up turn about the same image (its KV reused from the prefix cache) ÷ computing it
afresh, through our engine, in one run.

    .venv/bin/python bench/bench_vision.py [--rounds 5]
    .venv/bin/python bench/bench_vision.py --model-dir DIR --model NAME [--gpu]   # a real vision model

Without --model it builds the tests' tiny random-weight LLaVA, SmolVLM (Idefics3) and
Gemma 3 models, and the Gemma 3 converted to a GGUF and its mmproj by llama.cpp's converter
(tests/tiny_vision.py): their processors shrink the picture to 32 x 32 (Gemma 3's
projector on GGUF: to its 32 x 32 too), so the
ratio mostly measures the processor and the prompt's extra image tokens, not a real
vision tower.  With --model, any vision model folder (e.g. a ~2B SmolVLM, Qwen2-VL-2B or
Gemma 3 4B on a GPU) is loaded as the app loads it, and the same figures come out.

Each request asks for one token, so its time is the prefill: tokenizing, the image
processor, the vision tower and the prompt's forward pass.  The prefix cache is cleared
before every cold request; the "follow-up" request sends the same conversation plus one
more turn, right after a cold one, as a chat's next message would.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from report import figure  # noqa: E402

QUESTION = "Describe this picture in detail, please: what is in it, and what colours do you see?"


def picture_512():
    from tests.tiny_vision import picture

    return picture(11, (512, 512))


def request(images, follow_up: bool = False):
    from webui.chat.prompt import ChatPrompt, ChatSetup
    from webui.generation.engine import GenerationRequest
    from webui.generation.params import make_params

    turns = [{"role": "user", "content": QUESTION, "images": tuple(images)}]
    if follow_up:
        turns += [{"role": "assistant", "content": "A picture of coloured squares."},
                  {"role": "user", "content": "Which colour covers most of it?"}]
    params = make_params({"temperature": 0.0, "max_new_tokens": 1, "ban_eos_token": True})
    return GenerationRequest(ChatPrompt(ChatSetup(mode="instruct"), turns), params)


def timed(engine, backend, images, follow_up=False, clear=True) -> tuple[float, int, int]:
    if clear:
        backend.clear_cache()
    started = time.perf_counter()
    stream = engine.generate(request(images, follow_up))
    stream.text()
    return time.perf_counter() - started, stream.stats.prompt_tokens, stream.stats.cached_tokens


def measure(label: str, models: Path, name: str, rounds: int, gpu: bool) -> None:
    from webui.generation.backend import ServingOptions
    from webui.generation.engine import GenerationEngine
    from webui.images import check_image
    from webui.loaders.base import LoadOptions
    from webui.loaders.registry import default_registry
    from webui.model_manager import ModelManager
    from tests.tiny_vision import png

    manager = ModelManager(models, default_registry(ServingOptions(max_batch=8)), LoadOptions(cpu=not gpu))
    loaded = manager.load(name)
    engine = GenerationEngine(manager)
    backend = loaded.backend
    image = check_image(png(picture_512()))
    try:
        for _ in range(2):  # warm-up: first calls allocate and pick kernels
            timed(engine, backend, [image])
            timed(engine, backend, [])
        with_image, text_only, follow_cold, follow_hot = [], [], [], []
        for _ in range(rounds):
            seconds, image_tokens, _ = timed(engine, backend, [image])
            with_image.append(seconds)
            seconds, text_tokens, _ = timed(engine, backend, [])
            text_only.append(seconds)
            follow_cold.append(timed(engine, backend, [image], follow_up=True)[0])
            timed(engine, backend, [image])  # the first turn, as a chat sent it
            seconds, _, reused = timed(engine, backend, [image], follow_up=True, clear=False)
            follow_hot.append(seconds)
        image_ms, text_ms = statistics.median(with_image) * 1e3, statistics.median(text_only) * 1e3
        cold_ms, hot_ms = statistics.median(follow_cold) * 1e3, statistics.median(follow_hot) * 1e3
        print(f"{label}: prompt {image_tokens} tokens with the image, {text_tokens} without; first token "
              f"{image_ms:.1f} ms with the image, {text_ms:.1f} ms without; follow-up {cold_ms:.1f} ms cold, "
              f"{hot_ms:.1f} ms with {reused} tokens reused", flush=True)
        where = "GPU" if gpu else "CPU"
        figure(f"first token, one 512x512 image ÷ the same text ({label}, {where})", f"{image_ms / text_ms:.2f}",
               f"{image_ms:.1f} ms vs {text_ms:.1f} ms; prompt {image_tokens} vs {text_tokens} tokens; "
               f"median of {rounds}")
        figure(f"first token of a follow-up turn about the same image, KV reused ÷ computed afresh ({label}, {where})",
               f"{hot_ms / cold_ms:.2f}", f"{hot_ms:.1f} ms vs {cold_ms:.1f} ms; {reused} prompt tokens reused; "
               f"median of {rounds}")
    finally:
        engine.close()
        manager.unload()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model-dir", type=Path, help="a folder of models (with --model)")
    parser.add_argument("--model", help="a vision model folder's name in --model-dir")
    parser.add_argument("--gpu", action="store_true", help="load on the GPU (default: the CPU)")
    args = parser.parse_args()
    if args.model:
        measure(args.model, args.model_dir, args.model, args.rounds, args.gpu)
        return
    from tests.tiny_vision import FAMILIES, build_gemma3_gguf, build_vision

    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILIES:
            build_vision(Path(tmp) / f"tiny-{family}", family)
            measure(f"tiny {family}", Path(tmp), f"tiny-{family}", args.rounds, args.gpu)
        try:
            import llama_cpp  # noqa: F401 - the GGUF run needs the gguf extra
        except ImportError:
            print("GGUF vision skipped: llama-cpp-python is not installed (scripts/install.sh gguf)")
            return
        build_gemma3_gguf(Path(tmp) / "tiny-gemma3-gguf")
        measure("tiny gemma3, GGUF + mmproj", Path(tmp), "tiny-gemma3-gguf", args.rounds, args.gpu)


if __name__ == "__main__":
    main()
