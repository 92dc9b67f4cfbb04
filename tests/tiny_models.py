"""Build tiny real models for tests: random weights, a real SentencePiece tokenizer.

Same architecture code paths as the big models (transformers' own classes), but
small enough to create, save and load in well under a second.  FAMILIES are the five
older families; NEW_FAMILIES the ones people run today (Qwen3, Gemma 3, Llama 4,
Mistral 3, Phi-4, gpt-oss, the DeepSeek-R1 distills), each with its real chat template,
its chat markers as special tokens and its end-of-turn ids in generation_config.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import sentencepiece as spm
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma2Config,
    Gemma3TextConfig,
    GenerationConfig,
    GptOssConfig,
    Llama4TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Ministral3Config,
    MistralConfig,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
    Qwen3MoeConfig,
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


# -- the families of today ----------------------------------------------------------------
_CHATML = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
_QWEN3 = (*_CHATML, "<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
_DEEPSEEK = ("<｜User｜>", "<｜Assistant｜>", "<think>", "</think>", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>",
             "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>", "<｜tool▁outputs▁begin｜>",
             "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>")
_MISTRAL = ("[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
            "[TOOL_CALLS]", "[CALL_ID]", "[ARGS]", "[TOOL_RESULTS]", "[TOOL_CONTENT]", "[/TOOL_RESULTS]", "[IMG]")
# Mixture-of-experts layers: 4 experts of width 32, 2 per token (1 for Llama 4, as Scout).
_MOE = {"num_local_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "norm_topk_prob": True}


@dataclass(frozen=True)
class Family:
    """One family of today as a tiny model: its transformers config class (text model),
    its chat template (tests/data/chat_templates, used verbatim), the markers its
    tokenizer keeps whole, its BOS/EOS pieces, the tokenizer's end-of-text token, the
    ids generation stops on (generation_config.json, as the family ships them) and
    config values the tiny shape needs."""

    config: type
    template: str
    specials: tuple[str, ...] = ()
    bos: str = "<s>"
    eos: str = "</s>"
    eos_token: str | None = None  # the tokenizer's end of text, where not `eos`
    stop_on: tuple[str, ...] = ()  # generation_config's eos_token_id, as tokens
    add_bos: bool = True
    # The vocabulary kind: "spm" (SentencePiece) or "bpe" (GPT-2-style byte-level BPE,
    # as the real Qwen3-MoE, Llama 4 and gpt-oss have: llama.cpp's converter writes
    # these architectures' vocabularies only in that form).
    vocab: str = "spm"
    extra: dict = field(default_factory=dict)

    def template_text(self) -> str:
        return (TEMPLATES / self.template).read_text(encoding="utf-8")


NEW_FAMILIES = {
    "qwen3": Family(Qwen3Config, "qwen3.jinja", _QWEN3, eos_token="<|im_end|>", add_bos=False,
                    stop_on=("<|im_end|>", "<|endoftext|>"), extra={"head_dim": 16}),
    "qwen3_moe": Family(Qwen3MoeConfig, "qwen3.jinja", _QWEN3, eos_token="<|im_end|>", add_bos=False, vocab="bpe",
                       
                        stop_on=("<|im_end|>", "<|endoftext|>"), extra={"head_dim": 16, **_MOE}),
    "gemma3_text": Family(Gemma3TextConfig, "gemma3.jinja", ("<start_of_turn>", "<end_of_turn>", "<start_of_image>"),
                          bos="<bos>", eos="<eos>", stop_on=("<eos>", "<end_of_turn>"),
                          extra={"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 128,
                                 "layer_types": ["sliding_attention", "full_attention"]}),
    "llama4_text": Family(Llama4TextConfig, "llama4.jinja",
                          ("<|header_start|>", "<|header_end|>", "<|eot|>", "<|eom|>", "<|python_start|>",
                           "<|python_end|>", "<|image|>"),
                          bos="<|begin_of_text|>", eos="<|end_of_text|>", eos_token="<|eot|>", vocab="bpe",
                          stop_on=("<|end_of_text|>", "<|eom|>", "<|eot|>"),
                          # Experts 64 wide: bitsandbytes' CPU 4-bit kernel wants the shared
                          # expert's down projection at least one 64-block wide.  Four layers,
                          # the fourth without RoPE, chunks of 8192 and the attention
                          # temperature's floor as llama.cpp fixes them for Llama 4 (with
                          # fewer layers it has no NoPE layer and aborts on an unused input).
                          extra={"head_dim": 16, "intermediate_size": 64, "intermediate_size_mlp": 128,
                                 "num_local_experts": 4, "num_experts_per_tok": 1, "interleave_moe_layer_step": 1,
                                 "num_hidden_layers": 4, "no_rope_layers": [1, 1, 1, 0],
                                 "attention_chunk_size": 8192, "floor_scale": 8192}),
    "mistral3": Family(MistralConfig, "mistral-small-3.2.jinja", _MISTRAL, stop_on=("</s>",), extra={"head_dim": 16}),
    "ministral3": Family(Ministral3Config, "ministral-3-reasoning.jinja", (*_MISTRAL, "[THINK]", "[/THINK]"),
                         stop_on=("</s>",),
                         extra={"head_dim": 16, "rope_parameters": {
                             "rope_type": "yarn", "rope_theta": 1_000_000.0, "factor": 8.0,
                             "original_max_position_embeddings": 256, "beta_fast": 32.0, "beta_slow": 1.0,
                             "mscale_all_dim": 1.0, "mscale": 1.0, "llama_4_scaling_beta": 0.1}}),
    "phi4_mini": Family(Phi3Config, "phi-4-mini.jinja",
                        ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|tool|>", "<|/tool|>"),
                        eos="<|endoftext|>", add_bos=False, stop_on=("<|endoftext|>", "<|end|>"),
                        extra={"partial_rotary_factor": 0.75, "tie_word_embeddings": True}),
    "phi4_reasoning": Family(Phi3Config, "phi-4-reasoning.jinja", ("<|im_start|>", "<|im_sep|>", "<|im_end|>",
                                                                   "<think>", "</think>"),
                             eos="<|endoftext|>", eos_token="<|im_end|>", add_bos=False,
                             stop_on=("<|im_end|>", "<|endoftext|>")),
    "gpt_oss": Family(GptOssConfig, "gpt-oss.jinja",
                      ("<|start|>", "<|message|>", "<|end|>", "<|channel|>", "<|constrain|>", "<|return|>",
                       "<|call|>"),
                      bos="<|startoftext|>", eos="<|endoftext|>", eos_token="<|return|>", add_bos=False, vocab="bpe",
                      stop_on=("<|return|>", "<|endoftext|>", "<|call|>"),
                      extra={"head_dim": 16, "intermediate_size": 32, "num_local_experts": 4, "num_experts_per_tok": 2,
                             "sliding_window": 128, "layer_types": ["sliding_attention", "full_attention"],
                             "rope_parameters": {"rope_type": "yarn", "factor": 8.0, "beta_fast": 32.0, "beta_slow": 1.0,
                                                 "truncate": False, "original_max_position_embeddings": 256,
                                                 "rope_theta": 150000.0}}),
    "r1_distill_qwen": Family(Qwen2Config, "deepseek-r1-distill-qwen.jinja", _DEEPSEEK,
                              bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>",
                              stop_on=("<｜end▁of▁sentence｜>",)),
    "r1_distill_llama": Family(LlamaConfig, "deepseek-r1-distill-llama.jinja", _DEEPSEEK,
                               bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>",
                               stop_on=("<｜end▁of▁sentence｜>",)),
}


def build_new_family(folder: Path, family: str, seed: int = 0, context: int = 512) -> Path:
    """A 2-layer (Llama 4: 4), hidden-64 random-weight model of NEW_FAMILIES[family], saved as
    safetensors with its tokenizer, real chat template and generation_config.json."""
    spec = NEW_FAMILIES[family]
    build = build_bpe_tokenizer if spec.vocab == "bpe" else build_tokenizer
    build(folder, specials=spec.specials, bos=spec.bos, eos=spec.eos, add_bos=spec.add_bos,
          eos_token=spec.eos_token, space_prefix=False)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = spec.template_text()
    config = tiny_config(spec.config, tokenizer, context, pad_token_id=None, **spec.extra)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    stops = [tokenizer.convert_tokens_to_ids(token) for token in spec.stop_on]
    assert tokenizer.unk_token_id not in stops, f"{family}: a stop token is not in the vocabulary"
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=stops or None)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tokenizer(folder: Path, vocab_size: int = 512, *, specials: tuple[str, ...] = (),
                    bos: str = "<s>", eos: str = "</s>", add_bos: bool = True, eos_token: str | None = None,
                    space_prefix: bool = True) -> None:
    """A SentencePiece BPE tokenizer trained on tests/data/corpus.txt.

    `specials`: chat markers kept whole (SentencePiece user-defined pieces, and special
    tokens to transformers, which llama.cpp's converter then stores as control tokens);
    `bos`/`eos`: the pieces SentencePiece itself reserves; `eos_token`: the tokenizer's
    end-of-text token where a family's is one of its markers (Qwen's <|im_end|>);
    `space_prefix`: SentencePiece's dummy space before a text (the new families have
    none, as Gemma's vocabulary: llama.cpp would put it after every special token)."""
    folder.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        input=str(CORPUS),
        model_prefix=str(folder / "tokenizer"),
        vocab_size=vocab_size + len(specials),
        model_type="bpe",
        byte_fallback=True,  # any UTF-8 text encodes, via byte tokens if need be
        character_coverage=0.9995,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
        bos_piece=bos,
        eos_piece=eos,
        user_defined_symbols=list(specials),
        # NFKC would fold DeepSeek's full-width markers (<｜User｜>) into ASCII ones.
        normalization_rule_name="identity" if any(not c.isascii() for m in specials for c in m) else "nmt_nfkc",
        add_dummy_prefix=space_prefix,
        num_threads=1,
        minloglevel=2,
    )
    (folder / "tokenizer.vocab").unlink()
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": bos,
        "eos_token": eos_token or eos,
        "unk_token": "<unk>",
        "add_bos_token": add_bos,
        "add_eos_token": False,
        "legacy": False,
        "chat_template": CHAT_TEMPLATE,
    }
    if not space_prefix:
        config["add_prefix_space"] = False
    if specials:
        config["extra_special_tokens"] = [m for m in specials if m not in (bos, eos_token or eos)]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


# Qwen2's pre-tokenizer split (in its tokenizer.json, and llama.cpp's "qwen2" one).
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")


def build_bpe_tokenizer(folder: Path, vocab_size: int = 512, *, specials: tuple[str, ...] = (), bos: str = "<s>",
                        eos: str = "</s>", add_bos: bool = False, eos_token: str | None = None,
                        space_prefix: bool = False) -> None:
    """A GPT-2-style byte-level BPE tokenizer trained on tests/data/corpus.txt, split as
    Qwen2's is; `specials` as build_tokenizer's (`space_prefix` has no meaning here)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", bos, eos, *specials],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train([str(CORPUS)], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos, eos_token=eos_token or eos,
                                   unk_token="<unk>", extra_special_tokens=[m for m in specials if m != eos_token],
                                   add_bos_token=add_bos, chat_template=CHAT_TEMPLATE)
    fast.save_pretrained(folder)


def tiny_config(config_class, tokenizer, context: int, **extra):
    """Two layers, hidden 64, four heads (two key/value): the same shape for every family
    (`extra` adds to it or overrides it)."""
    shape = {"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": context,
             "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    return config_class(**{**shape, **extra})


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
