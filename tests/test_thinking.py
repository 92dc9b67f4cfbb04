"""Thinking models: the thinking told apart from the answer, on every surface.

The model is a tiny Qwen3 trained in a fixture to think before it answers
(tests/thinking_model.py), with Qwen3's real chat template; the clients are the official
`openai` and `ollama` ones.  Unit tests cover the parser on every way a reply can be cut
into pieces, and the markers of other families read off their real templates.
"""

from __future__ import annotations

import json
import time

import httpx
import ollama
import openai
import pytest

from tests.conftest import make_settings
from tests.test_remote import serve
from tests.thinking_model import answer_of, thinking_of
from tests.tiny_models import TEMPLATES
from webui.chat.prompt import apply_template
from webui.chat.thinking import ThinkingAsk, switches, thinking_format
from webui.generation.reasoning import HARMONY, ReasoningParser, ThinkingFormat, ThinkingGate, split
from webui.remote.config import RemoteEngineConfig

THINKER = "thinker"
KEY = "thinking-key-1234"
GREEDY = {"temperature": 0, "max_tokens": 80}
LLAMA_CPP_TEMPLATES = TEMPLATES  # the real templates copied from llama.cpp (README there)


def pieces_of(text: str, fmt: ThinkingFormat, size: int) -> tuple[str, str]:
    parser = ReasoningParser(fmt)
    parts = []
    for i in range(0, len(text), size):
        parts += parser.feed(text[i:i + size])
    parts += parser.finish()
    return ("".join(p.text for p in parts if p.part == "thinking"),
            "".join(p.text for p in parts if p.part == "answer"))


REPLIES = [
    (ThinkingFormat(), "<think>\nFirst this.\nThen that.\n</think>\n\nThe answer.", ("First this.\nThen that.",
                                                                                    "The answer.")),
    # The template opened the thinking (DeepSeek-R1 distills, QwQ): only the close comes.
    (ThinkingFormat(starts_open=True), "weighing it\n</think>\n\nYes.", ("weighing it", "Yes.")),
    (ThinkingFormat(), "No thinking here, a < and a </ too.", ("", "No thinking here, a < and a </ too.")),
    # Cut short by the length limit: all of it is thinking.
    (ThinkingFormat(), "<think>\nstill going", ("still going", "")),
    # Only the first block is thinking; a marker the answer mentions is its text.
    (ThinkingFormat(), "<think>a</think>Write <think> tags.", ("a", "Write <think> tags.")),
    (ThinkingFormat("[THINK]", "[/THINK]"), "[THINK]hm[/THINK]Done.", ("hm", "Done.")),
    (HARMONY, "<|channel|>analysis<|message|>Let me see.<|end|><|start|>assistant<|channel|>final<|message|>Hi!",
     ("Let me see.", "Hi!")),
]


@pytest.mark.parametrize(("fmt", "text", "expected"), REPLIES)
def test_streamed_pieces_add_up_to_the_whole_split(fmt, text, expected):
    assert split(text, fmt) == expected
    for size in (1, 2, 3, 5, 8, len(text)):
        assert pieces_of(text, fmt, size) == expected, size


def test_a_marker_split_over_pieces_is_held_back_not_shown():
    parser = ReasoningParser(ThinkingFormat())
    assert parser.feed("<thi") == []  # could be the marker: nothing shown yet
    # The layout's newline goes; a trailing space waits to see whether the thinking ends there.
    assert [(p.part, p.text) for p in parser.feed("nk>\nx ")] == [("thinking", "x")]
    assert [(p.part, p.text) for p in parser.feed("y</thi")] == [("thinking", " y")]
    assert [(p.part, p.text) for p in parser.feed("nk>\n\nDone")] == [("answer", "Done")]


def test_markers_and_switches_are_read_off_real_templates():
    qwen3 = (TEMPLATES / "qwen3.jinja").read_text()
    assert thinking_format(qwen3) == ThinkingFormat("<think>", "</think>")
    assert switches(qwen3) == {"enable_thinking": (True, False)}
    # A template with no thinking, and a tokenizer without the tags: no format, no switch.
    plain = (TEMPLATES / "qwen2.5-instruct.jinja").read_text()
    assert thinking_format(plain) is None and switches(plain) == {}


