"""Structured output and tool calling through the API, with the official openai client
against a live server: json_schema replies validate (also from the demo model), forced
calls parse with schema-valid arguments, tool results round-trip, streamed call deltas
assemble to the whole reply's calls, and bad requests get a 400 naming the field."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import ADMIN_KEY, API_KEY, TINY, free_port, make_settings
from tests.schema_check import violations
from tests.tiny_models import build_llama
from webui.chat.tools import render_with_tools
from webui.generation.request import prompt_ids
from webui.settings import DEMO_MODEL, PROJECT_ROOT

CATALOG = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 20},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
        "genre": {"enum": ["poetry", "history", "law"]},
        "author": {"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 16},
            "alive": {"type": "boolean"},
        }, "required": ["name", "alive"], "additionalProperties": False},
        "chapters": {"type": "array", "items": {"type": "object", "properties": {
            "n": {"type": "integer", "minimum": 1, "maximum": 50},
            "pages": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 999}, "maxItems": 3},
        }, "required": ["n", "pages"], "additionalProperties": False}, "maxItems": 3},
    },
    "required": ["title", "year", "genre", "author", "chapters"],
    "additionalProperties": False,
}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    }, "required": ["city", "unit", "days"], "additionalProperties": False},
}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {
        "zone": {"enum": ["UTC", "CET", "PST"]}}, "required": ["zone"], "additionalProperties": False},
}}
COUNT = {"type": "function", "function": {
    "name": "count", "parameters": {"type": "object", "properties": {
        "n": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["n"]}}}
SCHEMAS = {"get_weather": WEATHER["function"]["parameters"], "get_time": TIME["function"]["parameters"],
           "count": COUNT["function"]["parameters"]}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def serve(models_root, name, user_data):
    from webui.api.openai_api import APIServer
    from webui.runtime import build_runtime

    runtime = build_runtime(make_settings(models_root, user_data, model=name, api_key=API_KEY, admin_key=ADMIN_KEY))
    server = APIServer(runtime, port=free_port())
    client = openai.OpenAI(base_url=server.start(), api_key=API_KEY, max_retries=0, timeout=120)
    return server, runtime, client


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The tiny random-weight model with room for tool definitions (its 512-token
    vocabulary spends many tokens on JSON), behind its own server."""
    root = tmp_path_factory.mktemp("tool_models")
    build_llama(root / TINY, context=2048)
    server, runtime, client = serve(root, TINY, tmp_path_factory.mktemp("tool_user_data"))
    yield runtime, client
    server.stop()


@pytest.fixture()
def client(served):
    return served[1]


@pytest.fixture()
def runtime(served):
    return served[0]


@pytest.fixture(scope="module")
def demo_client(tmp_path_factory):
    """A server with the built-in demo model (a real, trained model, not random weights)."""
    server, _, client = serve(PROJECT_ROOT / "models", DEMO_MODEL, tmp_path_factory.mktemp("demo_user_data"))
    yield client
    server.stop()


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "catalog", "schema": schema, "strict": True}}


@pytest.mark.parametrize("seed", range(6))
def test_demo_model_json_schema_replies_validate(demo_client, seed):
    reply = demo_client.chat.completions.create(
        model=DEMO_MODEL, messages=[{"role": "user", "content": "Describe a book."}], seed=seed,
        temperature=1.0, max_tokens=400, response_format=schema_format(CATALOG))
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    assert violations(json.loads(choice.message.content), CATALOG) == []


@pytest.mark.parametrize("seed", range(3))
def test_tiny_model_json_schema_replies_validate_in_chat_and_completions(client, seed):
    chat = client.chat.completions.create(model=TINY, messages=ASK, seed=seed, max_tokens=400,
                                          response_format=schema_format(CATALOG))
    assert violations(json.loads(chat.choices[0].message.content), CATALOG) == []
    text = client.completions.create(model=TINY, prompt="A book:", seed=seed, max_tokens=400,
                                     extra_body={"response_format": schema_format(CATALOG)}).choices[0].text
    assert violations(json.loads(text), CATALOG) == []


