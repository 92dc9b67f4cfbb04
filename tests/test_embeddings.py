"""POST /v1/embeddings with the official openai client: the vectors are the loaded
model's pooled hidden states, computed on the engine's model thread."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import openai
import pytest
import torch

from tests.conftest import API_KEY, TINY, wait_for
from webui.api.embeddings import decode_base64
from webui.generation.embedding import batches

TEXTS = ["The keeper of the lighthouse", "Ships", "a much longer sentence about the sea, the wind and the rocks"]


@pytest.fixture()
def client(api_url):
    return openai.OpenAI(base_url=api_url, api_key=API_KEY, max_retries=0, timeout=120)


def vectors(response) -> np.ndarray:
    return np.array([item.embedding for item in sorted(response.data, key=lambda d: d.index)])


def by_hand(runtime, text: str) -> np.ndarray:
    """The stated pooling, computed here without the server: mean of the last hidden
    state over the text's tokens, L2-normalised."""
    loaded = runtime.models.current
    ids = torch.tensor([loaded.tokenizer(text)["input_ids"]])
    with torch.inference_mode():
        hidden = loaded.model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
    mean = hidden.float().mean(dim=0)
    return (mean / mean.norm()).numpy()


def test_embeddings_are_the_mean_pooled_normalised_last_hidden_state(client, runtime):
    response = client.embeddings.create(model=TINY, input=TEXTS[0])
    assert response.model == TINY and response.object == "list"
    got = vectors(response)[0]
    assert got.shape == (runtime.models.current.model.config.hidden_size,)
    assert np.allclose(got, by_hand(runtime, TEXTS[0]), atol=1e-5)
    assert abs(np.linalg.norm(got) - 1) < 1e-5
    tokens = len(runtime.models.current.tokenizer(TEXTS[0])["input_ids"])
    assert response.usage.prompt_tokens == tokens and response.usage.total_tokens == tokens


def test_deterministic_and_batched_equals_one_by_one(client):
    batched = vectors(client.embeddings.create(model=TINY, input=TEXTS))
    again = vectors(client.embeddings.create(model=TINY, input=TEXTS))
    single = np.array([vectors(client.embeddings.create(model=TINY, input=text))[0] for text in TEXTS])
    assert np.array_equal(batched, again)
    # Inputs of different lengths share one padded forward; each row is as it is alone.
    assert np.allclose(batched, single, atol=1e-5)
    # Different texts give different vectors (a constant would pass the checks above).
    assert not np.allclose(batched[0], batched[1], atol=1e-3)


def test_base64_decodes_to_the_same_floats(client):
    floats = vectors(client.embeddings.create(model=TINY, input=TEXTS[:2]))
    # The openai client decodes base64 itself when it asked for it; read it raw here.
    raw = client.embeddings.with_raw_response.create(model=TINY, input=TEXTS[:2], encoding_format="base64")
    encoded = [item["embedding"] for item in raw.http_response.json()["data"]]
    assert all(isinstance(text, str) for text in encoded)
    assert np.array_equal(np.array([decode_base64(text) for text in encoded]), floats.astype(np.float32))


def test_dimensions_cut_and_renormalise_and_too_many_is_refused(client):
    full = vectors(client.embeddings.create(model=TINY, input=TEXTS[0]))[0]
    cut = vectors(client.embeddings.create(model=TINY, input=TEXTS[0], dimensions=16))[0]
    assert cut.shape == (16,)
    assert np.allclose(cut, full[:16] / np.linalg.norm(full[:16]), atol=1e-5)
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model=TINY, input="x", dimensions=65)
    assert refused.value.param == "dimensions" and "64" in str(refused.value)


def test_token_ids_embed_like_their_text_and_bad_ids_are_refused(client, runtime):
    ids = runtime.models.current.tokenizer(TEXTS[1])["input_ids"]
    from_ids = vectors(client.embeddings.create(model=TINY, input=ids))[0]
    from_text = vectors(client.embeddings.create(model=TINY, input=TEXTS[1]))[0]
    assert np.allclose(from_ids, from_text, atol=1e-6)
    two = vectors(client.embeddings.create(model=TINY, input=[ids, ids[:1]]))
    assert two.shape[0] == 2 and np.allclose(two[0], from_text, atol=1e-5)
    size = runtime.models.current.backend.vocab_size()
    for bad in ([size], [-1]):
        with pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(model=TINY, input=bad)
        assert refused.value.param == "input"


