"""The Model tab's events driven through gradio_client against the live app."""

from __future__ import annotations

import shutil

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.conftest import TINY
from tests.fake_hub import FakeHub, Repo
from tests.test_loras import make_adapter
from webui.chat.templates import MODEL_TEMPLATE

DEFAULTS = dict(dtype="auto", cpu=True, attention="auto", in8=False, in4=False, cpu_int8=False, quant_type="nf4",
                double_quant=False, compute="auto", split="", cpu_memory=0, disk=False,
                # llama.cpp's options (a Transformers model leaves them out)
                n_ctx=0, n_gpu_layers=0, threads=0, threads_batch=0, n_batch=512, tensor_split="",
                flash_attn=False, cache_type="fp16", no_mmap=False, mlock=False, rope_freq_base=0, gguf_file="",
                context=0, template=MODEL_TEMPLATE)
CONTEXT = list(DEFAULTS).index("context")  # where /model_settings shows the context, then the template and fit


def options(**changes):
    return list({**DEFAULTS, **changes}.values())


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


@pytest.fixture()
def restore(runtime):
    """Put the shared runtime back as it was: saved per-model settings and the model."""
    path = runtime.model_settings.path
    before = path.read_text() if path.exists() else None
    yield
    if before is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(before)
    runtime.models.load(TINY)


def test_load_in_4bit_is_saved_and_shown_when_picked_again(client, runtime, restore):
    status = client.predict(TINY, *options(in4=True, quant_type="fp4", context=256), api_name="/model_load")[0]
    assert "4-bit fp4" in status and "context 256" in status
    assert runtime.models.current.options.load_in_4bit
    shown = client.predict(TINY, api_name="/model_settings")
    assert list(shown[3:7]) == [False, True, False, "fp4"] and shown[CONTEXT] == 256
    fit = shown[CONTEXT + 2]
    assert "context 256" in fit and "4-bit weights" in fit  # the fit report, for these settings


def test_invalid_options_are_refused_and_the_model_kept(client, runtime, restore):
    before = runtime.models.current
    for bad in (dict(split="20,x"), dict(split="-4"), dict(cpu_memory=-1), dict(in8=True, in4=True)):
        try:
            status = client.predict(TINY, *options(**bad), api_name="/model_load")[0]
        except AppError:
            continue
        assert "Load failed" in status, bad
    assert runtime.models.current is before


def test_will_it_fit(client):
    report = client.predict(TINY, *options(in8=True, context=128), api_name="/model_fit")
    assert "parameters" in report and "context 128" in report and "8-bit weights" in report
    with pytest.raises(AppError, match="not in the list of choices"):  # Gradio's own check, before ours
        client.predict("missing", *options(), api_name="/model_fit")


def test_lora_list_apply_remove(client, runtime, models_root, restore):
    make_adapter(models_root / TINY, runtime.settings.lora_dir / "tab-lora", ["q_proj"], seed=5)
    assert "tab-lora" in str(client.predict(api_name="/lora_list"))
    note, status = client.predict(["tab-lora"], api_name="/lora_apply")
    assert "tab-lora" in note and "LoRA tab-lora" in status and runtime.models.current.loras == ("tab-lora",)
    note, status = client.predict([], api_name="/lora_apply")
    assert "none" in note and runtime.models.current.loras == ()


@pytest.fixture()
def downloaded(models_root):
    """The model the download test fetches, removed afterwards (after `restore` has
    loaded the tiny model again, when it is listed before `restore`)."""
    folder = models_root / "tiny-org_tiny-model"
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_download_through_the_tab_then_load_it(client, runtime, models_root, downloaded, restore):
    # Serve the tiny model's own files from a loopback hub, download, load.
    files = {p.name: p.read_bytes() for p in (models_root / TINY).iterdir() if p.is_file()}
    hub = FakeHub({"tiny-org/tiny-model": Repo(files)})
    url = hub.start()
    runtime.downloads.endpoint = url
    try:
        status, _ = client.predict("tiny-org/tiny-model", "main", "", api_name="/model_download")
        assert "Downloaded" in status
        refused, _ = client.predict("../../etc", "main", "", api_name="/model_download")
        assert "org/name" in refused
    finally:
        runtime.downloads.endpoint = None
        hub.stop()
    assert downloaded.name in runtime.models.names()
    status = client.predict(downloaded.name, *options(), api_name="/model_load")[0]
    assert "Loaded: **tiny-org_tiny-model" in status


def test_admin_api_load_takes_loader_options_but_never_code_execution(api_url, runtime, restore):
    import httpx

    from tests.conftest import ADMIN_KEY

    admin = {"x-api-key": ADMIN_KEY}
    loaded = httpx.post(f"{api_url}/internal/models/load", headers=admin, timeout=120,
                        json={"model": TINY, "load_in_8bit": True, "context_length": 200})
    assert loaded.status_code == 200, loaded.text
    assert "8-bit" in loaded.json()["loaded"] and "context 200" in loaded.json()["loaded"]
    for evil in ({"trust_remote_code": True}, {"allow_pickle": True}, {"offload_dir": "/tmp"},
                 {"chat_template": "../../etc/passwd"}, {"gpu_split": [-1]}, {"load_in_4bit": "maybe"}):
        response = httpx.post(f"{api_url}/internal/models/load", headers=admin, json={"model": TINY, **evil})
        assert response.status_code == 400, evil
    assert runtime.models.current.options.load_in_8bit and not runtime.models.current.options.trust_remote_code


def test_the_page_shows_no_absolute_server_paths(client, runtime, tmp_path):
    from webui.settings import PROJECT_ROOT
    from webui.ui.common import shown_path

    # The tests' model folder lies outside the app's folder: only its name is shown.
    assert str(runtime.settings.model_dir) not in str(client.config)
    assert f"…/{runtime.settings.model_dir.name}" in str(client.config)
    assert shown_path(PROJECT_ROOT / "models") == "models"
    assert shown_path(PROJECT_ROOT / "models" / "org_name") == "models/org_name"
    assert shown_path(tmp_path / "elsewhere") == "…/elsewhere"


def test_quantization_switches_are_disabled_without_bitsandbytes(runtime, monkeypatch):
    """README: without bitsandbytes the 8/4-bit switches are disabled with a note."""
    import sys

    import gradio as gr

    from webui.ui.app import build_app

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now fails
    app = build_app(runtime)
    boxes = {b.label: b for b in app.blocks.values() if isinstance(b, gr.Checkbox)}
    assert boxes["load-in-8bit"].interactive is False and boxes["load-in-4bit"].interactive is False
    notes = [b.value for b in app.blocks.values() if isinstance(b, gr.Markdown) and isinstance(b.value, str)]
    assert any("need bitsandbytes" in note for note in notes)
    monkeypatch.undo()  # bitsandbytes as this machine has it
    with_it = {b.label: b for b in build_app(runtime).blocks.values() if isinstance(b, gr.Checkbox)}
    assert with_it["load-in-8bit"].interactive is not False  # installed here: the switches work


def test_cpu_int8_loads_from_the_model_tab_and_the_fit_report_counts_its_peak(client, runtime, restore):
    status = client.predict(TINY, *options(cpu_int8=True), api_name="/model_load")[0]
    assert "cpu-int8" in status and runtime.models.current.options.cpu_int8
    fit = client.predict(TINY, api_name="/model_settings")[CONTEXT + 2]
    assert "| cpu-int8 |" in fit and "Loading peaks at" in fit