def test_json_object_mode_and_grammar_string(client):
    reply = client.chat.completions.create(model=TINY, messages=ASK, seed=1, max_tokens=300,
                                           response_format={"type": "json_object"},
                                           extra_body={"json_schema": ""})
    content = reply.choices[0].message.content
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    else:
        assert content.startswith("{")
    for seed in range(3):
        answer = client.chat.completions.create(model=TINY, messages=ASK, seed=seed, max_tokens=10,
                                                extra_body={"grammar_string": 'root ::= "sunny" | "rain"'})
        assert answer.choices[0].message.content in ("sunny", "rain")


@pytest.mark.parametrize(("kw", "param"), [
    ({"response_format": schema_format({"type": "strin"})}, "response_format"),
    ({"response_format": {"type": "json_schema"}}, "response_format"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"extra_body": {"grammar_string": "root ::= ["}}, "grammar_string"),
    ({"response_format": {"type": "json_object"}, "extra_body": {"grammar_string": 'start: "a"'}}, "response_format"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=x)y"}}}}}],
      "tool_choice": "required"}, "tools"),
])
def test_bad_structured_requests_are_a_400_naming_the_field(client, kw, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=TINY, messages=ASK, max_tokens=5, **kw)
    assert caught.value.body["param"] == param


def test_a_named_tool_choice_forces_a_valid_call(client):
    for seed in range(3):
        reply = client.chat.completions.create(
            model=TINY, messages=ASK, tools=[WEATHER, TIME], seed=seed, max_tokens=200,
            tool_choice={"type": "function", "function": {"name": "get_weather"}})
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls
        assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
        assert violations(json.loads(call.function.arguments), SCHEMAS["get_weather"]) == []


def test_required_calls_may_come_in_parallel_or_one_at_a_time(client):
    many = client.chat.completions.create(model=TINY, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                          parallel_tool_calls=True, seed=2, max_tokens=300)
    calls = many.choices[0].message.tool_calls
    assert calls and all(violations(json.loads(c.function.arguments), SCHEMAS[c.function.name]) == []
                         for c in calls)
    one = client.chat.completions.create(model=TINY, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                         parallel_tool_calls=False, seed=2, max_tokens=300)
    assert len(one.choices[0].message.tool_calls) == 1


@pytest.mark.parametrize("seed", [2, 5])
def test_required_without_parallel_calls_asked_for_stops_after_one_call(client, seed):
    # Issue 31: with parallel_tool_calls not sent, a required call is one call and the
    # reply ends there, not a list a small model keeps adding to until max_tokens.
    reply = client.chat.completions.create(model=TINY, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                           seed=seed, max_tokens=300)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert violations(json.loads(call.function.arguments), SCHEMAS[call.function.name]) == []