@pytest.mark.parametrize("body, param", [
    ({"input": ""}, "input"), ({"input": []}, "input"), ({"input": ["a", ""]}, "input"),
    ({"input": "a", "encoding_format": "int8"}, "encoding_format"), ({"input": "a", "dimensions": 0}, "dimensions"),
    ({"input": "a", "temperature": 0.5}, "temperature"), ({"input": [True]}, None),
])
def test_malformed_requests_are_refused_with_the_field_named(client, body, param):
    with pytest.raises(openai.BadRequestError) as refused:
        client.post("/embeddings", body={"model": TINY, **body}, cast_to=object)
    if param is not None:
        assert refused.value.param == param


def test_wrong_model_and_oversized_input(client, runtime):
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model=TINY, input="word " * (runtime.models.current.context_length + 10))
    assert refused.value.code == "context_length_exceeded" and refused.value.param == "input"


def test_usage_is_counted_per_key(client, runtime, api_url):
    from webui.api.usage import key_label

    label = key_label({"authorization": f"Bearer {API_KEY}"})
    before = runtime.usage.snapshot().get(label, {"requests": 0, "prompt_tokens": 0})
    response = client.embeddings.create(model=TINY, input=TEXTS)
    after = runtime.usage.snapshot()[label]
    assert after["requests"] == before["requests"] + 1
    assert after["prompt_tokens"] == before["prompt_tokens"] + response.usage.prompt_tokens


def test_the_forward_runs_on_the_model_thread(client, runtime, monkeypatch):
    backend = runtime.models.current.backend
    threads = []
    original = backend.embed
    monkeypatch.setattr(backend, "embed", lambda rows: threads.append(threading.current_thread().name) or original(rows))
    client.embeddings.create(model=TINY, input=TEXTS)
    assert threads == ["model-worker"]  # one forward for the batch, on the engine's thread


def test_embedding_beside_a_running_generation_leaves_it_unchanged(client):
    def reply():
        return client.completions.create(model=TINY, prompt="The keeper", max_tokens=60, temperature=0)

    alone = reply().choices[0].text
    results = {}
    worker = threading.Thread(target=lambda: results.setdefault("text", reply().choices[0].text))
    worker.start()
    embedded = [vectors(client.embeddings.create(model=TINY, input=TEXTS)) for _ in range(3)]
    worker.join(timeout=120)
    assert results["text"] == alone  # its KV was not touched by the embedding forwards
    assert all(np.array_equal(e, embedded[0]) for e in embedded)


def test_a_backend_without_embeddings_gets_a_400_naming_the_model(client, runtime, monkeypatch):
    backend = runtime.models.current.backend
    monkeypatch.setattr(backend, "capabilities", dataclasses.replace(backend.capabilities, embeddings=False))
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model=TINY, input="x")
    assert refused.value.param == "model" and "cannot compute embeddings" in str(refused.value)


def test_batches_stay_within_the_token_budget_in_order():
    inputs = [[1] * n for n in (5, 1, 9, 3, 3, 20, 2)]
    groups = list(batches(inputs, budget=12))
    assert [row for rows in groups for row in rows] == inputs
    assert len(groups) == 5  # [5, 1], [9], [3, 3], [20], [2]
    for rows in groups:
        assert len(rows) == 1 or max(map(len, rows)) * len(rows) <= 12


def test_queued_embeddings_take_turns_with_decoding_steps(runtime, monkeypatch):
    """Several embedding jobs waiting while a reply decodes run one per step, not all
    between two steps (the reply keeps moving)."""
    from webui.generation.params import make_params

    backend = runtime.models.current.backend
    events, hold, held = [], threading.Event(), threading.Event()
    step, embed = backend.step, backend.embed

    def holding_step(slots, tokens):
        if not held.is_set():
            held.set()
            hold.wait(timeout=60)  # the model thread waits here while the jobs queue up
        events.append("step")
        return step(slots, tokens)

    monkeypatch.setattr(backend, "step", holding_step)
    monkeypatch.setattr(backend, "embed", lambda rows: events.append("embed") or embed(rows))
    stream = runtime.stream("turns", "The keeper", make_params({"max_new_tokens": 40, "ban_eos_token": True,
                                                                "do_sample": False}))
    reader = threading.Thread(target=lambda: "".join(stream))
    reader.start()
    assert held.wait(timeout=60)
    ids = runtime.models.current.tokenizer(TEXTS[0])["input_ids"]
    jobs = [threading.Thread(target=runtime.embed, args=(f"job{i}", [ids])) for i in range(3)]
    for job in jobs:
        job.start()
    assert wait_for(lambda: runtime.engine.pending == 4, timeout=60)  # the reply and three jobs
    hold.set()
    for job in jobs:
        job.join(timeout=60)
    reader.join(timeout=120)
    first, last = events.index("embed"), len(events) - 1 - events[::-1].index("embed")
    assert events[first : last + 1] == ["embed", "step", "embed", "step", "embed"]
