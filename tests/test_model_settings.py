"""Per-model settings: saved on load, applied when the model is loaded again."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
import yaml

from tests.conftest import TINY, make_settings
from webui.chat.prompt import render_chat_prompt
from webui.loaders.base import LoadError
from webui.model_settings import ModelSettings, ModelSettingsStore
from webui.paths import NameRefused
from webui.runtime import build_runtime

TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant] "


@pytest.fixture()
def runtime(models_root, tmp_path):
    (tmp_path / "instruction-templates").mkdir()
    (tmp_path / "instruction-templates" / "plain.jinja").write_text(TEMPLATE)
    return build_runtime(make_settings(models_root, tmp_path, model=None, cpu=True))


def test_load_saves_and_reload_reapplies(runtime, tmp_path):
    choice = ModelSettings(load_in_8bit=True, context_length=128, chat_template="plain")
    loaded, warning = runtime.load_model(TINY, choice)
    assert warning is None
    assert loaded.context_length == 128 and loaded.options.load_in_8bit
    assert render_chat_prompt(loaded.tokenizer, [{"role": "user", "content": "hi"}]) == "[user] hi\n[assistant] "
    saved = yaml.safe_load((tmp_path / "model_settings.yaml").read_text())
    assert saved == {TINY: {"load_in_8bit": True, "load_in_4bit": False, "context_length": 128, "chat_template": "plain"}}

    runtime.models.unload()
    again, _ = runtime.load_model(TINY)  # no choice: the saved settings
    assert again.options.load_in_8bit and again.context_length == 128
    assert again.tokenizer.chat_template == TEMPLATE
    # A later choice changes only what it names.
    third, _ = runtime.load_model(TINY, ModelSettings(load_in_8bit=False))
    assert not third.options.load_in_8bit and third.context_length == 128
    assert runtime.saved_model_settings(TINY).load_in_8bit is False


def test_choosing_8bit_turns_a_saved_4bit_off(runtime):
    runtime.load_model(TINY, ModelSettings(load_in_4bit=True))
    loaded, _ = runtime.load_model(TINY, ModelSettings(load_in_8bit=True))
    assert loaded.options.load_in_8bit and not loaded.options.load_in_4bit
    loaded, _ = runtime.load_model(TINY, ModelSettings(load_in_4bit=True))
    assert loaded.options.load_in_4bit and not loaded.options.load_in_8bit


def test_context_length_never_exceeds_the_model(runtime):
    loaded, _ = runtime.load_model(TINY, ModelSettings(context_length=1 << 20))
    assert loaded.context_length == 512


def test_unknown_template_is_refused_before_loading(runtime):
    with pytest.raises(NameRefused):
        runtime.load_model(TINY, ModelSettings(chat_template="missing"))
    with pytest.raises(ValueError):
        ModelSettings(chat_template="../../etc/passwd")
    assert runtime.models.current is None


@pytest.mark.parametrize("entry", [
    {"trust_remote_code": True}, {"allow_pickle": True}, {"offload_dir": "/tmp"}, {"load_in_8bit": "yes please"},
    {"gpu_split": [-1]}, {"chat_template": "../x"}, "not a mapping",
])
def test_hostile_saved_entries_are_ignored(tmp_path, entry):
    (tmp_path / "model_settings.yaml").write_text(yaml.safe_dump({TINY: entry}))
    assert ModelSettingsStore(tmp_path).get(TINY) == ModelSettings()


def test_broken_file_is_reported_not_overwritten(tmp_path):
    path = tmp_path / "model_settings.yaml"
    path.write_text("{{{ not yaml")
    store = ModelSettingsStore(tmp_path)
    assert store.get(TINY) == ModelSettings()
    assert "not saved" in store.save(TINY, ModelSettings(dtype="fp32"))
    assert path.read_text() == "{{{ not yaml"


def test_fit_report_uses_the_choice(runtime):
    text = runtime.fit_report(TINY, ModelSettings(load_in_4bit=True, context_length=256))
    assert "context 256" in text and "4-bit weights" in text and "RAM" in text
    with pytest.raises(NameRefused):
        runtime.fit_report("../x")


def test_saved_options_cannot_reach_code_execution(runtime):
    with pytest.raises(ValidationError, match="trust_remote_code"):  # an unknown key
        ModelSettings(trust_remote_code=True)
    assert not runtime.load_model(TINY)[0].options.trust_remote_code
    with pytest.raises(LoadError):
        runtime.models.options_for({"trust_remote_code": True})
