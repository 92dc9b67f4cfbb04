"""Ollama's API on the API port, driven with the official `ollama` client: the same
replies as our OpenAI routes, NDJSON streams, Ollama-shaped errors, the same keys."""

from __future__ import annotations

import json

import httpx
import numpy as np
import ollama
import openai
import pytest

from tests.conftest import API_KEY, TINY, wait_for

GREEDY = {"temperature": 0, "num_predict": 24}
HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture()
def root(api_url):
    return api_url.removesuffix("/v1")


@pytest.fixture()
def client(root):
    return ollama.Client(host=root, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120)


@pytest.fixture()
def oai(api_url):
    return openai.OpenAI(base_url=api_url, api_key=API_KEY, max_retries=0, timeout=120)


def test_version_tags_show_and_ps_describe_the_loaded_model(client, root, runtime):
    version = httpx.get(f"{root}/api/version", headers={"x-api-key": API_KEY}).json()["version"]
    assert [int(part) for part in version.split(".")] >= [0, 5, 0]
    listed = client.list().models
    assert [m.model for m in listed] == [TINY]
    loaded = runtime.models.current
    assert listed[0].details.family == "llama" and listed[0].details.format == "safetensors"
    assert listed[0].size == sum(p.stat().st_size for p in loaded.folder.rglob("*") if p.is_file())
    shown = client.show(TINY)
    assert shown.modelinfo["llama.context_length"] == loaded.context_length
    assert shown.modelinfo["general.parameter_count"] == loaded.parameters
    assert shown.template == loaded.tokenizer.chat_template
    assert set(shown.capabilities) == {"completion", "embedding"}
    running = client.ps().models
    assert [m.model for m in running] == [TINY] and running[0].context_length == loaded.context_length
    assert httpx.get(f"{root}/", headers={"x-api-key": API_KEY}).text == "Ollama is running"


def test_chat_stream_and_whole_match_the_openai_route(client, oai):
    expected = oai.chat.completions.create(model=TINY, messages=HELLO, max_tokens=24, temperature=0)
    whole = client.chat(model=TINY, messages=HELLO, options=GREEDY, stream=False)
    assert whole.message.role == "assistant" and whole.message.content == expected.choices[0].message.content
    assert whole.done and whole.done_reason == expected.choices[0].finish_reason
    assert whole.eval_count == expected.usage.completion_tokens
    assert whole.prompt_eval_count == expected.usage.prompt_tokens
    parts = list(client.chat(model=TINY, messages=HELLO, options=GREEDY, stream=True))
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[-1].eval_count == whole.eval_count


def test_generate_templates_the_prompt_unless_raw(client, oai):
    chat = oai.chat.completions.create(model=TINY, messages=[{"role": "system", "content": "Be brief."}, *HELLO],
                                       max_tokens=24, temperature=0).choices[0].message.content
    templated = client.generate(model=TINY, prompt="Hello there", system="Be brief.", options=GREEDY)
    assert templated.response == chat
    completion = oai.completions.create(model=TINY, prompt="The keeper", max_tokens=24, temperature=0)
    raw = client.generate(model=TINY, prompt="The keeper", raw=True, options=GREEDY)
    assert raw.response == completion.choices[0].text
    streamed = list(client.generate(model=TINY, prompt="The keeper", raw=True, options=GREEDY, stream=True))
    assert "".join(p.response for p in streamed) == raw.response and streamed[-1].done


def test_streams_are_ndjson_by_default(root):
    body = {"model": TINY, "prompt": "The keeper", "raw": True, "options": GREEDY}
    with httpx.stream("POST", f"{root}/api/generate", json=body, headers={"x-api-key": API_KEY},
                      timeout=120) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert len(lines) > 1 and lines[-1]["done"] is True and lines[-1]["done_reason"] in ("stop", "length")
    assert all(line["model"] == TINY and line["created_at"].endswith("Z") for line in lines)


