"""Rendering conversations with chat templates (instruct mode)."""

from __future__ import annotations

import copy

import pytest

from webui.chat.prompt import FALLBACK_TEMPLATE, PromptError, render_chat_prompt
from webui.generation.engine import GenerationError

REFUSES_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for m in messages %}<turn>{{ m['role'] }}: {{ m['content'] }}</turn>{% endfor %}"
    "{% if add_generation_prompt %}<turn>assistant: {% endif %}"
)
INJECTION = "{{ cycler.__init__.__globals__.os.system('id') }}"
HISTORY = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
           {"role": "user", "content": "How are you?"}]


@pytest.fixture()
def tok(tokenizer):
    return copy.deepcopy(tokenizer)


def test_model_template_renders_history_and_system(tok):
    text = render_chat_prompt(tok, HISTORY, system="Be brief.")
    assert text.startswith("<s><|system|>\nBe brief.</s>")
    assert text.endswith("<|user|>\nHow are you?</s>\n<|assistant|>\n")


def test_model_without_template_gets_the_fallback(tok):
    tok.chat_template = None
    text = render_chat_prompt(tok, HISTORY)
    assert FALLBACK_TEMPLATE and text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nHow are you?<|im_end|>" in text


def test_template_refusing_system_gets_it_folded_into_first_user_turn(tok):
    tok.chat_template = REFUSES_SYSTEM
    text = render_chat_prompt(tok, HISTORY, system="Be brief.")
    assert text.startswith("<turn>user: Be brief.\n\nHi</turn>")


def test_template_injection_is_stopped_by_the_sandbox(tok):
    tok.chat_template = INJECTION
    with pytest.raises(PromptError, match="unsafe chat template"):
        render_chat_prompt(tok, HISTORY)


def test_unsafe_template_reaches_the_ui_as_a_clear_error(runtime, monkeypatch):
    tokenizer = runtime.models.current.tokenizer
    monkeypatch.setattr(tokenizer, "chat_template", INJECTION)
    stream = runtime.chat("test-owner", HISTORY, "", runtime.default_params)
    with pytest.raises(GenerationError, match="unsafe chat template"):
        "".join(stream)
