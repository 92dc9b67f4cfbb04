"""The Inspect tab through the real Gradio app (gradio_client) and the logit lens
through the API, on the session's tiny model."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.conftest import ADMIN_KEY, API_KEY
from webui.inspect.lens import MAX_TOKENS, TOP

TEXT = "The keeper climbed the stairs of the lighthouse."


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def reference(runtime, ids):
    """The model's own next-token distribution, from a plain forward."""
    with torch.inference_mode():
        logits = runtime.models.current.model(torch.tensor([ids])).logits[0].float()
    return torch.softmax(logits, dim=-1)


def test_run_shows_the_lens_table_the_top_tokens_norms_and_attention(client, runtime):
    status, lens, top, cell, norms, plot, head, attention = client.predict(TEXT, -1, api_name="/inspect_run")
    layers = runtime.models.current.model.config.num_hidden_layers
    ids = runtime.models.current.tokenizer(TEXT)["input_ids"]
    assert f"{len(ids)} tokens, {layers} layers" in status
    # Rows: the embeddings then each layer; a column per position, headed by its token.
    assert [row[0] for row in lens["data"]] == ["embeddings", *(f"layer {i}" for i in range(1, layers + 1))]
    assert len(lens["headers"]) == len(ids) + 1 and lens["headers"][2].startswith("1 ")
    # Each cell is coloured by its probability.
    styling = lens["metadata"]["styling"]
    assert len(styling) == layers + 1 and all("background-color" in s for s in styling[0][1:])
    # The last row's cells and the top 10 shown are the model's own next-token distribution.
    expected = reference(runtime, ids)
    tokenizer = runtime.models.current.tokenizer
    last = lens["data"][-1]
    for position in range(len(ids)):
        p = float(expected[position].max())
        assert last[position + 1].endswith(f"{100 * p:.1f}%") or p < 0.001
    assert "after position" in cell and len(top["data"]) == TOP
    best = expected[-1].topk(TOP)
    assert [row[1] for row in top["data"]] == [f"{100 * float(p):.1f}%" if p >= 0.001 else "<0.1%" for p in best.values]
    assert tokenizer.convert_ids_to_tokens(int(best.indices[0])).replace("▁", "") in top["data"][0][0].replace("␣", "")
    # One norm per layer and the embeddings; attention for the last token, heads averaged.
    assert [row[0] for row in norms["data"]] == list(range(layers + 1))
    assert len(attention["data"]) == layers and len(attention["headers"]) == len(ids) + 1
    for row in attention["data"]:
        assert abs(sum(float(v) for v in row[1:]) - 1) < 0.01


def test_a_cell_shows_its_top_ten_and_a_head_its_own_rows(client, runtime):
    client.predict(TEXT, 3, api_name="/inspect_run")
    label, top = client.predict(1, 2, api_name="/inspect_cell")
    assert "layer 1, after position 2" in label and len(top["data"]) == TOP
    probabilities = [float(p.rstrip("%")) for _, p in top["data"] if p != "<0.1%"]
    assert probabilities == sorted(probabilities, reverse=True)
    one = client.predict("head 1", api_name="/inspect_heads")
    assert len(one["headers"]) == 3 + 2  # the layer, then positions 0..3
    rows = np.array([[float(v) for v in row[1:]] for row in one["data"]])
    assert np.allclose(rows.sum(axis=1), 1, atol=0.01)
    with pytest.raises(AppError, match="layer"):
        client.predict(99, 0, api_name="/inspect_cell")


def test_the_tab_refuses_too_long_a_text_naming_the_field(client, runtime):
    with pytest.raises(AppError, match=f"text: .* more than {MAX_TOKENS}"):
        client.predict("lighthouse keeper " * MAX_TOKENS, -1, api_name="/inspect_run")
    with pytest.raises(AppError, match="position"):
        client.predict(TEXT, 500, api_name="/inspect_run")
    assert runtime.models.lent_for is None
    assert client.predict(api_name="/inspect_stop") == "Nothing is running."


def test_the_api_route_answers_the_admin_with_the_same_lens(api_url, runtime):
    url = f"{api_url}/internal/logit-lens" if api_url.endswith("/v1") else f"{api_url}/v1/internal/logit-lens"
    body = {"text": TEXT, "top": 3, "position": 2}
    assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60).status_code == 401
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    reply = httpx.post(url, json=body, headers=admin, timeout=60)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    ids = [t["id"] for t in data["tokens"]]
    expected = reference(runtime, ids)
    last = data["lens"][-1]
    assert len(data["lens"]) == len(data["layers"]) == len(data["norms"])
    for position, cells in enumerate(last):
        assert [c["id"] for c in cells] == expected[position].topk(3).indices.tolist()
        assert abs(cells[0]["probability"] - float(expected[position].max())) < 1e-4
    assert data["position"] == 2 and all(abs(sum(h) - 1) < 1e-4 for layer in data["attention"] for h in layer)
    long = httpx.post(url, json={"text": "lighthouse keeper " * MAX_TOKENS}, headers=admin, timeout=60)
    assert long.status_code == 400 and long.json()["error"]["param"] == "text"
    bad = httpx.post(url, json={"text": TEXT, "top": 11}, headers=admin, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "top"
