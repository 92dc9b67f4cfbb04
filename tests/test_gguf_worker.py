"""GGUF models in a llama.cpp worker process (webui/loaders/gguf_process.py): the same
output as in process, and a crash inside llama.cpp ends only the worker.

Crashes are real: the worker kills itself with SIGSEGV when WEBUI_GGUF_WORKER_FAULT
says so (webui/loaders/gguf_worker.py, test-only), and a model file truncated while it
is mapped makes llama.cpp's next read of its weights fault (SIGBUS).  Each crash is
armed by creating a file the worker deletes as it fires, so the worker started after
it runs clean.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import API_KEY, free_port, make_settings, wait_for
from tests.gguf_fixtures import F32, Q8, require_llama_cpp
from webui.generation.backend import BackendCrashed
from webui.generation.engine import GenerationError
from webui.generation.params import make_params
from webui.loaders.base import LoadError
from webui.settings import PROJECT_ROOT

GREEDY = {"do_sample": False, "max_new_tokens": 24, "ban_eos_token": True}
PROMPTS = ["The quick brown fox", "In the beginning", "Once upon a time there was"]
VICTIM = "victim.gguf"  # a copy of the F32 model that one test truncates while it is loaded


def worker_children() -> list[int]:
    """Process ids of this process's children running the llama.cpp worker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"webui.loaders.gguf_worker" in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


