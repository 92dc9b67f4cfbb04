"""The model families people run today, as tiny random-weight models, on every local backend.

Qwen3 (dense and MoE), Gemma 3 (text), Llama 4 (text), Mistral Small 3.2 and Ministral 3,
Phi-4-mini and Phi-4-reasoning, gpt-oss and the DeepSeek-R1 distills (Qwen2 and Llama
architectures): tests/tiny_models.py builds each with its real chat template
(tests/data/chat_templates/README.md says where each comes from) and its chat markers as
special tokens.  For each family:

- golden prompts: what the app renders (its budgeted Jinja sandbox) for a system +
  multi-turn chat and for a tool conversation equals what transformers'
  apply_chat_template renders with the family's own template, and a literal copy of
  the main prompt, so a change that broke both would show;
- a chat through the app on Transformers: loaded by the ModelManager, rendered by the
  chat's ChatPrompt, streamed by the engine with the same greedy reply as transformers'
  own generate(), stopping on the ids the family's generation_config.json names;
- the same as GGUF: converted by llama.cpp's own converter, loaded by the llama.cpp
  backend, the same prompt from the template the GGUF carries, streamed, and the same
  greedy reply as transformers computes from the same weights;
- "Will it fit?" for the mixture-of-experts families: the estimate is what a load holds.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.gguf_fixtures import convert_many, require_llama_cpp
from tests.test_fit import CONTEXT as FIT_CONTEXT
from tests.test_fit import PRECISIONS as FIT_PRECISIONS
from tests.test_fit import measured_bytes
from tests.tiny_models import NEW_FAMILIES, build_new_family
from webui.chat.prompt import ChatPrompt, ChatSetup, render_chat_prompt, turn_end_stops
from webui.chat.tools import fallback_system, read_tools, render_with_tools
from webui.generation.detok import IncrementalDecoder
from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.generation.params import make_params
from webui.generation.request import prompt_ids
from webui.fit import Memory, estimate, read_shape, report
from webui.loaders.base import LoadOptions
from webui.loaders.hf_transformers import TransformersLoader
from webui.loaders.registry import default_registry
from webui.model_manager import ModelManager

SYSTEM = "Be brief."
HISTORY = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Who are you?"},
]
PHI4_REASONING_SYSTEM = (
    "You are Phi, a language model trained by Microsoft to help users. Your role as an assistant involves "
    "thoroughly exploring questions through a systematic thinking process before providing the final precise and "
    "accurate solutions. This requires engaging in a comprehensive cycle of analysis, summarizing, exploration, "
    "reassessment, reflection, backtracing, and iteration to develop well-considered thinking process. Please "
    "structure your response into two main sections: Thought and Solution using the specified format: <think> "
    "{Thought section} </think> {Solution section}. In the Thought section, detail your reasoning process in steps. "
    "Each step should include detailed considerations such as analysing questions, summarizing relevant findings, "
    "brainstorming new ideas, verifying the accuracy of the current steps, refining any errors, and revisiting "
    "previous steps. In the Solution section, based on various attempts, explorations, and reflections from the "
    "Thought section, systematically present the final solution that you deem correct. The Solution section should "
    "be logical, accurate, and concise and detail necessary steps needed to reach the conclusion. Now, try to solve "
    "the following question through the above guidelines:"
)
_DEEPSEEK = ("<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜>Hello.<｜end▁of▁sentence｜>"
             "<｜User｜>Who are you?<｜Assistant｜><think>\n")
_QWEN3 = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello."
          "<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n")
_MISTRAL = "<s>[SYSTEM_PROMPT]Be brief.[/SYSTEM_PROMPT][INST]Hi[/INST]Hello.</s>[INST]Who are you?[/INST]"
# The prompt of SYSTEM + HISTORY, written out ({today}: gpt-oss's template dates its prompt).
GOLDEN = {
    "qwen3": _QWEN3,
    "qwen3_moe": _QWEN3,
    # Gemma 3 has no system role: its template puts the system text in the first user turn.
    "gemma3_text": "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
                   "<start_of_turn>user\nWho are you?<end_of_turn>\n<start_of_turn>model\n",
    "llama4_text": "<|begin_of_text|><|header_start|>system<|header_end|>\n\nBe brief.<|eot|>"
                   "<|header_start|>user<|header_end|>\n\nHi<|eot|><|header_start|>assistant<|header_end|>\n\nHello.<|eot|>"
                   "<|header_start|>user<|header_end|>\n\nWho are you?<|eot|><|header_start|>assistant<|header_end|>\n\n",
    "mistral3": _MISTRAL,
    "ministral3": _MISTRAL,
    "phi4_mini": "<|system|>Be brief.<|end|><|user|>Hi<|end|><|assistant|>Hello.<|end|><|user|>Who are you?<|end|>"
                 "<|assistant|>",
    # Phi-4-reasoning's template always opens with its own system text.
    "phi4_reasoning": f"<|im_start|>system<|im_sep|>{PHI4_REASONING_SYSTEM}<|im_end|><|im_start|>system<|im_sep|>"
                      "Be brief.<|im_end|><|im_start|>user<|im_sep|>Hi<|im_end|><|im_start|>assistant<|im_sep|>Hello."
                      "<|im_end|><|im_start|>user<|im_sep|>Who are you?<|im_end|><|im_start|>assistant<|im_sep|>",
    # gpt-oss: the system text becomes the developer message; the reply opens no channel yet.
    "gpt_oss": "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
               "Knowledge cutoff: 2024-06\nCurrent date: {today}\n\nReasoning: medium\n\n# Valid channels: analysis, "
               "commentary, final. Channel must be included for every message.<|end|><|start|>developer<|message|>"
               "# Instructions\n\nBe brief.\n\n<|end|><|start|>user<|message|>Hi<|end|><|start|>assistant<|channel|>"
               "final<|message|>Hello.<|end|><|start|>user<|message|>Who are you?<|end|><|start|>assistant",
    # llama.cpp's copy of the Qwen distill's template closes the thinking unless
    # enable_thinking is set (tests/data/chat_templates/README.md).
    "r1_distill_qwen": _DEEPSEEK + "</think>",
    "r1_distill_llama": _DEEPSEEK,
}
# What ends an assistant turn in each template (the first stop string turn_end_stops reads).
TURN_END = {"qwen3": "<|im_end|>", "qwen3_moe": "<|im_end|>", "gemma3_text": "<end_of_turn>",
            "llama4_text": "<|eot|>", "mistral3": "</s>", "ministral3": "</s>", "phi4_mini": "<|end|>",
            "phi4_reasoning": "<|im_end|>", "gpt_oss": "<|end|>", "r1_distill_qwen": "<｜end▁of▁sentence｜>",
            "r1_distill_llama": "<｜end▁of▁sentence｜>"}

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
# A tool conversation as the OpenAI API brings it (Mistral's templates want 9-character call ids).
TOOL_CHAT = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call00001", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call00001", "name": "get_weather", "content": "Sunny, 21 C"},
]
PLAIN_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
# Templates without tool support get the tools as a system message and earlier calls and
# results as text (webui/chat/tools.py); the rest render them their own way.
PLAIN_TOOLS = {"gemma3_text", "phi4_reasoning", "r1_distill_qwen", "r1_distill_llama"}
GOLDEN_TOOLS = {
    "qwen3": "<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions to assist with the user "
             "query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
             + json.dumps(TOOLS[0]) + "\n</tools>\n\nFor each function call, return a json object with function name "
             "and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, "
             "\"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>"
             "\n<|im_start|>assistant\n" + PLAIN_CALL + "<|im_end|>\n<|im_start|>user\n<tool_response>\nSunny, 21 C\n"
             "</tool_response><|im_end|>\n<|im_start|>assistant\n",
    "mistral3": "<s>[SYSTEM_PROMPT]Be brief.[/SYSTEM_PROMPT][AVAILABLE_TOOLS][" + json.dumps(TOOLS[0])
                + "][/AVAILABLE_TOOLS][INST]Weather in Paris?[/INST][TOOL_CALLS]get_weather[CALL_ID]call00001"
                "[ARGS]{\"city\": \"Paris\"}</s>[TOOL_RESULTS]call00001[TOOL_CONTENT]Sunny, 21 C[/TOOL_RESULTS]",
    "phi4_mini": "<|system|>Be brief.<|tool|>" + json.dumps([TOOLS[0]["function"]]) + "<|/tool|><|end|><|user|>"
                 "Weather in Paris?<|end|><|assistant|>" + PLAIN_CALL + "<|end|><|tool|>Sunny, 21 C<|end|><|assistant|>",
    "r1_distill_llama": "<｜begin▁of▁sentence｜>Be brief.\n\n" + fallback_system(read_tools(TOOLS))
                        + "<｜User｜>Weather in Paris?<｜Assistant｜>" + PLAIN_CALL + "<｜end▁of▁sentence｜><｜User｜>"
                        "<tool_response name=\"get_weather\">\nSunny, 21 C\n</tool_response><｜Assistant｜><think>\n",
}
REPLY_TOKENS = 8
CONTEXT = 2048  # Phi-4-reasoning's own system text alone is ~850 tokens of the tiny vocabulary


def golden(family: str) -> str:
    return GOLDEN[family].replace("{today}", datetime.date.today().isoformat())


@pytest.fixture(scope="module")
def today_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("families_today")
    for seed, family in enumerate(NEW_FAMILIES):
        build_new_family(root / family, family, seed=seed, context=CONTEXT)
    return root


@pytest.fixture(scope="module")
def tokenizers(today_root):
    return {family: AutoTokenizer.from_pretrained(today_root / family) for family in NEW_FAMILIES}


# -- golden prompts -------------------------------------------------------------------------
@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_chat_prompt_is_what_the_family_template_renders(family, tokenizers):
    tokenizer = tokenizers[family]
    ours = render_chat_prompt(tokenizer, HISTORY, SYSTEM)
    theirs = tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM}, *HISTORY], tokenize=False,
                                           add_generation_prompt=True)
    assert ours == theirs
    assert ours == golden(family)
    # Every chat marker is one token, as in the real vocabularies, and no second BOS.
    ids = prompt_ids(tokenizer, ours)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    for marker in {*NEW_FAMILIES[family].specials, tokenizer.bos_token, tokenizer.eos_token}:
        assert pieces.count(marker) == ours.count(marker), marker
    assert ids.count(tokenizer.bos_token_id) == ours.count(tokenizer.bos_token)


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_turn_end_stops_come_from_the_template(family, tokenizers):
    assert turn_end_stops(tokenizers[family], None, "assistant")[0] == TURN_END[family]


def _hf_tool_messages(family: str) -> list[dict]:
    """TOOL_CHAT as transformers' callers write it for the family's template: arguments
    as an object; for Phi-4-mini, whose template reads the tool list from the system
    message and no tool_calls, the list there and the call as text."""
    messages = [dict(m) for m in TOOL_CHAT]
    messages[2]["tool_calls"] = [{"id": "call00001", "type": "function",
                                  "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    if family == "phi4_mini":
        messages[0]["tools"] = json.dumps([TOOLS[0]["function"]])
        messages[2] = {"role": "assistant", "content": PLAIN_CALL}
    return messages


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_tool_prompt_is_what_the_family_template_renders(family, tokenizers):
    tokenizer = tokenizers[family]
    ours = render_with_tools(tokenizer, TOOL_CHAT, read_tools(TOOLS))
    assert "Sunny, 21 C" in ours and ours.count("get_weather") >= 2  # offered, and called
    if family in PLAIN_TOOLS:
        # No tools in the template: the plain form, through the family's own template.
        assert fallback_system(read_tools(TOOLS)) in ours and PLAIN_CALL in ours
        plain = [{"role": "system", "content": f"{SYSTEM}\n\n{fallback_system(read_tools(TOOLS))}"},
                 {"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": PLAIN_CALL},
                 {"role": "user", "content": '<tool_response name="get_weather">\nSunny, 21 C\n</tool_response>'}]
        if family == "gemma3_text":  # no system role, and no two user turns in a row: folded
            return
        assert ours == tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
    else:
        assert ours == tokenizer.apply_chat_template(_hf_tool_messages(family), tools=TOOLS, tokenize=False,
                                                     add_generation_prompt=True)
    if family in GOLDEN_TOOLS:
        assert ours == GOLDEN_TOOLS[family]


# -- a chat on Transformers ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_manager(today_root):
    return ModelManager(today_root, default_registry(), LoadOptions(cpu=True))


def stop_ids(tokenizer, family: str) -> set[int]:
    return {tokenizer.convert_tokens_to_ids(token) for token in NEW_FAMILIES[family].stop_on}


def assert_turn_end_ends_reply(family: str, tokenizer, eos_ids: set[int]) -> None:
    turn_end = tokenizer.convert_tokens_to_ids(TURN_END[family])
    if family == "gpt_oss":  # <|end|> closes the analysis channel; the final one follows
        assert turn_end not in eos_ids
    else:
        assert turn_end in eos_ids


def chat_reply(manager, family: str) -> tuple[ChatPrompt, str, object]:
    """One reply to HISTORY through the chat's prompt and the engine, greedy, to full length."""
    prompt = ChatPrompt(ChatSetup(system=SYSTEM), HISTORY)
    stream = GenerationEngine(manager).generate(GenerationRequest(prompt, make_params(
        {"temperature": 0.0, "max_new_tokens": REPLY_TOKENS, "ban_eos_token": True})))
    return prompt, "".join(stream), stream.stats


