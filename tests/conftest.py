"""Shared fixtures: one tiny real model and one running app for the whole session."""

from __future__ import annotations

import os
import socket
import time

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

pytest_plugins = ["tests.gguf_fixtures"]  # tiny GGUF models, built only when a test asks

TINY = "tiny-llama"
API_KEY = "test-api-key-123"
ADMIN_KEY = "test-admin-key-456"


@pytest.fixture(scope="session")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    build_llama(root / TINY)
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


@pytest.fixture(scope="session")
def app_url(runtime):
    from webui.ui.app import launch

    app, url = launch(runtime, block=False, port=free_port())
    yield url
    app.close()


@pytest.fixture(scope="session")
def api_url(runtime):
    from webui.api.openai_api import APIServer

    server = APIServer(runtime, port=free_port())
    url = server.start()
    yield url
    server.stop()
