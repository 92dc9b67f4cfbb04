"""The Training tab through the real Gradio app (gradio_client), on the session's tiny
model: train, see the progress and loss plot, get refused for bad input, measure
perplexity; and while the model is lent out, chat and API requests are refused."""

from __future__ import annotations

import shutil

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.conftest import API_KEY
from webui.training.service import SAMPLE_NAME

TEXT = "Every spring a boat brought flour, oil, letters and news from the town. " * 20
FORM = dict(lora_name="tab-run", dataset="tab.txt", format="(the model's chat template)", rank=4, alpha=8,
            dropout=0.0, target_modules="q_proj,v_proj", learning_rate=1e-3, scheduler="linear", warmup_steps=0,
            epochs=1, steps=6, micro_batch_size=2, gradient_accumulation=1, cutoff_len=32, overlap=8, save_steps=3,
            seed=0)


def form(**changes):
    return list({**FORM, **changes}.values())


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


@pytest.fixture()
def data(runtime):
    root = runtime.settings.user_data_dir
    folder = root / "training" / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tab.txt").write_text(TEXT, encoding="utf-8")
    (folder / "tab-empty.txt").write_text("", encoding="utf-8")
    yield folder
    for path in (root / "loras" / "tab-run", root / "training" / "checkpoints" / "tab-run"):
        shutil.rmtree(path, ignore_errors=True)


def test_train_from_the_tab_then_measure_perplexity(client, runtime, data):
    assert "tab.txt" in str(client.predict(api_name="/training_lists"))
    status, bar, plot = client.predict(*form(), api_name="/training_start")
    assert "tab-run" in status and "done: step 6/6" in status and "saved to user_data/loras/tab-run/" in status
    assert "6 / 6 steps (100.0%)" in bar
    assert plot["columns"] == ["step", "loss"] and [step for step, _ in plot["data"]] == [1, 2, 3, 4, 5, 6]
    assert "tab-run" in runtime.models.loras() and runtime.models.lent_for is None
    # The adapter applies from the Model tab (its list refreshed, as the ↻ button does).
    assert "tab-run" in str(client.predict(api_name="/lora_list"))
    note, _ = client.predict(["tab-run"], api_name="/lora_apply")
    assert "tab-run" in note
    try:
        line, table = client.predict(SAMPLE_NAME, 64, 32, api_name="/perplexity_run")
    finally:
        client.predict([], api_name="/lora_apply")
    assert "perplexity" in line and "LoRA tab-run" in line and "context 64, stride 32" in line
    newest = dict(zip(table["headers"], table["data"][0], strict=True))
    assert newest["loras"] == "tab-run" and newest["data"] == SAMPLE_NAME and float(newest["perplexity"]) > 1
    # The name is now taken: refused before any work, with the reason.
    with pytest.raises(AppError, match="already exists"):
        client.predict(*form(), api_name="/training_start")


@pytest.mark.parametrize(("changes", "message"), [
    (dict(lora_name="x1", dataset="tab-empty.txt"), "empty"),
    (dict(lora_name="../x"), "lora_name"),
    (dict(lora_name="x2", dataset="../../settings.yaml"), "choices|unknown dataset"),
    (dict(lora_name="x3", cutoff_len=100000, overlap=8), "context"),
    (dict(lora_name="x4", rank=5000), "rank"),
])
def test_bad_requests_are_refused_with_the_reason(client, runtime, data, changes, message):
    client.predict(api_name="/training_lists")  # the dataset list as the ↻ button refreshes it
    with pytest.raises(AppError, match=message):
        client.predict(*form(**changes), api_name="/training_start")
    assert runtime.models.lent_for is None and runtime.training.status().name not in {"x1", "x2", "x3", "x4"}


def test_while_lent_the_page_says_so_and_chat_and_api_are_refused(client, runtime, api_url):
    with runtime.models.lend("training held-by-test"):
        status = client.predict(api_name="/training_status")[0]
        assert "training held-by-test in progress" in status
        reply = client.predict("Hello", api_name="/chat_send")
        assert "**Error:** training held-by-test is in progress" in reply[2]  # the chat's status line
        assert "training held-by-test is in progress" in str(reply[0][-1])  # and in the chat, the reply's place
        answer = httpx.post(f"{api_url}/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                            json={"model": runtime.models.current.name, "max_tokens": 4,
                                  "messages": [{"role": "user", "content": "Hello"}]}, timeout=60)
        assert answer.status_code == 503 and "training held-by-test is in progress" in answer.text
    assert "in progress" not in client.predict(api_name="/training_status")[0]