def greedy_reply(model, tokenizer, family: str, shown_by=None) -> str:
    """The same reply from transformers' own generate(): the golden prompt (in the ids
    `shown_by` makes of it, where given), greedy, the end-of-turn ids banned as
    ban_eos_token bans them, shown as the engine shows its tokens (`shown_by`'s
    incremental decoding: invalid byte runs come out as the stream has them)."""
    shown_by = shown_by or tokenizer
    ids = prompt_ids(shown_by, golden(family))
    banned = sorted(stop_ids(tokenizer, family) | {tokenizer.eos_token_id})
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=REPLY_TOKENS, do_sample=False,
                             suppress_tokens=banned, pad_token_id=banned[0])
    decoder = IncrementalDecoder(shown_by, ids)
    return "".join(decoder.push(int(token)) for token in out[0, len(ids):]) + decoder.flush()


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_transformers_chat_streams(family, hf_manager, tokenizers):
    spec = NEW_FAMILIES[family]
    loaded = hf_manager.load(family)
    assert loaded.loader == "transformers"
    assert loaded.model.config.model_type == spec.config.model_type
    assert loaded.context_length == CONTEXT
    # Generation ends on every id the family's generation_config.json names.
    assert stop_ids(tokenizers[family], family) <= loaded.backend.eos_ids()
    assert_turn_end_ends_reply(family, tokenizers[family], loaded.backend.eos_ids())
    prompt, text, stats = chat_reply(hf_manager, family)
    assert prompt.info.tokens == len(prompt_ids(loaded.tokenizer, golden(family)))
    assert stats.new_tokens == REPLY_TOKENS and stats.finish_reason == "length"
    assert text == greedy_reply(loaded.model, loaded.tokenizer, family)


