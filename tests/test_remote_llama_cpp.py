"""A remote engine that is not this app: llama-cpp-python's OpenAI-compatible server
(`python -m llama_cpp.server`) on a tiny GGUF, on loopback.

Skipped, saying why, while llama-cpp-python or a GGUF builder for the tiny test model
is missing (both come with the GGUF loader's work).
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.conftest import free_port, make_settings, wait_for
from webui.remote.config import RemoteEngineConfig

pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed in this environment")
gguf_convert = pytest.importorskip("webui.loaders.gguf_convert",
                                   reason="no GGUF converter in this checkout yet (the GGUF loader brings it)")
if gguf_convert.converter() is None:
    pytest.skip("llama.cpp's converter is not unpacked (scripts/install.sh gguf)", allow_module_level=True)


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    from tests.tiny_models import build_llama

    root = tmp_path_factory.mktemp("gguf")
    gguf = root / "tiny-f32.gguf"
    gguf_convert.convert(build_llama(root / "tiny-llama"), gguf, "f32", gguf_convert.converter())
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host",
                                "127.0.0.1", "--port", str(port), "--model_alias", "tiny-gguf"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/models", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert wait_for(up, timeout=120), "llama_cpp.server did not start"
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def front(llama_server, tmp_path_factory):
    from webui.api.openai_api import APIServer
    from webui.runtime import build_runtime

    engine = RemoteEngineConfig(url=llama_server, name="llama", kind="llama-cpp-python")
    runtime = build_runtime(make_settings(tmp_path_factory.mktemp("m"), tmp_path_factory.mktemp("u"), model=None,
                                          remote_engines=(engine,)))
    server = APIServer(runtime, port=free_port())
    yield server.start()
    server.stop()


BODY = {"model": "tiny-gguf", "prompt": "In the beginning", "max_tokens": 16, "temperature": 0}


def test_listed_and_greedy_equal_to_asking_llama_cpp(front, llama_server):
    assert "tiny-gguf" in {c["id"] for c in httpx.get(f"{front}/models", timeout=60).json()["data"]}
    ours = httpx.post(f"{front}/completions", json=BODY, timeout=120).json()["choices"][0]["text"]
    theirs = httpx.post(f"{llama_server}/completions", json=BODY, timeout=120).json()["choices"][0]["text"]
    assert ours == theirs


def test_llama_cpp_samplers_pass_and_others_are_refused(front):
    body = {**BODY, "temperature": 0.7, "seed": 1, "top_k": 20, "min_p": 0.05, "mirostat_mode": 2}
    assert httpx.post(f"{front}/completions", json=body, timeout=120).status_code == 200
    refused = httpx.post(f"{front}/completions", json={**BODY, "dry_multiplier": 0.8}, timeout=60)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "dry_multiplier"
