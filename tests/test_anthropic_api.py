"""Anthropic's Messages API (/v1/messages) with Anthropic's official client against a live
server: a reply and a stream that match the OpenAI route's, Anthropic's event sequence,
a forced tool use with schema-valid input (whole and streamed in pieces), a tool_result
continuation, stop sequences, keys in either header, and errors in Anthropic's shape."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from tests.conftest import API_KEY, TINY
from tests.test_thinking import thinking_api, thinking_model  # noqa: F401 -- the tiny thinking Qwen3, served
from tests.schema_check import violations
from webui.api.anthropic_schemas import MessagesRequest
from webui.chat.tools import render_with_tools

ADD = {"name": "add", "input_schema": {
    "type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                     "b": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["a", "b"], "additionalProperties": False}}
ASK = [{"role": "user", "content": "What is two plus three?"}]
# This client's create() no longer takes sampling values (newer Claude models fix them);
# older clients and other programs send them as fields, which the server reads.
GREEDY = {"temperature": 0}


@pytest.fixture()
def root(api_url):
    return api_url.removesuffix("/v1")


@pytest.fixture()
def client(root):
    return anthropic.Anthropic(base_url=root, api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture()
def oai(api_url):
    return openai.OpenAI(base_url=api_url, api_key=API_KEY, max_retries=0, timeout=120)


def text_of(message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def test_a_reply_matches_the_openai_routes_greedy_reply(client, oai):
    system = "You are terse."
    reply = client.messages.create(model=TINY, max_tokens=16, system=system, messages=ASK, extra_body=GREEDY)
    assert reply.type == "message" and reply.role == "assistant" and reply.id.startswith("msg_")
    assert reply.model == TINY and reply.stop_reason in ("end_turn", "max_tokens")
    same = oai.chat.completions.create(model=TINY, max_tokens=16, temperature=0,
                                       messages=[{"role": "system", "content": system}, *ASK])
    assert text_of(reply) == same.choices[0].message.content
    assert reply.usage.output_tokens == same.usage.completion_tokens
    assert reply.usage.input_tokens + reply.usage.cache_read_input_tokens == same.usage.prompt_tokens
    counted = client.messages.count_tokens(model=TINY, system=system, messages=ASK)
    assert counted.input_tokens == same.usage.prompt_tokens


def test_a_stream_sends_anthropics_event_sequence_and_the_same_text(client):
    kw = dict(model=TINY, max_tokens=24, messages=ASK, extra_body=GREEDY)
    whole = client.messages.create(**kw)
    kinds, pieces = [], []
    with client.messages.stream(**kw) as stream:
        for event in stream:
            if event.type in ("text", "input_json"):  # the SDK's own conveniences, beside the wire events
                continue
            kinds.append(event.type)
            if event.type == "content_block_delta":
                pieces.append(event.delta.text)
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    body = [k for k in kinds[1:-2] if k != "ping"]
    assert body[0] == "content_block_start" and body[-1] == "content_block_stop"
    assert set(body[1:-1]) == {"content_block_delta"} and len(pieces) > 1
    assert "".join(pieces) == text_of(whole) == text_of(final)
    assert final.stop_reason == whole.stop_reason and final.usage.output_tokens == whole.usage.output_tokens


@pytest.mark.parametrize("seed", [1, 4])
def test_a_forced_tool_use_has_schema_valid_input(client, seed):
    reply = client.messages.create(model=TINY, max_tokens=48, messages=ASK, tools=[ADD],
                                   tool_choice={"type": "tool", "name": "add"},
                                   extra_body={"seed": seed, "temperature": 1.0})
    assert reply.stop_reason == "tool_use"
    (use,) = [b for b in reply.content if b.type == "tool_use"]
    assert use.name == "add" and use.id.startswith("toolu_")
    assert violations(use.input, ADD["input_schema"]) == []


def test_a_streamed_tool_use_arrives_in_pieces_and_matches_the_whole(client):
    # One call: with parallel use allowed (Anthropic's default) a tiny model adds calls to max_tokens.
    kw = dict(model=TINY, max_tokens=48, messages=ASK, tools=[ADD],
              tool_choice={"type": "any", "disable_parallel_tool_use": True}, extra_body={"seed": 3})
    whole = client.messages.create(**kw)
    (expected,) = [b for b in whole.content if b.type == "tool_use"]
    starts, partial = [], []
    with client.messages.stream(**kw) as stream:
        for event in stream:
            if event.type == "content_block_start":
                starts.append(event.content_block)
            elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                partial.append(event.delta.partial_json)
        final = stream.get_final_message()
    assert [s.type for s in starts] == ["tool_use"] and starts[0].name == "add" and starts[0].input == {}
    # The input streams as the model writes it; a reader that falls behind (a busy machine)
    # gets the pieces written meanwhile together, so count only that it came in more than one.
    assert len(partial) >= 2
    assert json.loads("".join(partial)) == expected.input
    assert final.stop_reason == "tool_use" and [b.input for b in final.content if b.type == "tool_use"] == [
        expected.input]


def test_a_tool_result_continues_the_conversation(client, runtime):
    first = client.messages.create(model=TINY, max_tokens=48, messages=ASK, tools=[ADD],
                                   tool_choice={"type": "tool", "name": "add"})
    use = next(b for b in first.content if b.type == "tool_use")
    history = [*ASK, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "5"},
                                            {"type": "text", "text": "Say it in words."}]}]
    follow = client.messages.create(model=TINY, max_tokens=12, messages=history, tools=[ADD], extra_body=GREEDY,
                                    tool_choice={"type": "none"})
    assert follow.stop_reason in ("end_turn", "max_tokens") and not [b for b in follow.content if b.type == "tool_use"]
    # The call and its result reached the prompt, in the order the chat template expects.
    conversation = MessagesRequest(model=TINY, max_tokens=12, messages=history).conversation()
    assert [m["role"] for m in conversation] == ["user", "assistant", "tool", "user"]
    assert conversation[2] == {"role": "tool", "tool_call_id": use.id, "name": "add", "content": "5"}
    prompt = render_with_tools(runtime.models.current.tokenizer, conversation, ())
    assert json.dumps(use.input).replace(" ", "") in prompt.replace(" ", "") and "Say it in words." in prompt
    assert client.messages.count_tokens(model=TINY, messages=history).input_tokens == \
        follow.usage.input_tokens + follow.usage.cache_read_input_tokens
    with pytest.raises(anthropic.BadRequestError) as refused:  # a result for a call never made
        client.messages.create(model=TINY, max_tokens=5, messages=[
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_nope", "content": "5"}]}])
    assert "tool_use_id" in refused.value.message


def test_a_stop_sequence_ends_the_reply_and_is_named(client):
    kw = dict(model=TINY, max_tokens=30, messages=ASK, extra_body=GREEDY)
    text = text_of(client.messages.create(**kw))
    word = next(w for w in text.split()[2:] if len(w) > 2)
    stopped = client.messages.create(stop_sequences=[word, "zzzq"], **kw)
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == word
    assert text.startswith(text_of(stopped)) and word not in text_of(stopped)
    with client.messages.stream(stop_sequences=[word], **kw) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence, text_of(final)) == ("stop_sequence", word, text_of(stopped))


def test_samplers_pass_and_bad_values_are_refused_naming_the_field(client, root):
    reply = client.messages.create(model=TINY, max_tokens=8, messages=ASK,
                                   extra_body={"temperature": 0.7, "top_p": 0.9, "top_k": 5, "min_p": 0.05, "seed": 1})
    assert reply.usage.output_tokens > 0
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["n"], "additionalProperties": False}
    shaped = client.messages.create(model=TINY, max_tokens=40, messages=ASK, extra_body={"seed": 2},
                                    output_config={"format": {"type": "json_schema", "schema": schema}})
    assert violations(json.loads(text_of(shaped)), schema) == []
    for extra, field in [({"temperature": 1.5}, "temperature"), ({"top_k": -2}, "top_k"),
                         ({"temperature_typo": 1}, "temperature_typo"), ({"max_tokens": 0}, "max_tokens"),
                         ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking")]:
        body = {"model": TINY, "max_tokens": 8, "messages": ASK, **extra}
        answer = httpx.post(f"{root}/v1/messages", json=body, headers={"x-api-key": API_KEY}, timeout=60)
        assert answer.status_code == 400, extra
        error = answer.json()
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert field in error["error"]["message"]
    missing = httpx.post(f"{root}/v1/messages", json={"model": TINY, "messages": ASK},
                         headers={"x-api-key": API_KEY}, timeout=60)
    assert missing.status_code == 400 and "max_tokens" in missing.json()["error"]["message"]
    # An image is read (tests/test_vision_api.py), and a model that reads only text says so.
    import base64
    import io

    from PIL import Image

    picture = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(picture, format="PNG")
    image = [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": base64.b64encode(picture.getvalue()).decode()}}]}]
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model=TINY, max_tokens=5, messages=image)
    assert "reads only text" in refused.value.message
    document = [{"role": "user", "content": [{"type": "document", "source": {"type": "text", "data": "x"}}]}]
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model=TINY, max_tokens=5, messages=document)
    assert "'document'" in refused.value.message


def test_keys_in_either_header_and_errors_in_anthropics_shape(root):
    wrong = anthropic.Anthropic(base_url=root, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        wrong.messages.create(model=TINY, max_tokens=5, messages=ASK)
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "authentication_error"
    bearer = anthropic.Anthropic(base_url=root, auth_token=API_KEY, max_retries=0)  # Authorization: Bearer
    assert bearer.messages.create(model=TINY, max_tokens=3, messages=ASK).usage.output_tokens > 0
    with pytest.raises(anthropic.NotFoundError) as unknown:
        bearer.messages.create(model="no-such-model", max_tokens=3, messages=ASK)
    assert unknown.value.body["error"]["type"] == "not_found_error"
    too_long = anthropic.Anthropic(base_url=root, api_key=API_KEY, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as overflow:
        too_long.messages.create(model=TINY, max_tokens=4096, messages=ASK)
    assert "context" in overflow.value.message


def test_a_thinking_models_thinking_comes_as_thinking_blocks(thinking_api):  # noqa: F811
    """The tiny Qwen3 of tests/thinking_model.py thinks before it answers: Anthropic's
    client gets a `thinking` block, then the text, whole and streamed; thinking off, none."""
    from tests.test_thinking import KEY, THINKER
    from tests.thinking_model import answer_of, thinking_of

    client = anthropic.Anthropic(base_url=thinking_api[1].removesuffix("/v1"), api_key=KEY, max_retries=0)
    kw = dict(model=THINKER, max_tokens=80, messages=[{"role": "user", "content": "Tell me about water."}],
              extra_body=GREEDY)
    whole = client.messages.create(thinking={"type": "enabled", "budget_tokens": 1024}, **kw)
    assert [b.type for b in whole.content] == ["thinking", "text"]
    assert (whole.content[0].thinking, whole.content[1].text) == (thinking_of("water"), answer_of("water"))
    kinds, thought = [], ""
    with client.messages.stream(thinking={"type": "enabled", "budget_tokens": 1024}, **kw) as stream:
        for event in stream:
            if event.type == "content_block_start":
                kinds.append(event.content_block.type)
            elif event.type == "content_block_delta" and event.delta.type == "thinking_delta":
                thought += event.delta.thinking
        final = stream.get_final_message()
    assert kinds == ["thinking", "text"] and thought == thinking_of("water")
    assert [b.type for b in final.content] == ["thinking", "text"] and final.content[1].text == answer_of("water")
    off = client.messages.create(thinking={"type": "disabled"}, **kw)
    assert [b.type for b in off.content] == ["text"] and off.content[0].text.strip() == answer_of("water")
    # The thinking block goes back in the next turn as Anthropic's clients send it.
    again = client.messages.create(max_tokens=20, model=THINKER, extra_body=GREEDY, messages=[
        *kw["messages"], {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in whole.content]},
        {"role": "user", "content": "Tell me about fire."}])
    assert again.content[-1].type == "text"