# -- "Will it fit?" ----------------------------------------------------------------------------
# Mixture-of-experts families: experts held as one 3-D parameter per layer (no Linear, so
# never quantized), Llama 4's router (a Linear subclass the quantizers leave alone).
MOE = ("qwen3_moe", "llama4_text", "gpt_oss")


@pytest.mark.parametrize("precision", FIT_PRECISIONS)
@pytest.mark.parametrize("family", MOE)
def test_fit_estimate_of_mixture_of_experts_is_what_a_load_holds(family, precision, today_root):
    if precision not in ("fp32", "bf16"):
        pytest.importorskip("bitsandbytes")
    options = FIT_PRECISIONS[precision]
    shape = read_shape(today_root / family)
    loaded = TransformersLoader().load(family, today_root / family, LoadOptions(cpu=True, **options))
    assert shape.parameters == loaded.parameters and shape.context_length == CONTEXT
    guess = estimate(shape, FIT_CONTEXT, cpu=True, **options).total
    real = measured_bytes(loaded.model, FIT_CONTEXT)
    assert abs(guess - real) / real <= 0.0005, (guess, real)
    # The Model tab says what kind of model it is: all experts held, a few used.
    used = NEW_FAMILIES[family].extra["num_experts_per_tok"]
    text = report(shape, estimate(shape, FIT_CONTEXT, cpu=True, **options), Memory((), 1 << 34), cpu=True)
    assert f"Mixture of experts: 4 experts a layer, {used} used per token" in text


