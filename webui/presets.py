"""Preset files: delta-only YAML holding just what differs from neutral SamplingParams
(webui/generation/params.py), bundled in presets/ and the user's own in user_data/presets/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from webui.paths import list_entries, new_entry, pick
from webui.generation.params import ParamsError, SamplingParams, make_params, plain_values
from webui.settings import SettingsError, read_yaml_mapping
from webui.storage import atomic_write_text

def preset_delta(params: SamplingParams) -> dict[str, Any]:
    """What differs from neutral: the content of a delta-only preset file."""
    neutral = plain_values(SamplingParams())
    return {key: value for key, value in plain_values(params).items() if value != neutral[key]}


class PresetLibrary:
    """Bundled presets plus the user's own (the user's win on a name clash)."""

    def __init__(self, bundled_dir: Path, user_dir: Path):
        self.bundled_dir = bundled_dir
        self.user_dir = user_dir

    def listing(self) -> dict[str, Path]:
        return {
            **list_entries(self.bundled_dir, suffixes=(".yaml",)),
            **list_entries(self.user_dir, suffixes=(".yaml",)),
        }

    def names(self) -> list[str]:
        return sorted(self.listing(), key=str.lower)

    def load(self, name: object) -> SamplingParams:
        """Load a preset by listed name; a broken file raises ParamsError naming it."""
        path = pick(name, self.listing(), "preset")
        try:
            delta = read_yaml_mapping(path)
        except SettingsError as exc:
            raise ParamsError(f"preset {path.stem} is invalid: {exc}") from exc
        try:
            return make_params(delta)
        except ParamsError as exc:
            raise ParamsError(f"preset {path.stem} is invalid: {exc}") from exc

    def user_names(self) -> list[str]:
        return sorted(list_entries(self.user_dir, suffixes=(".yaml",)), key=str.lower)

    def save(self, name: object, params: SamplingParams) -> Path:
        """Write the user's preset (delta-only YAML) atomically; may shadow a bundled one."""
        path = new_entry(self.user_dir, name, ".yaml", "preset")
        text = yaml.safe_dump(preset_delta(params), sort_keys=False, allow_unicode=True)
        atomic_write_text(path, text)
        return path

    def delete(self, name: object) -> None:
        """Delete one of the user's presets; bundled presets cannot be deleted."""
        path = pick(name, list_entries(self.user_dir, suffixes=(".yaml",)), "user preset")
        path.unlink()


def model_defaults(folder: Path) -> dict[str, Any]:
    """Sampling defaults from a model's generation_config.json, only the keys it sets.

    Values we cannot use (out of range, wrong type) are skipped, never fatal.
    """
    path = folder / "generation_config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    known = ("temperature", "top_p", "top_k", "min_p", "typical_p", "repetition_penalty",
             "max_new_tokens", "do_sample", "no_repeat_ngram_size")
    out = {}
    for key in known:
        if key in data:
            try:
                make_params({key: data[key]})
            except ParamsError:
                continue
            out[key] = data[key]
    return out

