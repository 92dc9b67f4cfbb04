"""A tiny Qwen3 model trained to think before it answers, with Qwen3's real chat template.

Random weights would never write `<think>` … `</think>`, and a test that the app separates
thinking from the answer must see a model do it by itself.  So a 2-layer Qwen3 is trained
here for a few hundred steps (seconds on a CPU) on replies of the shape

    <think>\\nThe question is about water. Water is good.\\n</think>\\n\\nWater is the answer.<|im_end|>

for prompts rendered by the real template, with thinking on (the reply opens `<think>`
itself) and off (Qwen3's template then writes an empty block into the prompt and the
reply is only the answer).  Each topic has its own thinking and answer, so a test can
tell a reply about one topic from a reply about another.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import sentencepiece as spm
import torch
from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

from tests.tiny_models import CORPUS, TEMPLATES
from webui.chat.prompt import apply_template

TOPICS = ("water", "light", "bread", "fire", "land", "king")
QUESTIONS = ("Tell me about {}.", "What is {}?", "Say something about {}.")
SPECIAL = ["<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
           "<tool_response>", "</tool_response>"]
TEMPLATE = "qwen3.jinja"  # llama.cpp's copy of Qwen3's own template


def thinking_of(topic: str) -> str:
    return f"The question is about {topic}. {topic.capitalize()} is good."


def answer_of(topic: str) -> str:
    return f"{topic.capitalize()} is the answer."


def build_thinking_model(folder: Path, steps: int = 200, seed: int = 0) -> Path:
    """Train and save the model in `folder` (a models/ subfolder the app can load)."""
    folder.mkdir(parents=True, exist_ok=True)
    _build_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = (TEMPLATES / TEMPLATE).read_text(encoding="utf-8")
    tokenizer.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=end, pad_token_id=None, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    examples = _examples(tokenizer)
    _train(model, examples, steps, seed)
    model.generation_config.eos_token_id = [end]
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def _build_tokenizer(folder: Path) -> None:
    text = CORPUS.read_text(encoding="utf-8")[:200_000]
    lines = [text] + [thinking_of(t) + " " + answer_of(t) for t in TOPICS] * 50 + \
        [q.format(t) for q in QUESTIONS for t in TOPICS] * 20
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(folder / "tokenizer"), vocab_size=600,
        model_type="bpe", byte_fallback=True, character_coverage=0.9995, bos_id=1, eos_id=2, unk_id=0,
        pad_id=-1, num_threads=1, minloglevel=2, user_defined_symbols=SPECIAL,
        max_sentence_length=1_000_000,
    )
    (folder / "tokenizer.vocab").unlink()
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "<|im_end|>", "unk_token": "<unk>",
        "add_bos_token": False, "add_eos_token": False, "legacy": False,
    }))


def _examples(tokenizer) -> list[tuple[list[int], int]]:
    """(token ids, where the reply starts) for every question, thinking on and off."""
    out = []
    for topic in TOPICS:
        for question in QUESTIONS:
            messages = [{"role": "user", "content": question.format(topic)}]
            for thinking in (True, False):
                prompt = apply_template(tokenizer, messages, variables={"enable_thinking": thinking})
                reply = (f"<think>\n{thinking_of(topic)}\n</think>\n\n" if thinking else "") + answer_of(topic)
                prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
                reply_ids = tokenizer.encode(reply + "<|im_end|>", add_special_tokens=False)
                out.append((prompt_ids + reply_ids, len(prompt_ids)))
    return out


def _train(model, examples: list[tuple[list[int], int]], steps: int, seed: int) -> None:
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-3)
    model.train()
    # One thread: matrices this small gain nothing from more, and on a busy machine the
    # threads of an op wait for each other's time slices (seconds per step, measured).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _steps(model, optimizer, examples, steps, rng)
    finally:
        torch.set_num_threads(threads)
    model.eval()


def _steps(model, optimizer, examples: list[tuple[list[int], int]], steps: int, rng: random.Random) -> None:
    for _ in range(steps):
        batch = rng.sample(examples, min(16, len(examples)))
        width = max(len(ids) for ids, _ in batch)
        inputs = torch.zeros(len(batch), width, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, (ids, start) in enumerate(batch):
            inputs[row, : len(ids)] = torch.tensor(ids)
            labels[row, start: len(ids)] = torch.tensor(ids[start:])  # learn the reply only
            mask[row, : len(ids)] = 1
        loss = model(input_ids=inputs, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
