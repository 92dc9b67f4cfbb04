"""An https remote engine: its certificate is verified by default, a team's own CA can
be trusted for that engine alone (ca_bundle), and a refusal says what is wrong."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from tests.conftest import free_port, make_settings
from webui.generation.params import make_params
from webui.generation.request import GenerationError, GenerationRequest
from webui.remote.config import RemoteEngineConfig

MODEL = "tls-model"
WORDS = ["Let ", "there ", "be ", "light"]


async def models(request):
    return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model"}]})


async def completions(request):
    async def events():
        for word in WORDS:
            yield f"data: {json.dumps({'choices': [{'index': 0, 'text': word, 'finish_reason': None}]})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@pytest.fixture(scope="module")
def tls_engine(tmp_path_factory):
    """A small OpenAI-shaped engine on https://127.0.0.1, with a certificate of its own CA."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),  # noqa: S607
                    "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    app = Starlette(routes=[Route("/v1/models", models),
                            Route("/v1/completions", completions, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           ssl_certfile=str(cert), ssl_keyfile=str(key)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30  # bounded
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"https://127.0.0.1:{port}/v1", cert
    server.should_exit = True
    thread.join(timeout=10)


def gateway(tmp_path, **engine):
    from webui.runtime import build_runtime

    config = RemoteEngineConfig(name="secure", timeout=20, **engine)
    return build_runtime(make_settings(tmp_path / "models", tmp_path / "data", model=None,
                                       remote_engines=(config,)))


def ask(runtime) -> str:
    remote = runtime.remotes.model(MODEL)
    return remote.generate(GenerationRequest("In the beginning", make_params({"max_new_tokens": 8}))).text()


def test_an_unknown_ca_is_refused_with_a_clear_reason(tls_engine, tmp_path):
    url, _ = tls_engine
    (tmp_path / "models").mkdir()
    runtime = gateway(tmp_path, url=url)
    assert runtime.remotes.models(fresh=True) == {}
    problem = runtime.remotes.problems["secure"]
    assert "TLS certificate was not accepted" in problem and "ca_bundle" in problem


def test_the_engines_own_ca_is_trusted_when_configured(tls_engine, tmp_path):
    url, cert = tls_engine
    (tmp_path / "models").mkdir()
    runtime = gateway(tmp_path, url=url, ca_bundle=str(cert))
    assert MODEL in runtime.remotes.models(fresh=True)
    assert ask(runtime) == "".join(WORDS)


def test_verification_can_be_switched_off_for_a_lab(tls_engine, tmp_path):
    url, _ = tls_engine
    (tmp_path / "models").mkdir()
    runtime = gateway(tmp_path, url=url, verify_tls=False)
    assert ask(runtime) == "".join(WORDS)


def test_an_unreadable_ca_file_is_a_clear_error(tls_engine, tmp_path):
    url, _ = tls_engine
    (tmp_path / "models").mkdir()
    (tmp_path / "bad.pem").write_text("not a certificate")
    runtime = gateway(tmp_path, url=url, ca_bundle=str(tmp_path / "bad.pem"))
    assert runtime.remotes.models(fresh=True) == {}
    assert "ca_bundle could not be read" in runtime.remotes.problems["secure"]
    with pytest.raises(GenerationError):
        runtime.stream("t", "x", make_params({"max_new_tokens": 2}), model=MODEL)