# -- a chat on llama.cpp ------------------------------------------------------------------------
# llama.cpp's converter writes the Qwen3-MoE, Llama 4 and gpt-oss vocabularies only as
# GPT-2-style BPE (their set_vocab is _set_vocab_gpt2), and names the BPE pre-tokenizer by
# hashing the ids its tokenizer gives a fixed text (get_vocab_base_pre): the real
# vocabularies are in its table, a tiny trained one cannot be.  Their tiny models have a
# byte-level BPE vocabulary split as Qwen2's, and the converter is told that split's name
# (tests/gguf_fixtures.py convert_many); all else is its own work.
BPE_PRE = "qwen2"
# llama.cpp puts SentencePiece's word-start space after every special token unless the
# GGUF says not to, and the converter says so only for Llama-architecture and Gemma
# vocabularies: Qwen2/3 and Phi-3 text after a marker tokenizes differently from
# transformers (their real vocabularies are BPE, where this does not arise), so those
# compare the architectures on the ids llama.cpp makes of the prompt.
# llama.cpp counts Llama 3.1's <|eom_id|> as an end of generation, not Llama 4's <|eom|>
# (which ends a tool-call message): a Llama 4 GGUF goes on to <|eot|> after one.
NOT_EOG_IN_LLAMA_CPP = {"llama4_text": ("<|eom|>",)}
SAME_IDS = {"gemma3_text", "mistral3", "ministral3", "r1_distill_llama", "qwen3_moe", "llama4_text", "gpt_oss"}