def test_the_gate_counts_thinking_and_closes_it_at_the_budget():
    gate = ThinkingGate(ThinkingFormat(), budget=3)
    for text in ("<think>", "\n", "a", "b"):
        assert gate.wants() is None
        gate.push(text)
    assert gate.tokens == 3 and gate.thinking
    assert gate.wants() == "\n</think>\n\n"
    for text in ("\n", "</think>", "\n\n"):
        gate.push(text)
    assert gate.answering and gate.wants() is None
    # A grammar waits for the answer: a reply that has not opened its thinking is made to.
    waiting = ThinkingGate(ThinkingFormat(), budget=-1, force_open=True)
    assert waiting.wants() == "<think>" and waiting.forces
    counting = ThinkingGate(ThinkingFormat(starts_open=True))
    assert not counting.forces and counting.wants() is None


def test_qwen3_template_drops_earlier_thinking_from_the_next_prompt(thinking_model):
    tokenizer = thinking_model["tokenizer"]
    turns = [{"role": "user", "content": "Tell me about water."},
             {"role": "assistant", "content": "Water is the answer.", "reasoning_content": "SECRET-THOUGHT"},
             {"role": "user", "content": "What is fire?"}]
    prompt = apply_template(tokenizer, turns)
    assert "Water is the answer." in prompt and "SECRET-THOUGHT" not in prompt
    # ... and keeps it for a reply after the last question (a tool step), as its template says.
    prompt = apply_template(tokenizer, turns[:2], add_generation_prompt=False)
    assert "<think>\nSECRET-THOUGHT\n</think>\n\nWater is the answer." in prompt


def test_thinking_off_without_a_switch_means_a_budget_of_none():
    r1 = "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}<think>\n"  # opens it, no switch
    assert ThinkingAsk(enable=False).budget(r1 + "</think>", None, -1) == 0
    qwen3 = (TEMPLATES / "qwen3.jinja").read_text()
    assert ThinkingAsk(enable=False).variables(qwen3) == {"enable_thinking": False}
    assert ThinkingAsk(enable=False).budget(qwen3, None, -1) == -1  # the switch does it


# -- through the app, with the trained model -----------------------------------------------

@pytest.fixture(scope="module")
def thinking_model(thinker_root):
    from transformers import AutoTokenizer

    return {"root": thinker_root, "tokenizer": AutoTokenizer.from_pretrained(thinker_root / THINKER)}


@pytest.fixture(scope="module")
def thinking_api(thinking_model, tmp_path_factory):
    from webui.runtime import build_runtime

    runtime = build_runtime(make_settings(thinking_model["root"], tmp_path_factory.mktemp("thinking-data"),
                                          model=THINKER, api_key=KEY))
    server, url = serve(runtime)
    yield runtime, url
    server.stop()
    runtime.engine.close()


@pytest.fixture()
def oai(thinking_api):
    return openai.OpenAI(base_url=thinking_api[1], api_key=KEY, max_retries=0, timeout=120)


def ask(topic: str) -> list[dict]:
    return [{"role": "user", "content": f"Tell me about {topic}."}]


def test_chat_completion_returns_thinking_apart_from_the_answer(oai, thinking_model):
    reply = oai.chat.completions.create(model=THINKER, messages=ask("water"), **GREEDY)
    message = reply.choices[0].message
    assert message.reasoning_content == thinking_of("water")
    assert message.content == answer_of("water")
    thought = len(thinking_model["tokenizer"].encode(f"<think>\n{thinking_of('water')}\n</think>",
                                                     add_special_tokens=False))
    assert reply.usage.completion_tokens_details.reasoning_tokens == thought
    other = oai.chat.completions.create(model=THINKER, messages=ask("fire"), **GREEDY).choices[0].message
    assert (other.reasoning_content, other.content) == (thinking_of("fire"), answer_of("fire"))