def test_options_map_onto_our_samplers(client, oai):
    seeded = {"temperature": 1.3, "top_k": 20, "top_p": 0.9, "min_p": 0.02, "repeat_penalty": 1.2,
              "repeat_last_n": 32, "seed": 11, "num_predict": 16}
    first = client.generate(model=TINY, prompt="Ships", raw=True, options=seeded).response
    assert client.generate(model=TINY, prompt="Ships", raw=True, options=seeded).response == first
    same = oai.completions.create(model=TINY, prompt="Ships", max_tokens=16, temperature=1.3, top_p=0.9, seed=11,
                                  extra_body={"top_k": 20, "min_p": 0.02, "repetition_penalty": 1.2,
                                              "repetition_penalty_range": 32})
    assert same.choices[0].text == first
    # num_predict caps the reply; stop strings end it.
    short = client.generate(model=TINY, prompt="The keeper", raw=True, options={**GREEDY, "num_predict": 3})
    assert short.eval_count <= 3 and short.done_reason in ("length", "stop")
    full = client.generate(model=TINY, prompt="The keeper", raw=True, options=GREEDY).response
    stop = full[6:9]
    cut = client.generate(model=TINY, prompt="The keeper", raw=True, options={**GREEDY, "stop": [stop]})
    assert cut.response == full[: full.find(stop)]
    # Runner options are Ollama's own business: accepted, nothing changes.
    runner = {**GREEDY, "num_thread": 2, "num_gpu": 0, "use_mmap": True}
    assert client.generate(model=TINY, prompt="The keeper", raw=True, options=runner).response == full


@pytest.mark.parametrize("options, named", [
    ({"temprature": 0.5}, "options.temprature"), ({"temperature": "hot"}, "options.temperature"),
    ({"repeat_penalty": 9}, "options.repeat_penalty"), ({"top_p": 2}, "options.top_p"),
    ({"mirostat": 1}, "options.mirostat"), ({"num_predict": 0}, "options.num_predict"),
    ({"stop": "]+__import__('os').system('id')+["}, None),
])
def test_bad_options_are_refused_in_ollamas_shape(client, root, runtime, options, named):
    before = runtime.engine.pending
    with pytest.raises(ollama.ResponseError) as refused:
        client.chat(model=TINY, messages=HELLO, options=options)
    assert refused.value.status_code == 400
    if named:
        assert refused.value.error.startswith(named + ":"), refused.value.error
    raw = httpx.post(f"{root}/api/generate", json={"model": TINY, "prompt": "x", "options": options},
                     headers={"x-api-key": API_KEY})
    assert raw.status_code == 400 and set(raw.json()) == {"error"} and isinstance(raw.json()["error"], str)
    assert runtime.engine.pending == before  # refused before anything was queued


@pytest.mark.parametrize("extra, field", [
    ({"format": "yaml"}, "format"), ({"format": {"type": "object", "properties": 3}}, "format"), ({"think": True}, "think"),
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools[0].function.name"),
    ({"logprobs": True}, "logprobs"),
])
def test_what_this_server_cannot_do_is_a_400_naming_it(root, extra, field):
    body = {"model": TINY, "messages": HELLO, "stream": False, **extra}
    response = httpx.post(f"{root}/api/chat", json=body, headers={"x-api-key": API_KEY})
    assert response.status_code == 400 and response.json()["error"].startswith(field + ":")


@pytest.mark.parametrize("extra, field", [({"suffix": "end"}, "suffix"), ({"context": [1, 2]}, "context"),
                                          ({"images": ["aGk="]}, "images[0]"),  # read now; "hi" is no image
                                          ({"template": "{{ .Prompt }}"}, "template")])
def test_generate_fields_this_server_cannot_honour(root, extra, field):
    body = {"model": TINY, "prompt": "x", "stream": False, **extra}
    response = httpx.post(f"{root}/api/generate", json=body, headers={"x-api-key": API_KEY})
    assert response.status_code == 400 and response.json()["error"].startswith(field + ":")


def test_errors_keys_and_unknown_models_in_ollamas_shape(client, root):
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="llama3.2", messages=HELLO)
    assert missing.value.status_code == 404 and "llama3.2" in missing.value.error
    with pytest.raises(ollama.ResponseError) as missing:
        client.show("llama3.2")
    assert missing.value.status_code == 404
    # The key policy is the OpenAI routes': no key, no answer (Ollama's shape).
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        with pytest.raises(ollama.ResponseError) as refused:
            ollama.Client(host=root, headers=headers).list()
        assert refused.value.status_code == 401 and refused.value.error == "a valid API key is required"
    bad = httpx.post(f"{root}/api/chat", json={"model": TINY, "messages": [{"role": "wizard"}]},
                     headers={"x-api-key": API_KEY})
    assert bad.status_code == 400 and bad.json()["error"].startswith("messages.0.role")


