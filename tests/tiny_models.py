"""Build tiny real models for tests: random weights, a real SentencePiece tokenizer.

Same architecture code paths as the big models (transformers' Llama classes), but
small enough to create, save and load in well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import sentencepiece as spm
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma2Config,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    Phi3Config,
    Qwen2Config,
)

CORPUS = Path(__file__).parent / "data" / "corpus.txt"
TEMPLATES = Path(__file__).parent / "data" / "chat_templates"

# Each family: its transformers config class and its chat template file.  Sizes keep
# every quantized Linear's out_features a multiple of 32, which bitsandbytes' 4-bit CPU
# kernel needs (head_dim 16 x 2 key/value heads = 32).
FAMILIES = {
    "llama": (LlamaConfig, "llama-3-chat.jinja"),
    "mistral": (MistralConfig, "mistral-instruct.jinja"),
    "qwen2": (Qwen2Config, "qwen2.5-instruct.jinja"),
    "gemma2": (Gemma2Config, "gemma-it.jinja"),
    "phi3": (Phi3Config, "phi-3.jinja"),
}


def family_template(filename: str) -> str:
    """A template from tests/data/chat_templates in the form its collection uses.

    The files are indented for reading (see their README): all but the Qwen one carry
    no meaningful newlines and are stripped; the Qwen one controls its whitespace with
    `-` tags and has newlines inside strings, so it is used as is.
    """
    text = (TEMPLATES / filename).read_text(encoding="utf-8")
    if filename.startswith("qwen"):
        return text
    return text.replace("    ", "").replace("\n", "")


def build_family(folder: Path, family: str, seed: int = 0, context: int = 512) -> Path:
    """A 2-layer, hidden-64 random-weight model of `family` with its chat template."""
    config_class, template = FAMILIES[family]
    build_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = family_template(template)
    extra = {}
    if family == "gemma2":
        # Gemma's defaults (head_dim 256) are for the big models.
        extra = {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 128}
    config = tiny_config(config_class, tokenizer, context, pad_token_id=None, **extra)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tokenizer(folder: Path, vocab_size: int = 512) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        input=str(CORPUS),
        model_prefix=str(folder / "tokenizer"),
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,  # any UTF-8 text encodes, via byte tokens if need be
        character_coverage=0.9995,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    (folder / "tokenizer.vocab").unlink()
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "LlamaTokenizer",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "add_bos_token": True,
                "add_eos_token": False,
                "legacy": False,
                "chat_template": CHAT_TEMPLATE,
            }
        )
    )


def tiny_config(config_class, tokenizer, context: int, **extra):
    """Two layers, hidden 64, four heads (two key/value): the same shape for every family."""
    return config_class(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **extra,
    )


def build_llama(folder: Path, seed: int = 0, context: int = 512) -> Path:
    """A 2-layer, hidden-64 Llama with a trained tokenizer, saved as safetensors."""
    build_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = tiny_config(LlamaConfig, tokenizer, context)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
