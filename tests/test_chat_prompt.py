"""Building prompts: instruct / chat / chat-instruct modes, templates, truncation, stops."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from webui.chat.characters import Character, Persona
from webui.chat.prompt import (
    FALLBACK_TEMPLATE,
    ChatPrompt,
    ChatSetup,
    PromptError,
    render_chat_prompt,
    turn_end_stops,
)

TEMPLATES = Path(__file__).parent / "data" / "chat_templates"
REFUSES_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for m in messages %}<turn>{{ m['role'] }}: {{ m['content'] }}</turn>{% endfor %}"
    "{% if add_generation_prompt %}<turn>assistant: {% endif %}"
)
INJECTION = "{{ cycler.__init__.__globals__.os.system('id') }}"
HISTORY = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
           {"role": "user", "content": "How are you?"}]
ANN = Character(name="Ann", context="{{char}} is a lighthouse keeper who talks to {{user}}.",
                greeting="Ahoy!", example_dialogue="{{user}}: Any ships?\n{{char}}: Not today.")
BO = Persona(name="Bo", description="A sailor.")


def family_template(name: str) -> str:
    """The five families' templates, prepared as their collection's README says: the
    indentation is for reading, except in Qwen's, whose newlines are meaningful."""
    text = (TEMPLATES / f"{name}.jinja").read_text()
    return text if name.startswith("qwen") else text.replace("    ", "").replace("\n", "")


FAMILIES = {
    "llama-3-chat": ("<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>",
                     "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
    "mistral-instruct": ("[INST] Be brief.\n\nHi [/INST]", "[/INST]", "</s>"),
    "qwen2.5-instruct": ("<|im_start|>system\nBe brief.<|im_end|>", "<|im_start|>assistant\n", "<|im_end|>"),
    "gemma-it": ("<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>", "<start_of_turn>model\n", "<end_of_turn>"),
    "phi-3": ("<|system|>\nBe brief.<|end|>", "<|assistant|>\n", "<|end|>"),
}


@pytest.fixture()
def tok(tokenizer):
    return copy.deepcopy(tokenizer)


def render(tok, setup, turns=HISTORY, action="reply", prefix="", room=10_000):
    prompt = ChatPrompt(setup, turns, action, prefix)
    return prompt(tok, room), prompt.info


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


def test_unsafe_template_reaches_the_caller_as_a_clear_error(runtime, monkeypatch):
    tokenizer = runtime.models.current.tokenizer
    monkeypatch.setattr(tokenizer, "chat_template", INJECTION)
    stream = runtime.stream("test-owner", ChatPrompt(ChatSetup(), HISTORY), runtime.default_params)
    with pytest.raises(PromptError, match="unsafe chat template"):  # its own type, from the model thread
        "".join(stream)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_template_renders_a_multi_turn_chat_with_a_system_prompt(tok, family):
    system_part, reply_opener, end_of_turn = FAMILIES[family]
    setup = ChatSetup(mode="instruct", system="Be brief.", template=family_template(family))
    rendered, _ = render(tok, setup)
    assert system_part in rendered.text
    assert rendered.text.index("Hi") < rendered.text.index("Hello") < rendered.text.index("How are you?")
    assert rendered.text.endswith(reply_opener) or rendered.text.rstrip().endswith(reply_opener.strip())
    assert end_of_turn in rendered.stops  # the end-of-turn marker, read off the template
    # A chat that opens with the character's greeting still renders (alternation templates).
    greeted, _ = render(tok, setup, [{"role": "assistant", "content": "Welcome"}, *HISTORY])
    assert "How are you?" in greeted.text


def test_instruct_continue_and_start_reply_with(tok):
    setup = ChatSetup(mode="instruct", template=family_template("phi-3"))
    rendered, _ = render(tok, setup, prefix="Well,")
    assert rendered.text.endswith("<|assistant|>\nWell,")
    continued, _ = render(tok, setup, [*HISTORY, {"role": "assistant", "content": "I am fi"}], action="continue")
    assert continued.text.endswith("<|assistant|>\nI am fi")


def test_impersonate_opens_a_user_turn(tok):
    setup = ChatSetup(mode="instruct", template=family_template("qwen2.5-instruct"))
    turns = [*HISTORY, {"role": "assistant", "content": "Fine."}]
    rendered, _ = render(tok, setup, turns, action="impersonate")
    assert rendered.text.endswith("<|im_start|>user\n")
    assert "<|im_end|>" in rendered.stops


def test_chat_mode_is_a_script_with_names_examples_and_persona(tok):
    setup = ChatSetup(mode="chat", character=ANN, persona=BO)
    rendered, _ = render(tok, setup)
    assert rendered.text == (
        "Ann is a lighthouse keeper who talks to Bo.\n\nAbout Bo: A sailor.\n\n"
        "Bo: Any ships?\nAnn: Not today.\n\n"
        "Bo: Hi\nAnn: Hello\nBo: How are you?\nAnn:"
    )
    assert set(rendered.stops) == {"\nBo:", "\nAnn:"}
    impersonated, _ = render(tok, setup, [*HISTORY, {"role": "assistant", "content": "Well."}], action="impersonate")
    assert impersonated.text.endswith("Ann: Well.\nBo:")
    prefixed, _ = render(tok, setup, prefix="*smiles*")
    assert prefixed.text.endswith("Ann: *smiles*")


def test_chat_instruct_wraps_the_script_in_the_model_template(tok):
    setup = ChatSetup(mode="chat-instruct", character=ANN, persona=BO, template=family_template("phi-3"))
    rendered, _ = render(tok, setup)
    text = rendered.text
    assert text.startswith("<|user|>\nContinue the chat below. Write one reply for \"Ann\"")
    assert "Bo: How are you?<|end|>" in text
    assert text.endswith("<|assistant|>\nAnn:")
    assert {"<|end|>", "\nBo:"} <= set(rendered.stops)


def test_oldest_turns_are_left_out_to_fit_and_the_character_text_never_is(tok):
    setup = ChatSetup(mode="chat", character=ANN, persona=BO)
    turns = []
    for i in range(40):
        turns += [{"role": "user", "content": f"question {i} " + "word " * 10},
                  {"role": "assistant", "content": f"answer {i} " + "word " * 10}]
    turns.append({"role": "user", "content": "last question"})
    full, info = render(tok, setup, turns)
    assert info.dropped == 0
    cut, info = render(tok, setup, turns, room=info.tokens // 2)
    assert 0 < info.dropped < len(turns) and info.dropped % 2 == 0  # whole exchanges, user first
    assert info.tokens <= info.room
    assert cut.text.startswith("Ann is a lighthouse keeper")  # character text kept
    assert cut.text.endswith("Bo: last question\nAnn:")  # the message being answered kept
    assert "question 0 " not in cut.text
    # Dropping one exchange fewer would not have fitted: the fewest turns are left out.
    _, tighter = render(tok, setup, turns[info.dropped - 2:], room=10_000)
    assert tighter.tokens > info.room


def test_a_history_that_cannot_fit_keeps_the_last_message(tok):
    setup = ChatSetup(mode="instruct")
    turns = [{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": "ok"},
             {"role": "user", "content": "final"}]
    rendered, info = render(tok, setup, turns, room=5)
    assert "final" in rendered.text and info.dropped == 2


def test_continue_needs_a_reply():
    with pytest.raises(PromptError):
        ChatPrompt(ChatSetup(), HISTORY, "continue")


def test_stops_of_a_template_without_markers_are_empty(tok):
    assert turn_end_stops(tok, "{% for m in messages %}{{ m['role'] }}{% endfor %}", "assistant") == ()