@pytest.fixture(scope="module")
def models(gguf_root, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("worker_models")
    for name in (F32, Q8):
        shutil.copy(gguf_root / name, root / name)
    shutil.copy(gguf_root / F32, root / VICTIM)
    return root


@pytest.fixture(scope="module")
def arm(tmp_path_factory) -> Path:
    """The file whose existence arms the injected crash (the worker deletes it as it fires)."""
    return tmp_path_factory.mktemp("fault") / "armed"


@pytest.fixture(scope="module")
def served(models, arm, tmp_path_factory):
    """A runtime serving the F32 model through a worker that segfaults at the first step
    after `arm` appears, and an OpenAI-compatible server over it."""
    from webui.api.openai_api import APIServer
    from webui.runtime import build_runtime

    require_llama_cpp()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WEBUI_GGUF_WORKER_FAULT", f"segfault-after-steps:0@{arm}")
        runtime = build_runtime(make_settings(models, tmp_path_factory.mktemp("worker_user_data"), model=F32,
                                              api_key=API_KEY))
        assert runtime.models.current is not None, runtime.warnings
        server = APIServer(runtime, port=free_port())
        url = server.start()
        try:
            yield runtime, url
        finally:
            server.stop()
            runtime.models.unload()
            runtime.engine.close()


def run(runtime, prompt, owner="t", **values):
    stream = runtime.stream(owner, prompt, make_params({**GREEDY, **values}))
    return "".join(stream), stream.stats


def greedy_tokens(backend, tokenizer, prompts, steps=12):
    """Each prompt's greedy tokens decoded alone, then all of them in one batch."""
    ids = [tokenizer(p)["input_ids"] for p in prompts]

    def decode(slots):
        out = [[int(slot.logits.argmax())] for slot in slots]
        for _ in range(steps):
            rows = backend.step(slots, [tokens[-1] for tokens in out])
            assert rows.shape == (len(slots), backend.vocab_size())
            for tokens, row in zip(out, rows, strict=True):
                tokens.append(int(row.argmax()))
        for slot in slots:
            backend.finish(slot, keep=True)
        return out

    solo = [decode([backend.start(i)])[0] for i in ids]
    backend.clear_cache()
    together = decode([backend.start(i) for i in ids])
    return solo, together


@pytest.mark.parametrize("file", [F32, Q8])
def test_the_worker_gives_the_in_process_backends_tokens_and_embeddings(models, file):
    """Token by token, alone and batched, the same greedy choices and embeddings."""
    import torch

    from webui.loaders.gguf_loader import LlamaCppLoader
    from webui.loaders.gguf_options import LlamaCppOptions

    require_llama_cpp()
    others = set(worker_children())
    results = {}
    for isolate in (False, True):
        loader = LlamaCppLoader(isolate=isolate)
        loaded = loader.load(file, models / file, LlamaCppOptions())
        try:
            backend = loaded.backend
            assert type(backend).__name__ == ("LlamaCppWorker" if isolate else "LlamaCppBackend")
            solo, together = greedy_tokens(backend, loaded.tokenizer, PROMPTS)
            # A prompt that starts like a kept one reuses its prefix in the worker too.
            ids = loaded.tokenizer(PROMPTS[2] * 3)["input_ids"]
            first = backend.start(ids)
            backend.finish(first, keep=True)
            again = backend.start(ids + ids[1:4])
            backend.finish(again, keep=False)
            vectors = backend.embed([loaded.tokenizer(p)["input_ids"] for p in PROMPTS])
            results[isolate] = (solo, together, again.cached_tokens, vectors, loaded.backend.capabilities,
                                loaded.backend.eos_ids(), loaded.context_length)
        finally:
            loader.unload(loaded)
    (solo, together, cached, vectors, caps, eos, n_ctx), worker = results[False], results[True]
    assert solo == together  # the in-process baseline batches exactly
    assert worker[0] == solo and worker[1] == together
    assert cached == worker[2] >= len(ids) - 1
    assert torch.equal(worker[3], vectors)
    assert worker[4:] == (caps, eos, n_ctx)
    assert set(worker_children()) == others


def test_a_crash_mid_generation_fails_the_running_requests_clearly_and_the_next_is_answered(served, arm, caplog):
    runtime, url = served
    backend = runtime.models.current.backend
    first_pid = backend.pid
    before = [run(runtime, p, owner=f"b{i}")[0] for i, p in enumerate(PROMPTS[:2])]
    # Two replies decode in one batch; the crash comes at the next step once armed.
    streams = [runtime.stream(f"u{i}", p, make_params({**GREEDY, "max_new_tokens": 400}))
               for i, p in enumerate(PROMPTS[:2])]
    pieces = [stream.updates() for stream in streams]
    for updates in pieces:
        next(piece for piece in updates if isinstance(piece, str))
    assert runtime.engine.running == 2
    caplog.set_level(logging.ERROR)
    arm.touch()
    for updates in pieces:
        with pytest.raises(BackendCrashed, match=r"worker stopped \(SIGSEGV\) while decoding; the model is being "
                                                 "reloaded") as crashed:
            list(updates)
        assert crashed.value.status == 503
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "SIGSEGV" in errors[0].getMessage(), [r.getMessage() for r in errors]
    # Meanwhile (the model is being reloaded) the server answers what needs no model.
    models = httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    assert models.status_code == 200 and F32 in {m["id"] for m in models.json()["data"]}
    # The next requests are answered by the reloaded worker, with the same text as before.
    assert [run(runtime, p, owner=f"a{i}")[0] for i, p in enumerate(PROMPTS[:2])] == before
    assert backend.pid != first_pid and alive(backend.pid) and not alive(first_pid)
    assert runtime.models.current.backend is backend
    from webui.ui.model_tab import status_text

    assert "llama.cpp worker restarted after SIGSEGV at" in status_text(runtime)
    assert "(1 time)" in backend.status_note


def test_the_api_answers_a_crash_in_its_error_shape_and_then_serves(served, arm, monkeypatch):
    from webui.loaders import gguf_process

    monkeypatch.setattr(gguf_process, "RESTART_WINDOW", 0.0)  # crashes minutes apart: each one restarts
    runtime, url = served
    client = openai.OpenAI(base_url=url, api_key=API_KEY, max_retries=0)
    expected = client.completions.create(model=F32, prompt=PROMPTS[0], max_tokens=16, temperature=0).choices[0].text
    arm.touch()
    with pytest.raises(openai.APIStatusError) as refused:
        client.completions.create(model=F32, prompt=PROMPTS[0], max_tokens=16, temperature=0)
    assert refused.value.status_code == 503
    assert refused.value.body["code"] == "backend_crashed" and "SIGSEGV" in refused.value.body["message"]
    # A streamed reply already under way ends with an error event in the same shape.
    arm.touch()
    events = []
    with httpx.stream("POST", f"{url}/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60,
                      json={"model": F32, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16,
                            "stream": True}) as reply:
        events = [line for line in reply.iter_lines() if line.startswith("data: ")]
    assert '"code": "backend_crashed"' in events[-1] and "SIGSEGV" in events[-1], events[-3:]
    # Ollama's route, after: answered by the reloaded worker.
    tags = httpx.get(f"{url.removesuffix('/v1')}/api/tags", headers={"Authorization": f"Bearer {API_KEY}"},
                     timeout=30)
    assert tags.status_code == 200
    again = client.completions.create(model=F32, prompt=PROMPTS[0], max_tokens=16, temperature=0).choices[0].text
    assert again == expected


def test_a_worker_that_keeps_crashing_is_not_restarted_and_the_model_says_so(served, arm):
    from webui.model_settings import ModelSettings
    from webui.ui.model_tab import status_text

    runtime, _ = served
    runtime.load_model(F32, save=False)  # a fresh worker: no crash counted yet
    backend = runtime.models.current.backend
    first = backend.pid
    for attempt in range(3):
        arm.touch()
        with pytest.raises(BackendCrashed, match="SIGSEGV"):
            run(runtime, PROMPTS[0], owner=f"c{attempt}")
    # The third crash within a minute: no restart; each request hears why at once.
    assert "not restarted again" in backend.status_note and "llama.cpp worker failed" in status_text(runtime)
    with pytest.raises(BackendCrashed, match="load the model again"):
        run(runtime, PROMPTS[0], owner="late")
    assert backend.pid is None and not alive(first)
    arm.unlink(missing_ok=True)
    runtime.load_model(F32, ModelSettings(), save=False)
    assert run(runtime, PROMPTS[0])[0] and runtime.models.current.backend.status_note is None


def test_a_model_file_truncated_while_loaded_fails_the_request_and_the_reload_says_why(served, models):
    """A corrupt file read mid-run: the weights' pages vanish under llama.cpp's mapping."""
    runtime, _ = served
    runtime.load_model(VICTIM, save=False)
    try:
        assert run(runtime, PROMPTS[1])[0]
        with open(models / VICTIM, "r+b") as handle:
            handle.truncate(4096)
        with pytest.raises(BackendCrashed, match=r"\(SIGBUS\)"):
            run(runtime, PROMPTS[1], owner="victim")
        backend = runtime.models.current.backend
        assert wait_for(lambda: "could not be restarted" in (backend.status_note or ""))
        with pytest.raises(BackendCrashed, match="could not be restarted"):
            run(runtime, PROMPTS[1], owner="victim")
    finally:
        shutil.copy(models / F32, models / VICTIM)
        runtime.load_model(F32, save=False)
    assert run(runtime, PROMPTS[1])[0]


def test_a_file_that_crashes_llama_cpp_at_load_fails_the_load_and_the_previous_model_serves(served, arm):
    runtime, _ = served
    before = run(runtime, PROMPTS[0])[0]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WEBUI_GGUF_WORKER_FAULT", f"segfault-at-load@{arm}")
        arm.touch()
        with pytest.raises(LoadError, match=r"llama.cpp stopped \(SIGSEGV\) while loading"):
            runtime.load_model(Q8, save=False)
    assert runtime.models.current.name == F32 and run(runtime, PROMPTS[0])[0] == before


def test_unload_ends_the_worker_and_a_dead_server_leaves_no_worker_behind(models):
    from webui.loaders.gguf_loader import LlamaCppLoader
    from webui.loaders.gguf_options import LlamaCppOptions

    require_llama_cpp()
    others = set(worker_children())  # the module's runtime's worker, if it runs
    loader = LlamaCppLoader()
    loaded = loader.load(F32, models / F32, LlamaCppOptions())
    backend = loaded.backend
    pid = backend.pid
    assert set(worker_children()) - others == {pid}
    loader.unload(loaded)
    assert set(worker_children()) == others and not alive(pid)
    with pytest.raises(GenerationError, match="unloaded"):
        backend.start([1, 2, 3])
    # A server killed outright (no unload): its worker sees the socket close and exits.
    script = ("import sys, time; from pathlib import Path\n"
              "from webui.loaders.gguf_loader import LlamaCppLoader\n"
              "from webui.loaders.gguf_options import LlamaCppOptions\n"
              "loaded = LlamaCppLoader().load('m', Path(sys.argv[1]), LlamaCppOptions())\n"
              "print(loaded.backend.pid, flush=True); time.sleep(600)\n")
    server = subprocess.Popen([sys.executable, "-c", script, str(models / F32)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    try:
        child = int(server.stdout.readline())
        assert alive(child)
        server.send_signal(signal.SIGKILL)
        server.wait(30)
        assert wait_for(lambda: not os.path.exists(f"/proc/{child}"), timeout=30)
    finally:
        server.kill()
        server.wait(30)
        server.stdout.close()


def test_concurrent_requests_keep_their_solo_output_through_the_worker(served):
    runtime, _ = served
    solo = [run(runtime, p)[0] for p in PROMPTS]
    results: dict[int, str] = {}
    gate = threading.Barrier(len(PROMPTS))

    def worker(index, prompt):
        gate.wait()
        results[index] = run(runtime, prompt, owner=f"user{index}")[0]

    threads = [threading.Thread(target=worker, args=(i, p)) for i, p in enumerate(PROMPTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [results[i] for i in range(len(PROMPTS))] == solo