def test_streamed_call_deltas_assemble_to_the_whole_replys_call(client):
    kw = dict(model=TINY, messages=ASK, tools=[WEATHER, TIME], seed=7, max_tokens=200,
              tool_choice={"type": "function", "function": {"name": "get_weather"}})
    whole = client.chat.completions.create(**kw).choices[0]
    calls: dict[int, dict] = {}
    finish = None
    pieces = 0  # chunks carrying a piece of the arguments
    for chunk in client.chat.completions.create(stream=True, **kw):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        finish = chunk.choices[0].finish_reason or finish
        for part in delta.tool_calls or []:
            entry = calls.setdefault(part.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = part.id or entry["id"]
            if part.function:
                entry["name"] += part.function.name or ""
                entry["arguments"] += part.function.arguments or ""
                pieces += bool(part.function.arguments)
    assert finish == "tool_calls" == whole.finish_reason
    expected = whole.message.tool_calls[0]
    assert list(calls) == [0] and calls[0]["id"].startswith("call_")
    # The same text, not only the same JSON: the arguments are the model's own text.
    assert (calls[0]["name"], calls[0]["arguments"]) == (expected.function.name, expected.function.arguments)
    # ... sent in pieces as the model wrote them, not at once after the call parsed.
    assert pieces > 3 and len(calls[0]["arguments"]) > 10


def test_a_tool_result_round_trips_into_the_next_reply(client, runtime):
    first = client.chat.completions.create(model=TINY, messages=ASK, tools=[WEATHER], seed=3, max_tokens=200,
                                           tool_choice="required", parallel_tool_calls=False)
    call = first.choices[0].message.tool_calls[0]
    history = [*ASK, first.choices[0].message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"}]
    follow = client.chat.completions.create(model=TINY, messages=history, tools=[WEATHER], tool_choice="none",
                                            seed=3, max_tokens=20, temperature=0)
    assert follow.choices[0].finish_reason in ("stop", "length")
    assert follow.choices[0].message.tool_calls is None
    # The result and the call reached the prompt (the test model's template has no tool
    # support, so both went in as text): the same history rendered by the server's code.
    prompt = render_with_tools(runtime.models.current.tokenizer, [
        {"role": m["role"], "content": m.get("content"), "tool_calls": m.get("tool_calls"),
         "tool_call_id": m.get("tool_call_id")} for m in history], ())
    assert "18 degrees and sunny" in prompt and call.function.arguments.replace(" ", "") in prompt.replace(" ", "")
    assert follow.usage.prompt_tokens == len(prompt_ids(runtime.models.current.tokenizer, prompt))


def test_auto_tool_choice_leaves_a_plain_reply_as_text(client):
    reply = client.chat.completions.create(model=TINY, messages=ASK, tools=[WEATHER], max_tokens=12, temperature=0)
    choice = reply.choices[0]
    assert choice.message.tool_calls is None and choice.message.content
    assert choice.finish_reason in ("stop", "length")


@pytest.mark.parametrize("extra", [{"grammar_string": 'root ::= "yes" | "no"'}, {"top_k": 1}])
def test_log_probabilities_leave_out_tokens_a_step_removed(client, extra):
    # Regression: their -inf log-probability made the response unserialisable (a 500).
    reply = client.chat.completions.create(model=TINY, messages=ASK, max_tokens=5, logprobs=True, top_logprobs=5,
                                           seed=1, extra_body=extra)
    for entry in reply.choices[0].logprobs.content:
        assert entry.top_logprobs and all(alt.logprob > float("-inf") for alt in entry.top_logprobs)
    if "grammar_string" in extra:
        first = reply.choices[0].logprobs.content[0]
        assert {alt.token.strip()[:1] for alt in first.top_logprobs} <= {"y", "n"}  # all the grammar allows


def test_a_backend_without_grammars_refuses_them_naming_what_was_sent(client, runtime, monkeypatch):
    import dataclasses

    from webui.generation.params import SamplingParams

    backend = runtime.models.current.backend
    without = frozenset(SamplingParams.model_fields) - {"grammar_string", "json_schema"}
    monkeypatch.setattr(backend, "capabilities", dataclasses.replace(backend.capabilities, samplers=without))
    for kw, param in [({"response_format": {"type": "json_object"}}, "response_format"),
                      ({"extra_body": {"grammar_string": 'start: "a"'}}, "grammar_string"),
                      ({"extra_body": {"json_schema": '{"type": "object"}'}}, "json_schema"),
                      ({"tools": [WEATHER], "tool_choice": "required"}, "tool_choice")]:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=TINY, messages=ASK, max_tokens=5, **kw)
        assert refused.value.body["param"] == param and refused.value.body["code"] == "unsupported_parameter"


def test_the_readme_tool_call_example_on_the_demo_model(demo_client):
    """README, "OpenAI-compatible API": a required call from the demo model always parses."""
    for seed in range(3):
        reply = demo_client.chat.completions.create(
            model=DEMO_MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], seed=seed,
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {
                "type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}}}],
            tool_choice={"type": "function", "function": {"name": "get_weather"}})
        (call,) = reply.choices[0].message.tool_calls
        assert call.function.name == "get_weather"
        arguments = json.loads(call.function.arguments)
        assert set(arguments) <= {"city"} and isinstance(arguments["city"], str) and len(arguments["city"]) <= 20


def test_the_demo_model_makes_exactly_one_required_call_without_parallel_calls(demo_client):
    # Two short tools: the demo model's context is 512 tokens, and the tool list is in the prompt.
    for seed in range(2):
        reply = demo_client.chat.completions.create(
            model=DEMO_MODEL, messages=ASK, seed=seed, tools=[TIME, COUNT], tool_choice="required",
            parallel_tool_calls=False, max_tokens=120)
        (call,) = reply.choices[0].message.tool_calls
        assert violations(json.loads(call.function.arguments), SCHEMAS[call.function.name]) == []
