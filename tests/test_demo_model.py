"""The built-in demo model: present, small, documented, and able to chat."""

from __future__ import annotations

import json
import struct

import pytest

from webui.chat.prompt import render_chat_prompt
from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.loaders.base import LoadOptions
from webui.loaders.registry import default_registry
from webui.model_manager import ModelManager
from webui.generation.params import make_params
from webui.settings import DEMO_MODEL, PROJECT_ROOT, Settings

DEMO_DIR = PROJECT_ROOT / "models" / DEMO_MODEL


def test_demo_model_is_the_default():
    assert Settings().model == DEMO_MODEL
    assert Settings().model_dir == PROJECT_ROOT / "models"


def test_demo_model_files_are_small_safetensors_in_bf16():
    names = {p.name for p in DEMO_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.model", "chat_template.jinja", "README.md"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    total = sum(p.stat().st_size for p in DEMO_DIR.iterdir())
    assert total < 20 * 1024 * 1024
    with (DEMO_DIR / "model.safetensors").open("rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    dtypes = {t["dtype"] for k, t in header.items() if k != "__metadata__"}
    assert dtypes == {"BF16"}


def test_model_card_states_what_it_is():
    card = (DEMO_DIR / "README.md").read_text().lower()
    for needed in ("demo", "public domain", "king james", "parameters", "perplexity", "train_demo_model.py"):
        assert needed in card, needed


@pytest.fixture(scope="module")
def demo():
    manager = ModelManager(PROJECT_ROOT / "models", default_registry(), LoadOptions())
    manager.load(DEMO_MODEL)
    return manager


def test_demo_model_chats_and_ends_its_turn(demo):
    tokenizer = demo.current.tokenizer
    prompt = render_chat_prompt(tokenizer, [{"role": "user", "content": "Who made the heaven and the earth?"}])
    replies = []
    for seed in (1, 2, 3):
        params = make_params({"temperature": 0.7, "min_p": 0.05, "max_new_tokens": 120, "seed": seed})
        stream = GenerationEngine(demo).generate(GenerationRequest(prompt, params))
        replies.append((stream.text(), stream.stats))
    assert all(text.strip() for text, _ in replies)
    # Trained on chat-formatted examples: it ends its turn by itself, mostly.
    assert sum(stats.finish_reason == "stop" for _, stats in replies) >= 2
    # It writes words, not noise.
    words = " ".join(text for text, _ in replies).split()
    assert sum(w.strip(".,;:").isalpha() for w in words) / len(words) > 0.8