def test_empty_prompt_or_messages_only_load(client):
    assert client.generate(model=TINY, prompt="").done_reason == "load"
    assert client.chat(model=TINY, messages=[]).done_reason == "load"
    with pytest.raises(ollama.ResponseError):
        client.generate(model="not-here", prompt="")


def test_embed_matches_v1_embeddings(client, oai):
    texts = ["The keeper of the lighthouse", "Ships"]
    ours = np.array([d.embedding for d in oai.embeddings.create(model=TINY, input=texts).data])
    theirs = client.embed(model=TINY, input=texts)
    assert np.allclose(np.array(theirs.embeddings), ours, atol=1e-6)
    assert theirs.prompt_eval_count == oai.embeddings.create(model=TINY, input=texts).usage.prompt_tokens
    cut = np.array(client.embed(model=TINY, input=texts[0], dimensions=8).embeddings[0])
    assert cut.shape == (8,) and np.allclose(cut, ours[0][:8] / np.linalg.norm(ours[0][:8]), atol=1e-5)
    legacy = np.array(client.embeddings(model=TINY, prompt=texts[0]).embedding)  # not normalised, as Ollama's
    assert np.allclose(legacy / np.linalg.norm(legacy), ours[0], atol=1e-5)
    with pytest.raises(ollama.ResponseError) as refused:
        client.embed(model=TINY, input="x", dimensions=1000)
    assert refused.value.status_code == 400 and refused.value.error.startswith("dimensions:")


def test_embed_truncates_by_default_and_refuses_when_told_not_to(client, runtime):
    long_text = "word " * (runtime.models.current.context_length + 10)
    assert len(client.embed(model=TINY, input=long_text).embeddings[0]) == 64
    assert client.embed(model=TINY, input=long_text).prompt_eval_count == runtime.models.current.context_length
    with pytest.raises(ollama.ResponseError) as refused:
        client.embed(model=TINY, input=long_text, truncate=False)
    assert refused.value.status_code == 400


def test_usage_is_counted_for_the_key(client, runtime):
    from webui.api.usage import key_label

    label = key_label({"authorization": f"Bearer {API_KEY}"})
    before = runtime.usage.snapshot().get(label, {"requests": 0, "completion_tokens": 0})
    reply = client.chat(model=TINY, messages=HELLO, options=GREEDY)
    list(client.chat(model=TINY, messages=HELLO, options=GREEDY, stream=True))
    after = runtime.usage.snapshot()[label]
    assert after["requests"] == before["requests"] + 2
    assert after["completion_tokens"] == before["completion_tokens"] + 2 * reply.eval_count


def test_a_client_that_leaves_mid_stream_stops_its_generation(root, runtime, monkeypatch):
    tokens = []
    start = runtime.requests.start
    monkeypatch.setattr(runtime.requests, "start", lambda owner: tokens.append(start(owner)) or tokens[-1])
    from webui.api.usage import key_label

    label = key_label({"x-api-key": API_KEY})
    before = runtime.usage.snapshot().get(label, {"requests": 0})["requests"]
    body = {"model": TINY, "prompt": "Ships", "raw": True, "options": {"temperature": 0, "num_predict": 480}}
    with httpx.stream("POST", f"{root}/api/generate", json=body, headers={"x-api-key": API_KEY}) as response:
        for line in response.iter_lines():
            if line:
                break  # leave after the first line: the connection closes
    assert wait_for(lambda: tokens[0].cancelled, timeout=60)
    # The tokens made before it left are counted for its key.
    assert wait_for(lambda: runtime.usage.snapshot().get(label, {}).get("requests") == before + 1, timeout=60)


