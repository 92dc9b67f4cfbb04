"""Build tiny real models for tests: random weights, a real SentencePiece tokenizer.

Same architecture code paths as the big models (transformers' Llama classes), but
small enough to create, save and load in well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import sentencepiece as spm
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

CORPUS = Path(__file__).parent / "data" / "corpus.txt"

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


def build_llama(folder: Path, seed: int = 0, context: int = 512) -> Path:
    """A 2-layer, hidden-64 Llama with a trained tokenizer, saved as safetensors."""
    build_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
