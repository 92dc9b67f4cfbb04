"""Tool calling core: definitions, rendering through templates, parsing each family's
calls (whole and streamed), and forced calls constrained by a grammar."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from tests.schema_check import violations
from tests.tiny_models import build_tokenizer, family_template
from webui.chat.tool_parser import Call, CallArguments, CallStart, Text, ToolCallParser, parse_reply
from webui.chat.tools import (
    ToolChoice,
    ToolError,
    call_schema,
    read_tool_choice,
    read_tools,
    render_with_tools,
)
from webui.generation.engine import GenerationRequest
from webui.generation.params import make_params
from webui.generation.request import PromptError

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    }, "required": ["city", "unit"], "additionalProperties": False},
}}
ADD = {"type": "function", "function": {
    "name": "add", "parameters": {"type": "object", "properties": {
        "a": {"type": "integer", "minimum": 0, "maximum": 99}, "b": {"type": "integer", "minimum": 0, "maximum": 99},
    }, "required": ["a", "b"], "additionalProperties": False},
}}
NAMES = ("get_weather", "add")
PARIS = '{"city": "Paris", "unit": "celsius"}'

# One fixed reply per family, and the calls it holds.
FAMILY_REPLIES = [
    ("hermes", f'<tool_call>\n{{"name": "get_weather", "arguments": {PARIS}}}\n</tool_call>', "",
     [("get_weather", PARIS)]),
    ("hermes, text and two calls",
     f'Let me check.\n<tool_call>\n{{"name": "get_weather", "arguments": {PARIS}}}\n</tool_call>\n'
     '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>', "Let me check.\n",
     [("get_weather", PARIS), ("add", '{"a": 1, "b": 2}')]),
    ("llama 3.1 python_tag", f'<|python_tag|>{{"name": "get_weather", "parameters": {PARIS}}}', "",
     [("get_weather", PARIS)]),
    ("llama 3.1 bare JSON, two calls",
     f'{{"name": "get_weather", "parameters": {PARIS}}}; {{"name": "add", "parameters": {{"a": 5, "b": 6}}}}', "",
     [("get_weather", PARIS), ("add", '{"a": 5, "b": 6}')]),
    ("mistral list", f'[TOOL_CALLS] [{{"name": "get_weather", "arguments": {PARIS}}}]', "",
     [("get_weather", PARIS)]),
    ("mistral v11", f'[TOOL_CALLS]get_weather[ARGS]{PARIS}[TOOL_CALLS]add[ARGS]{{"a": 1, "b": 1}}', "",
     [("get_weather", PARIS), ("add", '{"a": 1, "b": 1}')]),
    ("generic fenced JSON", '```json\n{"name": "add", "arguments": {"a": 3, "b": 4}}\n```', "",
     [("add", '{"a": 3, "b": 4}')]),
    ("generic list (a forced call)", '[{"name":"add","arguments":{"a":7,"b":8}}]', "",
     [("add", '{"a": 7, "b": 8}')]),
    ("arguments as a JSON string", '{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 0}"}', "",
     [("add", '{"a": 1, "b": 0}')]),
    ("an unknown function stays text", '{"name": "rm_rf", "arguments": {}}', '{"name": "rm_rf", "arguments": {}}', []),
    ("plain text", "The weather is fine. <tool is a word", "The weather is fine. <tool is a word", []),
    ("JSON that is not a call", '{"city": "Paris"}', '{"city": "Paris"}', []),
    ("an unclosed hermes block at the end", '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 1}}', "",
     [("add", '{"a": 1, "b": 1}')]),
]


def summary(calls):
    return [(c.name, json.loads(c.arguments)) for c in calls]


@pytest.mark.parametrize(("label", "reply", "content", "expected"), FAMILY_REPLIES, ids=[r[0] for r in FAMILY_REPLIES])
def test_each_family_parses_into_openai_calls(label, reply, content, expected):
    text, calls = parse_reply(reply, NAMES)
    assert text == content
    assert summary(calls) == [(name, json.loads(args)) for name, args in expected]
    for call in calls:
        shape = call.openai()
        assert shape["type"] == "function" and shape["id"].startswith("call_")
        assert isinstance(shape["function"]["arguments"], str)


@pytest.mark.parametrize(("label", "reply", "content", "expected"), FAMILY_REPLIES, ids=[r[0] for r in FAMILY_REPLIES])
@pytest.mark.parametrize("size", [1, 3, 7])
def test_streamed_pieces_give_the_same_calls_and_text_as_the_whole_reply(label, reply, content, expected, size):
    parser = ToolCallParser(NAMES)
    events = []
    for start in range(0, len(reply), size):
        events += parser.feed(reply[start:start + size])
    events += parser.finish()
    assert "".join(e.text for e in events if isinstance(e, Text)) == content
    calls = [e.call for e in events if isinstance(e, Call)]
    assert summary(calls) == [(name, json.loads(args)) for name, args in expected]
    assert [e.index for e in events if isinstance(e, Call)] == list(range(len(expected)))


def test_text_before_a_call_streams_before_the_call_is_complete():
    parser = ToolCallParser(NAMES)
    shown = parser.feed("Checking the weather now. <tool_")
    assert "".join(e.text for e in shown) == "Checking the weather now. "  # "<tool_" held back
    started = parser.feed('call>{"name": "add", "arguments": {"a": 1, ')  # a call half written: its start
    assert [type(e) for e in started] == [CallStart, CallArguments] and started[0].name == "add"
    assert started[1].text == '{"a": 1, '  # never as text
    done = parser.feed('"b": 2}}</tool_call>')
    assert [type(e) for e in done] == [CallArguments, Call] and done[1].streamed
    assert done[1].call.arguments == '{"a": 1, "b": 2}' and done[1].call.id == started[0].id
    assert parser.finish() == []


@pytest.mark.parametrize("size", [1, 2, 5])
def test_a_streaming_calls_argument_pieces_add_up_to_its_arguments(size):
    reply = '```json\n[{"name": "add", "arguments": {"a": 1, "b": 2}}, {"name": "get_weather", "arguments": ' \
            '{"city": "Pa}\\"ris", "unit": "celsius"}}]\n```'
    parser = ToolCallParser(NAMES)
    events = []
    for start in range(0, len(reply), size):
        events += parser.feed(reply[start:start + size])
    events += parser.finish()
    assert not [e for e in events if isinstance(e, Text)]
    calls = [e for e in events if isinstance(e, Call)]
    assert [c.call.name for c in calls] == ["add", "get_weather"] and all(c.streamed for c in calls)
    for call in calls:
        pieces = [e.text for e in events if isinstance(e, CallArguments) and e.index == call.index]
        assert "".join(pieces) == call.call.arguments and len(pieces) > (1 if size < 5 else 0)
    assert json.loads(calls[1].call.arguments) == {"city": 'Pa}"ris', "unit": "celsius"}
    # A reply cut off inside the arguments still ends its call, with the text so far.
    cut = ToolCallParser(NAMES)
    events = cut.feed('{"name": "add", "arguments": {"a": 1') + cut.finish()
    assert [type(e) for e in events] == [CallStart, CallArguments, Call] and events[2].call.arguments == '{"a": 1'


def test_tool_definitions_and_choices_are_checked():
    tools = read_tools([WEATHER, ADD])
    assert [t.name for t in tools] == list(NAMES)
    for bad, field in [
        ([{"type": "retrieval"}], "tools[0]"),
        ([{"type": "function", "function": {"name": "has space"}}], "tools[0].function.name"),
        ([ADD, ADD], "tools[1].function.name"),
        ([{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}],
         "tools[0].function.parameters"),
    ]:
        with pytest.raises(ToolError) as caught:
            read_tools(bad)
        assert str(caught.value).startswith(field)
    assert read_tool_choice(None, tools) == ToolChoice("auto")
    assert read_tool_choice(None, ()) == ToolChoice("none")
    assert read_tool_choice({"type": "function", "function": {"name": "add"}}, tools) == ToolChoice("named", "add")
    for bad in ("sometimes", {"type": "function", "function": {"name": "nope"}}, 3):
        with pytest.raises(ToolError):
            read_tool_choice(bad, tools)
    with pytest.raises(ToolError):
        read_tool_choice("required", ())


@pytest.fixture(scope="module")
def qwen_tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen-tok")
    build_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = family_template("qwen2.5-instruct.jinja")
    return tokenizer


CONVERSATION = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": PARIS}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees, sunny"},
]


def test_a_template_with_tool_support_renders_tools_calls_and_results(qwen_tokenizer):
    prompt = render_with_tools(qwen_tokenizer, CONVERSATION, read_tools([WEATHER, ADD]))
    assert "# Tools" in prompt and '"name": "get_weather"' in prompt and '"name": "add"' in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}' in prompt
    assert "<tool_response>\n18 degrees, sunny\n</tool_response>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_a_template_without_tools_gets_them_as_a_system_message(tokenizer):
    # The test model's template has no tools and only plain roles.
    prompt = render_with_tools(tokenizer, CONVERSATION, read_tools([WEATHER]))
    assert "<tools>" in prompt and "get_weather" in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}' in prompt
    assert '<tool_response name="call_1">\n18 degrees, sunny\n</tool_response>' in prompt
    assert "<|tool|>" not in prompt  # the result went in as a user turn


def test_an_unsafe_template_is_refused(qwen_tokenizer):
    evil = "{{ cycler.__init__.__globals__ }}{% for t in tools %}{% endfor %}"
    with pytest.raises(PromptError, match="unsafe"):
        render_with_tools(qwen_tokenizer, CONVERSATION, read_tools([WEATHER]), template=evil)


def test_forced_call_schemas_compile_as_a_grammar():
    tools = read_tools([WEATHER, ADD])
    assert call_schema(tools, ToolChoice("auto"), True) is None
    named = call_schema(tools, ToolChoice("named", "add"), True)
    assert named["properties"]["name"] == {"const": "add"}
    required = call_schema(tools, ToolChoice("required"), True)
    assert required["type"] == "array" and len(required["items"]["anyOf"]) == 2
    for schema in (named, required, call_schema(tools, ToolChoice("required"), False)):
        make_params({"json_schema": json.dumps(schema)})  # a ParamsError here would fail the test


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_forced_call_from_the_engine_parses_into_the_named_function(engine, tokenizer, seed):
    tools = read_tools([WEATHER, ADD])
    schema = call_schema(tools, ToolChoice("named", "get_weather"), True)
    prompt = render_with_tools(tokenizer, [{"role": "user", "content": "Weather?"}], tools)
    params = make_params({"json_schema": json.dumps(schema), "seed": seed, "max_new_tokens": 200})
    stream = engine.generate(GenerationRequest(prompt, params))
    content, calls = parse_reply(stream.text(), NAMES)
    assert content == "" and len(calls) == 1 and calls[0].name == "get_weather"
    assert violations(json.loads(calls[0].arguments), WEATHER["function"]["parameters"]) == []


def test_required_with_parallel_calls_gives_a_list_of_valid_calls(engine, tokenizer):
    tools = read_tools([WEATHER, ADD])
    schema = call_schema(tools, ToolChoice("required"), True)
    prompt = render_with_tools(tokenizer, [{"role": "user", "content": "Add 2 and 3."}], tools)
    params = make_params({"json_schema": json.dumps(schema), "seed": 4, "max_new_tokens": 400})
    stream = engine.generate(GenerationRequest(prompt, params))
    _, calls = parse_reply(stream.text(), NAMES)
    assert 1 <= len(calls) <= 8
    by_name = {"get_weather": WEATHER, "add": ADD}
    for call in calls:
        assert violations(json.loads(call.arguments), by_name[call.name]["function"]["parameters"]) == []


def test_forced_calls_close_objects_that_list_their_properties():
    from webui.chat.tools import closed

    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}},
                                               "c": {"type": "object", "additionalProperties": True}},
              "required": ["a"]}
    result = closed(schema)
    assert result["additionalProperties"] is False
    assert result["properties"]["a"]["additionalProperties"] is False
    assert result["properties"]["c"]["additionalProperties"] is True  # said otherwise: kept
    assert "additionalProperties" not in schema  # the tool's own schema is not changed
