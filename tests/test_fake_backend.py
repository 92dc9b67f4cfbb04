"""The engine and the OpenAI API over a fake backend (tests/fake_backend.py) that came in
through the loader door a plugin uses: batching, `n`, capabilities that say no, and
rows kept apart in a batch, in microseconds per token and on any machine."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import API_KEY, TINY, free_port, make_settings, wait_for
from tests.fake_backend import write_fake_extension, write_fake_model
from webui.generation.engine import GenerationRequest
from webui.generation.params import make_params

EVERYTHING = {"max_batch": 8, "samplers": None, "logprobs": True, "batch_invariant": True, "reuse_invariant": True}
# Declares only three samplers, and nothing else: no grammar, no logprobs.
PLAIN = {"max_batch": 8, "samplers": ["temperature", "top_p", "stop"]}
PROMPTS = ["The keeper climbed", "In the beginning", "A boat brought flour", "Every spring"]


@pytest.fixture(scope="module")
def fake(models_root, tmp_path_factory):
    from webui.api.openai_api import APIServer
    from webui.runtime import build_runtime

    root = tmp_path_factory.mktemp("fake-models")
    write_fake_model(root / "fake-all", models_root / TINY, capabilities=EVERYTHING)
    write_fake_model(root / "fake-plain", models_root / TINY, capabilities=PLAIN)
    user_data = tmp_path_factory.mktemp("fake-user-data")
    write_fake_extension(user_data)
    runtime = build_runtime(make_settings(root, user_data, model="fake-all", extensions=("fake",), api_key=API_KEY))
    server = APIServer(runtime, port=free_port())
    url = server.start()
    yield runtime, openai.OpenAI(base_url=url, api_key=API_KEY, max_retries=0, timeout=60)
    server.stop()
    runtime.engine.close()


def backend(runtime):
    return runtime.models.current.backend


def greedy(n: int = 12):
    return make_params({"do_sample": False, "max_new_tokens": n, "ban_eos_token": True})


def test_the_fake_model_comes_in_through_the_loader_door(fake):
    runtime, client = fake
    assert runtime.models.registry.names()[-1] == "fake"  # after the built-in loaders
    assert runtime.models.current.loader == "fake"
    assert "fake-all" in {m.id for m in client.models.list().data}


def test_each_row_of_a_batch_gets_its_own_reply(fake):
    """Greedy replies alone and four at once are the same: the engine never mixes up
    which row of the batch's logits belongs to which request."""
    runtime, _ = fake
    alone = [runtime.engine.generate(GenerationRequest(p, greedy())).text() for p in PROMPTS]
    backend(runtime).steps.clear()
    together = runtime.engine.generate_many([GenerationRequest(p, greedy()) for p in PROMPTS])
    assert [s.text() for s in together] == alone
    assert len(set(alone)) == len(alone)  # distinct replies: a mix-up would show
    assert max(backend(runtime).steps) == len(PROMPTS)  # they really were one batch


def test_stream_with_n_three_gives_three_indices_from_one_batch(fake):
    runtime, client = fake
    backend(runtime).steps.clear()
    stream = client.chat.completions.create(
        model="fake-all", messages=[{"role": "user", "content": "Hello"}], max_tokens=10, n=3, seed=4,
        temperature=1.0, stream=True, stream_options={"include_usage": True})
    texts: dict[int, str] = {}
    usage = None
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
        usage = chunk.usage or usage
    assert sorted(texts) == [0, 1, 2] and all(texts.values())
    assert max(backend(runtime).steps) == 3
    assert usage is not None and usage.completion_tokens <= 30


def test_a_backend_that_declares_no_grammar_or_logprobs_is_refused_by_field(fake):
    runtime, client = fake
    runtime.load_model("fake-plain", save=False)
    try:
        schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model="fake-plain", messages=[{"role": "user", "content": "Hi"}], max_tokens=5,
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
        assert refused.value.param == "response_format" and "not supported" in str(refused.value)
        with pytest.raises(openai.BadRequestError) as refused:
            client.completions.create(model="fake-plain", prompt="Hi", max_tokens=5, extra_body={"min_p": 0.2})
        assert refused.value.param == "min_p"
        with pytest.raises(openai.BadRequestError) as refused:
            client.completions.create(model="fake-plain", prompt="Hi", max_tokens=5, logprobs=2)
        assert refused.value.param == "logprobs"
        # What it declares works.
        answered = client.completions.create(model="fake-plain", prompt="Hi", max_tokens=5, temperature=0.7,
                                             top_p=0.9, seed=1)
        assert answered.usage.completion_tokens >= 1 and answered.choices[0].finish_reason in ("stop", "length")
    finally:
        runtime.load_model("fake-all", save=False)
        assert wait_for(lambda: runtime.models.current.name == "fake-all")
