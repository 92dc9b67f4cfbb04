"""Per-model settings: loader options, chat template and context length, remembered
for each model in user_data/model_settings.yaml and applied when it is loaded again.

Only the user-settable loader options can be stored (never trust_remote_code or
pickle: docs/SECURITY.md); a broken file is reported and ignored, never fatal; writes are
atomic and rewrite one model's entry at a time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator

from webui.loaders.catalog import BUILTIN_SCHEMAS
from webui.loaders.options import flat_model, merged_specs
from webui.paths import is_plain_name
from webui.settings import SettingsError, describe_validation_error, read_yaml_mapping
from webui.storage import atomic_write_text

log = logging.getLogger(__name__)

FILE_NAME = "model_settings.yaml"


# The loader options a model may remember (scope "model" in the schemas), each
# `T | None`: None means "as the command line / settings.yaml say".  The admin API's
# load body (webui/api/openai_api.py) is this model plus the model name.
ModelLoaderFields = flat_model("ModelLoaderFields", BUILTIN_SCHEMAS, scopes=("model",), optional=True,
                               config=ConfigDict(extra="forbid", frozen=True))
MUTUALLY_EXCLUSIVE = tuple(
    (spec.name, spec.excludes) for spec in merged_specs(BUILTIN_SCHEMAS) if spec.scope == "model" and spec.excludes
)


class ModelSettings(ModelLoaderFields):
    """What one model remembers: its loader options, plus two things beyond the loader."""

    # A shorter context than the model's maximum, and a chat template from
    # user_data/instruction-templates/ in place of the model's own.
    context_length: int | None = Field(None, ge=16, le=1 << 24)
    chat_template: str | None = None

    @field_validator("chat_template")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        if value is not None and not is_plain_name(value):
            raise ValueError("must be the name of a template in user_data/instruction-templates")
        return value

    def load_overrides(self) -> dict[str, Any]:
        """The loader options this entry sets."""
        return {k: getattr(self, k) for k in ModelLoaderFields.model_fields if getattr(self, k) is not None}

    def merged(self, other: ModelSettings) -> ModelSettings:
        """self, with every value `other` sets replacing it.  Turning on a switch that
        excludes another (8-bit and 4-bit, say) turns a saved other one off."""
        values = {**self.model_dump(), **other.model_dump(exclude_none=True)}
        for name, excluded in MUTUALLY_EXCLUSIVE:
            if getattr(other, name) and getattr(other, excluded) is None:
                values[excluded] = False
        return ModelSettings(**values)


class ModelSettingsStore:
    def __init__(self, user_data_dir: Path):
        self.path = user_data_dir / FILE_NAME

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        return read_yaml_mapping(self.path)

    def get(self, name: str) -> ModelSettings:
        """The saved entry for `name`; an unreadable file or entry gives the empty entry."""
        try:
            entry = self._read().get(name)
        except SettingsError as exc:
            log.warning("per-model settings ignored: %s", exc)
            return ModelSettings()
        if not isinstance(entry, dict):
            return ModelSettings()
        try:
            entry = migrated(entry)
            return ModelSettings(**entry)
        except ValidationError as exc:
            log.warning("saved settings for %s ignored: %s", name, describe_validation_error(exc))
            return ModelSettings()

    def save(self, name: str, settings: ModelSettings) -> str | None:
        """Store `settings` as the entry for `name`; returns a warning if it could not."""
        if not is_plain_name(name):
            return "settings not saved: invalid model name"
        try:
            data = self._read()
        except SettingsError as exc:
            return f"settings not saved: {exc}"  # never overwrite a file we cannot parse
        # mode="json": tuples as lists, so safe_dump writes plain YAML.
        data[name] = settings.model_dump(mode="json", exclude_none=True)
        try:
            atomic_write_text(self.path, yaml.safe_dump(data, sort_keys=True, allow_unicode=True))
        except OSError as exc:
            return f"settings not saved: {exc.strerror or exc}"
        return None


def migrated(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry saved by an older version, in today's keys.  Before the options schema,
    the --cpu switch was saved as `device: cpu` (or auto, or cuda: now "not the CPU")."""
    if entry.get("device") in ("auto", "cpu", "cuda") and "cpu" not in entry:
        return {**{k: v for k, v in entry.items() if k != "device"}, "cpu": entry["device"] == "cpu"}
    return entry
