"""GGUF vision (docs/LOADERS.md, "GGUF vision"): a tiny Gemma 3
converts with llama.cpp's own converter into a GGUF and its mmproj, and llama.cpp's
multimodal library (llama-cpp-python's `llama_cpp.mtmd_cpp`) reads an image through them:
the prompt is split around the image, which the projector encodes into its tokens, and
different images give different greedy replies (run in a child process,
tests/mtmd_probe.py).  Then the folder holding both served as one model through the
real loader, its worker process and the engine (webui/loaders/gguf_vision.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gguf_fixtures import require_llama_cpp
from tests.tiny_vision import build_gemma3_gguf

PROBE = Path(__file__).parent / "mtmd_probe.py"
PROMPT = "<s><start_of_turn>user\n<image>What is in the picture?<end_of_turn>\n<start_of_turn>model\n"


@pytest.fixture(scope="module")
def gemma3_gguf(tmp_path_factory):
    require_llama_cpp()
    folder = build_gemma3_gguf(tmp_path_factory.mktemp("gguf-vision") / "tiny-gemma3-gguf")
    return folder / "tiny-gemma3.gguf", folder / "mmproj-tiny-gemma3.gguf"


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


# -- served: the folder (model + mmproj) through the real loader, the worker and the engine --
def probe_picture(spec: str):
    """The picture tests/mtmd_probe.py makes of "SEED:WxH", as a checked upload."""
    import random

    from PIL import Image

    from tests.tiny_vision import png
    from webui.images import check_image

    seed, size = spec.split(":")
    width, height = map(int, size.split("x"))
    raw = random.Random(int(seed)).randbytes(width * height * 3)
    return check_image(png(Image.frombytes("RGB", (width, height), raw)))


@pytest.fixture(scope="module")
def served(gemma3_gguf, tmp_path_factory):
    from webui.generation.backend import ServingOptions
    from webui.generation.engine import GenerationEngine
    from webui.loaders.base import LoadOptions
    from webui.loaders.registry import default_registry
    from webui.model_manager import ModelManager

    model, projector = gemma3_gguf
    root = tmp_path_factory.mktemp("gguf-vision-models")
    (root / "tiny-gemma3-gguf").mkdir()
    (root / "tiny-gemma3-gguf" / model.name).symlink_to(model)
    (root / "tiny-gemma3-gguf" / projector.name).symlink_to(projector)
    (root / "tiny-gemma3-text-gguf").mkdir()  # the same model without its projector: text only
    (root / "tiny-gemma3-text-gguf" / model.name).symlink_to(model)
    manager = ModelManager(root, default_registry(ServingOptions(max_batch=8)), LoadOptions(cpu=True))
    manager.load("tiny-gemma3-gguf")
    engine = GenerationEngine(manager)
    yield manager, engine
    engine.close()
    manager.unload()


def ask(engine, messages, n=8):
    from webui.chat.prompt import ChatPrompt, ChatSetup
    from webui.generation.engine import GenerationRequest
    from webui.generation.params import make_params

    request = GenerationRequest(ChatPrompt(ChatSetup(mode="instruct"), messages),
                                make_params({"temperature": 0.0, "max_new_tokens": n}), logprobs=0)
    stream = engine.generate(request)
    stream.text()
    return [entry.token_id for entry in stream.logprobs], stream.stats


def looking(*specs, question="What is in the picture?"):
    return [{"role": "user", "content": question, "images": tuple(probe_picture(s) for s in specs)}]


def test_the_folder_lists_as_one_model_that_sees(served):
    from webui.loaders.gguf_options import LlamaCppOptions
    from webui.runtime import gguf_fit_report

    manager, _ = served
    assert manager.names() == ["tiny-gemma3-gguf", "tiny-gemma3-text-gguf"]
    loaded = manager.current
    assert loaded.backend.capabilities.vision
    assert loaded.tokenizer.image_marker  # the chat template writes libmtmd's marker for each image
    report = gguf_fit_report(manager.model_dir / "tiny-gemma3-gguf", LlamaCppOptions(), None)
    assert "image projector `mmproj-tiny-gemma3.gguf`" in report  # counted with the weights
    assert "mmproj" not in gguf_fit_report(manager.model_dir / "tiny-gemma3-text-gguf", LlamaCppOptions(), None)


def test_the_reply_equals_llama_cpps_own_multimodal_run(served, gemma3_gguf):
    from webui.chat.prompt import render_chat_prompt

    manager, engine = served
    model, projector = gemma3_gguf
    tokenizer = manager.current.tokenizer
    messages = looking("1:32x32")
    ids, stats = ask(engine, messages)
    text = render_chat_prompt(tokenizer, messages)
    assert text.count(tokenizer.image_marker) == 1
    done = subprocess.run([sys.executable, str(PROBE), str(model), str(projector), text, "1:32x32"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = json.loads(done.stdout.strip().splitlines()[-1])[0]
    assert ids and ids == reference["tokens"][: len(ids)]
    assert stats.prompt_tokens == reference["positions"]  # the image counted as its 4 tokens


def test_different_images_give_different_replies(served):
    _, engine = served
    replies = {tuple(ask(engine, looking(spec))[0]) for spec in ("1:32x32", "2:32x32", "3:40x24")}
    assert len(replies) == 3


def test_a_follow_up_turn_about_the_same_image_reuses_its_cells(served):
    manager, engine = served
    first = looking("4:32x32")
    answer, _ = ask(engine, first)
    follow = [*first, {"role": "assistant", "content": manager.current.tokenizer.decode(answer)},
              {"role": "user", "content": "And what colour is it?"}]
    warm, stats = ask(engine, follow)
    image_end = ask_positions_before_question(manager, first)
    assert stats.cached_tokens >= image_end > 4  # the image came from the cache, not encoded again
    manager.current.backend.clear_cache()
    cold, cold_stats = ask(engine, follow)
    assert cold_stats.cached_tokens == 0 and cold == warm


def ask_positions_before_question(manager, messages) -> int:
    """Where the first turn's image ends in the prompt (its placeholders' last position + 1)."""
    from webui.chat.prompt import render_chat_prompt

    backend = manager.current.backend
    prompt = backend.encode_images(render_chat_prompt(manager.current.tokenizer, messages),
                                   tuple(i for m in messages for i in m["images"]))
    return prompt.spans[-1].end


def test_an_image_request_batched_with_text_requests_gives_its_solo_tokens(served):
    import threading

    _, engine = served
    alone, _ = ask(engine, looking("5:32x32"), n=20)
    texts = [[{"role": "user", "content": f"Tell me about the sea, part {i}"}] for i in range(4)]
    solo = [ask(engine, t, n=20)[0] for t in texts]
    results: dict[int, list[int]] = {}
    jobs = [*texts[:2], looking("5:32x32"), *texts[2:]]

    def run(index):
        results[index] = ask(engine, jobs[index], n=20)[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert results[2] == alone
    assert [results[i] for i in (0, 1, 3, 4)] == solo


def test_the_model_without_its_projector_says_it_cannot_see(served):
    from webui.generation.request import CannotSee

    manager, engine = served
    manager.load("tiny-gemma3-text-gguf")
    try:
        assert not manager.current.backend.capabilities.vision
        with pytest.raises(CannotSee):
            ask(engine, looking("1:32x32"))
        assert ask(engine, [{"role": "user", "content": "Hello"}], n=3)[0]
    finally:
        manager.load("tiny-gemma3-gguf")


def test_the_gguf_vision_model_answers_through_the_api(served, tmp_path_factory):
    import base64

    import openai

    from tests.conftest import API_KEY, free_port, make_settings
    from tests.tiny_vision import png
    from webui.api.openai_api import APIServer
    from webui.chat.prompt import ChatPrompt, ChatSetup
    from webui.generation.engine import GenerationRequest
    from webui.generation.params import make_params
    from webui.runtime import build_runtime

    manager, engine = served
    messages = looking("6:32x32")
    direct = engine.generate(GenerationRequest(ChatPrompt(ChatSetup(mode="instruct"), messages),
                                               make_params({"temperature": 0.0, "max_new_tokens": 8}))).text()
    runtime = build_runtime(make_settings(manager.model_dir, tmp_path_factory.mktemp("gguf-vision-api"),
                                          model="tiny-gemma3-gguf", api_key=API_KEY))
    server = APIServer(runtime, port=free_port())
    url = server.start()
    try:
        client = openai.OpenAI(base_url=url, api_key=API_KEY, max_retries=0, timeout=120)
        picture = base64.b64encode(png(messages[0]["images"][0].image)).decode()
        reply = client.chat.completions.create(
            model="tiny-gemma3-gguf", temperature=0, max_tokens=8,
            messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{picture}"}},
                {"type": "text", "text": "What is in the picture?"}]}])
        assert reply.choices[0].message.content == direct
        assert reply.usage.prompt_tokens > 4 + len(manager.current.tokenizer("What is in the picture?")["input_ids"])
        card = next(m for m in client.models.list().data if m.id == "tiny-gemma3-gguf")
        assert "vision" in card.capabilities
    finally:
        server.stop()
        runtime.engine.close()
        runtime.models.unload()


def test_libmtmd_says_nothing_on_the_terminal_at_load(served, capfd):
    manager, _ = served
    capfd.readouterr()
    manager.load("tiny-gemma3-gguf")  # again: a fresh worker opens the projector
    assert manager.current.backend.capabilities.vision
    err = capfd.readouterr().err
    assert "clip_model_loader" not in err and "tensor[" not in err  # its INFO lines go to the "llama.cpp" logger
