"""Model manager: listing, atomic swaps, refusals (HOSTILE.md 1, 8, 24, 25)."""

from __future__ import annotations

import shutil
import threading

import pytest

from tests.conftest import TINY
from tests.tiny_models import build_llama
from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.loaders.base import LoadError, LoadOptions
from webui.loaders.registry import default_registry
from webui.model_manager import ModelBusy, ModelManager
from webui.paths import NameRefused
from webui.generation.params import make_params


@pytest.fixture()
def model_dir(tmp_path, models_root):
    shutil.copytree(models_root / TINY, tmp_path / "good")
    return tmp_path


@pytest.fixture()
def manager(model_dir):
    m = ModelManager(model_dir, default_registry(), LoadOptions())
    m.load("good")
    return m


def reply(manager) -> str:
    params = make_params({"temperature": 0.0, "max_new_tokens": 8})
    return GenerationEngine(manager).generate(GenerationRequest("The keeper", params)).text()


def test_listing_shows_only_model_folders(model_dir, manager):
    (model_dir / "notes").mkdir()
    (model_dir / ".hidden").mkdir()
    shutil.copytree(model_dir / "good", model_dir / ".secret-model")
    assert manager.names() == ["good"]


@pytest.mark.parametrize(
    "name",
    ["../good", "..%2fgood", "/etc/hosts", "C:\\x", "a/../../b", "go\x00od", "", "x" * 300, None, 5, ".."],
)
def test_hostile_names_are_refused_and_model_kept(manager, name):
    with pytest.raises(NameRefused) as info:
        manager.load(name)
    assert "unknown model" in str(info.value)
    assert manager.current.name == "good"


def test_refusal_is_the_same_whether_or_not_target_exists(manager):
    with pytest.raises(NameRefused) as a:
        manager.load("nothing-here")
    with pytest.raises(NameRefused) as b:
        manager.load("notes-nope")
    assert str(a.value).split(":")[0] == str(b.value).split(":")[0]


def test_truncated_weights_fail_cleanly_and_previous_model_keeps_serving(model_dir, manager):
    before = reply(manager)
    broken = model_dir / "truncated"
    shutil.copytree(model_dir / "good", broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(LoadError, match="truncated"):
        manager.load("truncated")
    assert manager.current.name == "good"
    assert reply(manager) == before


def test_folder_without_weights_is_refused(model_dir, manager):
    empty = model_dir / "no-weights"
    shutil.copytree(model_dir / "good", empty)
    (empty / "model.safetensors").unlink()
    with pytest.raises(LoadError, match="no weights"):
        manager.load("no-weights")
    assert manager.current.name == "good"


def test_pickle_checkpoint_refused_without_opt_in(model_dir, manager):
    pickled = model_dir / "pickled"
    shutil.copytree(model_dir / "good", pickled)
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded: refused before any unpickling")
    with pytest.raises(LoadError, match="--allow-pickle"):
        manager.load("pickled")
    assert manager.current.name == "good"


def test_library_failure_becomes_load_error(model_dir, manager):
    bad = model_dir / "bad-config"
    shutil.copytree(model_dir / "good", bad)
    (bad / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(LoadError):
        manager.load("bad-config")
    assert manager.current.name == "good"


def test_swap_to_another_model_and_unload(model_dir, manager):
    build_llama(model_dir / "other", seed=1)
    first = reply(manager)
    manager.load("other", dtype="bf16")
    assert manager.current.name == "other" and manager.current.dtype == "bfloat16"
    assert reply(manager) != first
    manager.unload()
    assert manager.current is None


def test_load_waits_while_a_request_generates(manager):
    """A swap never happens under a running stream: it waits, or says busy."""
    request = GenerationRequest("The keeper", make_params({"temperature": 0.0, "max_new_tokens": 400}))
    stream = iter(GenerationEngine(manager).generate(request))
    next(stream)  # the request now holds the model
    with pytest.raises(ModelBusy):
        manager.load("good", timeout=0.05)
    done = threading.Event()
    loader = threading.Thread(target=lambda: (manager.load("good"), done.set()))
    loader.start()
    assert not done.wait(0.2)
    request.cancel.cancel()
    list(stream)
    loader.join(timeout=60)
    assert done.is_set()