@pytest.fixture(scope="module")
def gguf_root(today_root, tmp_path_factory) -> Path:
    """Each family converted to an F32 GGUF by llama.cpp's converter, in one folder."""
    require_llama_cpp()
    root = tmp_path_factory.mktemp("families_today_gguf")
    convert_many([(today_root / family, root / f"{family}.gguf", BPE_PRE if spec.vocab == "bpe" else None)
                  for family, spec in NEW_FAMILIES.items()])
    return root


@pytest.fixture(scope="module")
def gguf_manager(gguf_root):
    return ModelManager(gguf_root, default_registry(), LoadOptions(cpu=True))


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_gguf_chat_streams(family, gguf_manager, tokenizers, today_root):
    loaded = gguf_manager.load(f"{family}.gguf")
    assert loaded.loader == "llama.cpp" and loaded.context_length == CONTEXT
    # The GGUF carries the family's template and special tokens: the app renders the same
    # prompt from it, and the markers are single tokens of the same vocabulary.
    tokenizer = tokenizers[family]
    assert render_chat_prompt(loaded.tokenizer, HISTORY, SYSTEM) == golden(family)
    ids = loaded.tokenizer(golden(family), add_special_tokens=False)["input_ids"]
    for marker in {*NEW_FAMILIES[family].specials, tokenizer.bos_token, tokenizer.eos_token}:
        assert ids.count(tokenizer.convert_tokens_to_ids(marker)) == golden(family).count(marker), marker
    if family in SAME_IDS:
        assert ids == tokenizer(golden(family), add_special_tokens=False)["input_ids"]
    # The ids the family's generation_config.json stops on end the reply here too, as
    # far as llama.cpp knows them (the GGUF carries no generation_config).
    gap = {tokenizer.convert_tokens_to_ids(token) for token in NOT_EOG_IN_LLAMA_CPP.get(family, ())}
    assert stop_ids(tokenizer, family) - gap <= loaded.backend.eos_ids()
    assert_turn_end_ends_reply(family, tokenizer, loaded.backend.eos_ids())
    prompt, text, stats = chat_reply(gguf_manager, family)
    assert prompt.info.tokens == len(prompt_ids(loaded.tokenizer, golden(family)))
    assert stats.new_tokens == REPLY_TOKENS and stats.finish_reason == "length"
    # llama.cpp computes the architecture as transformers does: the same greedy reply
    # from the same F32 weights.
    model = AutoModelForCausalLM.from_pretrained(today_root / family, dtype=torch.float32)
    assert text == greedy_reply(model, tokenizers[family], family, shown_by=loaded.tokenizer)