def test_streamed_deltas_add_up_to_the_whole_reply(oai, thinking_api, monkeypatch):
    whole = oai.chat.completions.create(model=THINKER, messages=ask("light"), **GREEDY).choices[0].message
    # Each step slowed 10 ms: on a quiet fast CPU the tiny model writes its whole thinking
    # before the stream's first read, and the reader then gets it as one piece.
    backend = thinking_api[0].models.current.backend
    step = backend.step
    monkeypatch.setattr(backend, "step", lambda slots, tokens: (time.sleep(0.01), step(slots, tokens))[1])
    thinking, answer, order = "", "", []
    for chunk in oai.chat.completions.create(model=THINKER, messages=ask("light"), stream=True, **GREEDY):
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is None:
            continue
        if getattr(delta, "reasoning_content", None):
            thinking += delta.reasoning_content
            order.append("thinking")
        if delta.content:
            answer += delta.content
            order.append("answer")
    assert (thinking, answer) == (whole.reasoning_content, whole.content)
    assert order.index("answer") > order.index("thinking") and "thinking" not in order[order.index("answer"):]
    assert len([o for o in order if o == "thinking"]) > 1  # it streams, not one lump at the end


@pytest.mark.parametrize("off", [{"chat_template_kwargs": {"enable_thinking": False}}, {"reasoning_effort": "none"}])
def test_thinking_switched_off_gives_no_thinking(oai, off):
    reply = oai.chat.completions.create(model=THINKER, messages=ask("bread"), extra_body=off, **GREEDY)
    message = reply.choices[0].message
    assert not message.reasoning_content
    assert message.content.strip() == answer_of("bread")


def test_a_thinking_budget_closes_the_thinking_and_the_answer_follows(oai, thinking_model):
    tokenizer = thinking_model["tokenizer"]
    for budget in (2, 5):
        reply = oai.chat.completions.create(model=THINKER, messages=ask("king"), extra_body={"thinking_budget": budget},
                                            **GREEDY)
        message = reply.choices[0].message
        assert len(tokenizer.encode(message.reasoning_content, add_special_tokens=False)) <= budget
        assert message.reasoning_content and thinking_of("king").startswith(message.reasoning_content)
        assert message.content  # closed, then answered
        assert reply.choices[0].finish_reason == "stop"


def test_a_json_schema_constrains_the_answer_not_the_thinking(oai):
    schema = {"type": "object", "properties": {"topic": {"enum": ["water", "land", "fire"]}},
              "required": ["topic"], "additionalProperties": False}
    reply = oai.chat.completions.create(
        model=THINKER, messages=ask("land"), **GREEDY,
        response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema}})
    message = reply.choices[0].message
    assert message.reasoning_content == thinking_of("land")  # thought freely, in its own words
    assert json.loads(message.content)["topic"] in {"water", "land", "fire"}