def test_openapi_lists_the_new_routes(api_url):
    paths = httpx.get(f"{api_url}/openapi.json", headers={"x-api-key": API_KEY}).json()["paths"]
    assert {"/v1/embeddings", "/api/version", "/api/tags", "/api/show", "/api/ps", "/api/chat", "/api/generate",
            "/api/embed", "/api/embeddings"} <= set(paths)


FORMAT = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"]}


def test_format_enforces_json_and_a_schema_as_v1s_response_format_does(client, oai):
    greedy = {"temperature": 0, "num_predict": 200}
    reply = client.chat(model=TINY, messages=HELLO, format=FORMAT, options=greedy)
    data = json.loads(reply.message.content)
    assert set(data) >= {"name", "age"} and isinstance(data["age"], int) and 0 <= data["age"] <= 120
    same = oai.chat.completions.create(
        model=TINY, messages=HELLO, temperature=0, max_tokens=200,
        response_format={"type": "json_schema", "json_schema": {"name": "format", "schema": FORMAT}})
    assert same.choices[0].message.content == reply.message.content
    anything = client.generate(model=TINY, prompt="Say something", format="json", options=greedy)
    assert isinstance(json.loads(anything.response), dict)


@pytest.mark.parametrize(("method", "path"), [("POST", "/api/pull"), ("POST", "/api/push"), ("POST", "/api/create"),
                                              ("POST", "/api/copy"), ("DELETE", "/api/delete"),
                                              ("POST", "/api/blobs/sha256:00")])
def test_model_management_is_refused_in_ollamas_shape(root, client, method, path):
    response = httpx.request(method, f"{root}{path}", json={"model": TINY}, headers={"x-api-key": API_KEY})
    assert response.status_code == 400 and set(response.json()) == {"error"}
    assert "Model tab" in response.json()["error"]
    with pytest.raises(ollama.ResponseError) as refused:
        client.pull(TINY)
    assert refused.value.status_code == 400 and refused.value.error.startswith("pull:")


ADD = {"type": "function", "function": {"name": "add", "description": "Add two numbers", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                     "b": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["a", "b"], "additionalProperties": False}}}
# Ollama has no tool_choice; its `format` (a JSON schema) makes the tiny model write a call.
CALL_FORMAT = {"type": "object", "properties": {"name": {"const": "add"},
                                                "arguments": ADD["function"]["parameters"]},
               "required": ["name", "arguments"], "additionalProperties": False}


def test_tools_come_back_as_ollamas_tool_calls_whole_and_streamed(client, runtime):
    from tests.schema_check import violations

    ask = [{"role": "user", "content": "What is two plus three?"}]
    kw = dict(model=TINY, messages=ask, tools=[ADD], format=CALL_FORMAT, options={"seed": 4, "num_predict": 120})
    whole = client.chat(**kw)
    (call,) = whole.message.tool_calls
    assert call.function.name == "add" and isinstance(call.function.arguments, dict)
    assert violations(dict(call.function.arguments), ADD["function"]["parameters"]) == []
    assert not whole.message.content and whole.done
    streamed = [chunk for chunk in client.chat(stream=True, **kw)]
    calls = [c for chunk in streamed for c in chunk.message.tool_calls or []]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [("add", dict(call.function.arguments))]
    assert streamed[-1].done and not "".join(chunk.message.content or "" for chunk in streamed)
    # The call and its result go back in, Ollama's way (arguments as an object, tool_name).
    history = [*ask, {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "add", "arguments": dict(call.function.arguments)}}]},
        {"role": "tool", "tool_name": "add", "content": "the sum is 5"}]
    follow = client.chat(model=TINY, messages=history, options={"temperature": 0, "num_predict": 8})
    from webui.chat.tools import render_with_tools
    from webui.generation.request import prompt_ids

    tokenizer = runtime.models.current.tokenizer
    prompt = render_with_tools(tokenizer, [
        ask[0], {"role": "assistant", "content": "", "tool_calls": [{"id": "", "type": "function", "function": {
            "name": "add", "arguments": json.dumps(dict(call.function.arguments))}}]},
        {"role": "tool", "content": "the sum is 5", "name": "add"}], ())
    assert "the sum is 5" in prompt
    assert follow.prompt_eval_count == len(prompt_ids(tokenizer, prompt))
