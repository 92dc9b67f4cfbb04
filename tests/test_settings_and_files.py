"""Settings precedence and validation, presets, safe names, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from webui.__main__ import main
from webui.cli import parse_flags
from webui.paths import NameRefused, list_entries, pick
from webui.generation.params import ParamsError, SamplingParams, make_params
from webui.presets import PresetLibrary, preset_delta
from webui.settings import PROJECT_ROOT, SettingsError, build_settings
from webui.storage import atomic_write_text

HOSTILE_NAMES = ["../../etc/passwd", "..%2f..%2fx", "/etc/hosts", "C:\\x", "a/../../b",
                 "x\x00y", "", "a" * 300, ".bashrc", "..", None, ["a"]]


def flags(*argv):
    return parse_flags(list(argv))


def test_precedence_defaults_then_yaml_then_flags(tmp_path):
    (tmp_path / "settings.yaml").write_text("listen_port: 9000\npreset: Top-P\ndtype: fp16\n")
    values, _ = flags("--user-data-dir", str(tmp_path), "--bf16")
    settings, warnings = build_settings(values)
    assert warnings == []
    assert settings.listen_port == 9000  # from the file
    assert settings.preset == "Top-P"  # from the file
    assert settings.dtype == "bf16"  # the flag beats the file
    assert settings.host == "127.0.0.1" and settings.is_loopback  # default


def test_explicit_settings_file_and_flag_override(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("listen_port: 9001\n")
    values, settings_path = flags("--settings", str(path), "--listen-port", "9002")
    settings, _ = build_settings(values, settings_path)
    assert settings.listen_port == 9002


@pytest.mark.parametrize(
    "content",
    ["listen_port: [1, 2", "- a list\n- at top level\n", "just a scalar", "!!python/object/apply:os.system ['id']",
     "unknown_key: 1\n", "listen_port: 99999\n", "a: &a [*a, *a]\n"],
)
def test_broken_settings_file_is_reported_and_defaults_used(tmp_path, content):
    (tmp_path / "settings.yaml").write_text(content)
    values, _ = flags("--user-data-dir", str(tmp_path))
    settings, warnings = build_settings(values)
    assert len(warnings) == 1 and "settings" in warnings[0]
    assert settings.listen_port == 7860


def test_code_execution_switches_are_ignored_in_settings_file(tmp_path):
    (tmp_path / "settings.yaml").write_text("trust_remote_code: true\nallow_pickle: true\n")
    settings, warnings = build_settings(flags("--user-data-dir", str(tmp_path))[0])
    assert not settings.trust_remote_code and not settings.allow_pickle
    assert len(warnings) == 2
    settings, _ = build_settings(flags("--user-data-dir", str(tmp_path), "--trust-remote-code")[0])
    assert settings.trust_remote_code


def test_bad_flag_values_are_refused_with_the_field_named(tmp_path):
    with pytest.raises(SettingsError, match="listen_port"):
        build_settings(flags("--user-data-dir", str(tmp_path), "--listen-port", "0")[0])
    with pytest.raises(SettingsError, match="model"):
        build_settings(flags("--user-data-dir", str(tmp_path), "--model", "../etc")[0])
    with pytest.raises(SettingsError, match="gradio_auth"):
        build_settings(flags("--user-data-dir", str(tmp_path), "--gradio-auth", "nopassword")[0])


def test_listening_beyond_loopback_without_auth_refuses_to_start(tmp_path, capsys):
    assert main(["--user-data-dir", str(tmp_path), "--listen"]) == 2
    assert "--gradio-auth" in capsys.readouterr().err


def test_bundled_presets_are_valid_and_delta_only():
    library = PresetLibrary(PROJECT_ROOT / "presets", Path("/nonexistent"))
    assert {"min_p", "Top-P", "Deterministic", "Creative"} <= set(library.names())
    for name in library.names():
        params = library.load(name)
        assert isinstance(params, SamplingParams)
        assert preset_delta(params)  # each preset changes something


def test_user_preset_overrides_bundled_and_broken_one_is_reported(tmp_path):
    (tmp_path / "min_p.yaml").write_text("min_p: 0.2\n")
    (tmp_path / "broken.yaml").write_text("temperature: hot\n")
    library = PresetLibrary(PROJECT_ROOT / "presets", tmp_path)
    assert library.load("min_p").min_p == 0.2
    with pytest.raises(ParamsError, match="broken.*temperature"):
        library.load("broken")


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_preset_names_refused(name):
    library = PresetLibrary(PROJECT_ROOT / "presets", Path("/nonexistent"))
    with pytest.raises(NameRefused):
        library.load(name)


@pytest.mark.parametrize(
    ("values", "field"),
    [({"temperature": float("nan")}, "temperature"), ({"temperature": 1e9}, "temperature"),
     ({"temperature": -1}, "temperature"), ({"top_p": 2}, "top_p"), ({"top_k": -5}, "top_k"),
     ({"max_new_tokens": 10**9}, "max_new_tokens"), ({"temperature": "0.7"}, "temperature"),
     ({"bogus": 1}, "bogus"), ({"stop": "x"}, "stop"), ({"stop": [1]}, "stop"),
     ({"seed": 2**40}, "seed"), ({"min_p": float("inf")}, "min_p")],
)
def test_bad_sampling_values_refused_with_field_named(values, field):
    with pytest.raises(ParamsError, match=field):
        make_params(values)


def test_pick_only_returns_listed_entries(tmp_path):
    (tmp_path / "ok.yaml").write_text("x")
    (tmp_path / ".hidden.yaml").write_text("x")
    (tmp_path / "script.py").write_text("x")
    listing = list_entries(tmp_path, suffixes=(".yaml",))
    assert list(listing) == ["ok"]
    assert pick("ok", listing, "preset") == tmp_path / "ok.yaml"
    for name in HOSTILE_NAMES + ["script", "hidden"]:
        with pytest.raises(NameRefused):
            pick(name, listing, "preset")


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "chat.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new" * 1000)
    assert target.read_text() == "new" * 1000
    assert os.listdir(target.parent) == ["chat.json"]


def test_failed_atomic_write_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "chat.json"
    atomic_write_text(target, "precious")

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        atomic_write_text(target, "half")
    assert target.read_text() == "precious"
    assert os.listdir(tmp_path) == ["chat.json"]


def test_auth_from_flag_and_file(tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("alice:secret1\nbob:secret2, carol:secret3\n")
    values, _ = flags("--user-data-dir", str(tmp_path), "--gradio-auth", "dave:pw", "--gradio-auth-path", str(users))
    settings, _ = build_settings(values)
    assert settings.auth_pairs() == [("dave", "pw"), ("alice", "secret1"), ("bob", "secret2"), ("carol", "secret3")]
    assert settings.has_auth


def test_unreadable_auth_file_refuses_to_start(tmp_path, capsys):
    (tmp_path / "bad.txt").write_text("no-colon-here\n")
    assert main(["--user-data-dir", str(tmp_path), "--gradio-auth-path", str(tmp_path / "bad.txt")]) == 2
    assert main(["--user-data-dir", str(tmp_path), "--gradio-auth-path", str(tmp_path / "missing.txt")]) == 2
    assert "error" in capsys.readouterr().err