def test_bad_template_kwargs_are_refused_naming_the_field(thinking_api):
    url = thinking_api[1]
    for bad in ({"__class__": 1}, {f"v{i}": 1 for i in range(40)}, {"x": "y" * 5000}):
        response = httpx.post(f"{url}/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                              json={"model": THINKER, "messages": ask("water"), "chat_template_kwargs": bad})
        assert response.status_code == 400 and "chat_template_kwargs" in response.text


def test_ollama_client_gets_thinking(thinking_api):
    client = ollama.Client(host=thinking_api[1].removesuffix("/v1"), headers={"Authorization": f"Bearer {KEY}"},
                           timeout=120)
    options = {"temperature": 0, "num_predict": 80}
    whole = client.chat(model=THINKER, messages=ask("water"), think=True, options=options, stream=False)
    assert whole.message.thinking == thinking_of("water") and whole.message.content == answer_of("water")
    thinking = answer = ""
    for part in client.chat(model=THINKER, messages=ask("water"), think=True, options=options, stream=True):
        thinking += part.message.thinking or ""
        answer += part.message.content or ""
    assert (thinking, answer) == (whole.message.thinking, whole.message.content)
    off = client.chat(model=THINKER, messages=ask("water"), think=False, options=options, stream=False)
    assert not off.message.thinking and off.message.content.strip() == answer_of("water")
    generated = client.generate(model=THINKER, prompt="Tell me about fire.", think=True, options=options,
                                stream=False)
    assert generated.thinking == thinking_of("fire") and generated.response == answer_of("fire")


def test_a_remote_engines_thinking_passes_through(thinking_api, tmp_path_factory):
    """A gateway with no model of its own, in front of the thinking model's server."""
    from webui.runtime import build_runtime

    engine = RemoteEngineConfig(url=thinking_api[1], name="thinking-upstream", api_key_env="WEBUI_TEST_THINK_KEY",
                                kind="webui", timeout=60)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WEBUI_TEST_THINK_KEY", KEY)
        gateway = build_runtime(make_settings(tmp_path_factory.mktemp("none"), tmp_path_factory.mktemp("gw-think"),
                                              model=None, remote_engines=(engine,)))
    server, url = serve(gateway)
    try:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
        message = client.chat.completions.create(model=THINKER, messages=ask("water"), **GREEDY).choices[0].message
        assert (message.reasoning_content, message.content) == (thinking_of("water"), answer_of("water"))
        # The switches reach the engine's own template.
        off = client.chat.completions.create(model=THINKER, messages=ask("water"), **GREEDY,
                                             extra_body={"chat_template_kwargs": {"enable_thinking": False}})
        assert not getattr(off.choices[0].message, "reasoning_content", None)
        assert off.choices[0].message.content.strip() == answer_of("water")
    finally:
        server.stop()


# -- other families' thinking forms, on random-weight models of their own ------------------
# A random model never thinks by itself; a grammar makes the engine open the thinking where
# the template has not, a budget makes it close it, and the answer must then be the JSON the
# grammar allows: so these show each family's markers going through tokenizer, decoder,
# gate and parser as the model's own would.

SCHEMA = json.dumps({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
                     "additionalProperties": False})


@pytest.fixture(scope="module")
def family_engine(tmp_path_factory):
    from tests.tiny_models import build_new_family
    from webui.generation.engine import GenerationEngine
    from webui.loaders.base import LoadOptions
    from webui.loaders.registry import default_registry
    from webui.model_manager import ModelManager

    root = tmp_path_factory.mktemp("thinking-families")
    for family in ("gpt_oss", "r1_distill_llama"):
        build_new_family(root / family, family, seed=3)
    manager = ModelManager(root, default_registry(), LoadOptions(cpu=True))
    engine = GenerationEngine(manager)
    yield manager, engine
    engine.close()


@pytest.mark.parametrize(("family", "starts_open", "fmt"), [
    ("gpt_oss", False, HARMONY),  # analysis channel, then the final one
    ("r1_distill_llama", True, ThinkingFormat()),  # the template opens <think> in the prompt
])
def test_each_familys_thinking_comes_apart_from_a_constrained_answer(family_engine, family, starts_open, fmt):
    from webui.api.completions import render_chat
    from webui.generation.engine import GenerationRequest
    from webui.generation.params import make_params

    manager, engine = family_engine
    loaded = manager.load(family)
    params = make_params({"temperature": 0.0, "max_new_tokens": 60, "thinking_budget": 4, "json_schema": SCHEMA})
    prompt, params = render_chat(loaded, ask("water"), (), ThinkingAsk(), params, "messages")
    assert prompt.thinking == fmt and fmt.ends_open(prompt.text) is starts_open
    stream = engine.generate(GenerationRequest(prompt, params))
    text = stream.text()
    assert stream.thinking == fmt.opened(starts_open)
    thinking, answer = split(text, stream.thinking)
    assert json.loads(answer) in ({"ok": True}, {"ok": False}), text  # the grammar held the answer only
    assert fmt.close in text and (fmt.open in text) is not starts_open  # the markers are in the raw text
    assert stream.stats.finish_reason == "stop"
    # Four sampled thinking tokens, then the closing the engine wrote in (up to the close
    # marker), and the open marker where the reply opened the thinking.
    closing = fmt.closing_text()
    written = loaded.tokenizer.encode(closing[: closing.index(fmt.close) + len(fmt.close)], add_special_tokens=False)
    assert stream.stats.thinking_tokens == 4 + len(written) + (not starts_open)
