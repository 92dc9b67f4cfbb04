"""Shared fixtures: one tiny real model and one running app for the whole session."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402

# Property tests draw the same examples on every run: a CI failure can be replayed,
# and a rare example cannot make the suite flaky.
hypothesis_settings.register_profile("repeatable", derandomize=True, deadline=None)
hypothesis_settings.load_profile("repeatable")

from tests.tiny_models import build_llama  # noqa: E402
from webui.settings import PROJECT_ROOT, Settings  # noqa: E402

# Tiny GGUF models and the documents fixture: built only when a test asks.
pytest_plugins = ["tests.gguf_fixtures", "tests.doc_fixtures"]

TINY = "tiny-llama"
# Skips that must not happen in CI: the CI machine is set up for these areas, so a
# skip there would hide a whole area behind a green run (.ci/run sets WEBUI_CI=1).
REQUIRED_IN_CI = ("bitsandbytes", "chromium", "playwright", "firefox")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("WEBUI_CI"):
        reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
        if any(word in reason.lower() for word in REQUIRED_IN_CI):
            report.outcome = "failed"
            report.longrepr = f"skipped in CI, where this should be available: {reason}"


def pytest_collection_modifyitems(config, items):
    """WEBUI_TEST_ORDER=reverse runs the collected tests last to first: every test
    sets up the state it needs, and this proves it (.ci/run does it for the UI files)."""
    if os.environ.get("WEBUI_TEST_ORDER") == "reverse":
        items.reverse()
API_KEY = "test-api-key-123"
ADMIN_KEY = "test-admin-key-456"


@pytest.fixture(scope="session")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    build_llama(root / TINY)
    return root


@pytest.fixture(scope="session")
def thinker_root(tmp_path_factory):
    """A models folder holding the tiny Qwen3 trained to think (tests/thinking_model.py),
    as "thinker": trained once for every test module that asks."""
    from tests.thinking_model import build_thinking_model

    root = tmp_path_factory.mktemp("thinker-models")
    build_thinking_model(root / "thinker")
    return root


def make_settings(models_root, user_data, **overrides) -> Settings:
    values = dict(
        model=TINY, model_dir=models_root, user_data_dir=user_data,
        presets_dir=PROJECT_ROOT / "presets", preset="Deterministic",
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def runtime(models_root, tmp_path_factory):
    from webui.runtime import build_runtime

    settings = make_settings(models_root, tmp_path_factory.mktemp("user_data"), api_key=API_KEY, admin_key=ADMIN_KEY)
    return build_runtime(settings)


@pytest.fixture(autouse=True)
def last_used_values_put_back(request):
    """A test that sends /set_params (or saves values as a user does) leaves the shared
    runtime's last used values as they were before it: the next test starts from the
    same values whatever ran before it."""
    if "runtime" not in request.fixturenames:
        yield
        return
    settings_file = request.getfixturevalue("runtime").users.get(None).settings_file
    before = settings_file.read_bytes() if settings_file.is_file() else None
    yield
    if before is None:
        settings_file.unlink(missing_ok=True)
    elif not settings_file.is_file() or settings_file.read_bytes() != before:
        settings_file.write_bytes(before)


@pytest.fixture()
def prompts(monkeypatch):
    """The prompt text each request handed to the model (the engine's own tokenization)."""
    import webui.generation.engine as engine_module

    seen: list[str] = []
    real = engine_module.prompt_ids

    def spy(tokenizer, text):
        seen.append(text)
        return real(tokenizer, text)

    monkeypatch.setattr(engine_module, "prompt_ids", spy)
    return seen


@pytest.fixture(scope="session")
def engine(runtime):
    return runtime.engine


@pytest.fixture(scope="session")
def tokenizer(runtime):
    return runtime.models.current.tokenizer


def wait_for(predicate, timeout: float = 60.0) -> bool:
    """Poll `predicate` until it holds; a bounded loop that gives up by itself."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def thread_activity(thread) -> tuple[int, float]:
    """(times it went to sleep, CPU seconds) of a running `thread` so far, from Linux's
    /proc: a thread blocked in a wait adds neither, one that polls adds one per look."""
    task = Path(f"/proc/self/task/{thread.native_id}")
    status = (task / "status").read_text()
    slept = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M)[1])
    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()  # from field 3 (state) on
    return slept, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


needs_proc = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")


@pytest.fixture(scope="session")
def ui(runtime):
    """The launched Gradio app and its URL."""
    from webui.ui.app import launch

    app, url = launch(runtime, block=False, port=free_port())
    yield app, url
    app.close()


@pytest.fixture(scope="session")
def app_url(ui):
    return ui[1]


@pytest.fixture(scope="session")
def api_url(runtime):
    from webui.api.openai_api import APIServer

    server = APIServer(runtime, port=free_port())
    url = server.start()
    yield url
    server.stop()


def page_load(client) -> dict:
    """The page-load event's values, by each component's elem_id (else its label).

    The page has one load event for every tab (webui/ui/app.py), so its outputs are
    named here rather than counted by position; State outputs are not returned.
    """
    config = client.config
    event = next(d for d in config["dependencies"] if d.get("api_name") == "page_load")
    components = {c["id"]: c for c in config["components"]}
    shown = [components[i] for i in event["outputs"] if not components[i].get("skip_api")]
    values = client.predict(api_name="/page_load")
    return {c["props"].get("elem_id") or c["props"].get("label"): v for c, v in zip(shown, values, strict=True)}
