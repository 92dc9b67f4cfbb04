"""Per-model settings: loader options, chat template and context length, remembered
for each model in user_data/model_settings.yaml and applied when it is loaded again.

Only the user-settable loader options can be stored (never trust_remote_code or
pickle: HOSTILE.md 6); a broken file is reported and ignored, never fatal; writes are
atomic and rewrite one model's entry at a time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from webui.loaders.base import USER_OPTIONS
from webui.paths import is_plain_name
from webui.settings import SettingsError, describe_validation_error, read_yaml_mapping
from webui.storage import atomic_write_text

log = logging.getLogger(__name__)

FILE_NAME = "model_settings.yaml"


class ModelSettings(BaseModel):
    """What one model remembers.  None means "as the command line / settings.yaml say"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: Literal["auto", "bf16", "fp16", "fp32"] | None = None
    device: Literal["auto", "cpu", "cuda"] | None = None
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] | None = None
    load_in_8bit: bool | None = None
    load_in_4bit: bool | None = None
    quant_type: Literal["nf4", "fp4"] | None = None
    use_double_quant: bool | None = None
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] | None = None
    gpu_split: tuple[float, ...] | None = None
    cpu_memory: float | None = Field(None, gt=0, le=1 << 20)
    disk: bool | None = None
    # Beyond the loader: a shorter context than the model's maximum, and a chat
    # template from user_data/instruction-templates/ in place of the model's own.
    context_length: int | None = Field(None, ge=16, le=1 << 24)
    chat_template: str | None = None

    @field_validator("gpu_split")
    @classmethod
    def _positive(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and (len(value) > 64 or any(not (0 < v < 1 << 20) for v in value)):
            raise ValueError("every GPU share must be a positive number of GiB")
        return value

    @field_validator("chat_template")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        if value is not None and not is_plain_name(value):
            raise ValueError("must be the name of a template in user_data/instruction-templates")
        return value

    def load_overrides(self) -> dict[str, Any]:
        """The loader options this entry sets."""
        return {k: v for k, v in self.model_dump().items() if k in USER_OPTIONS and v is not None}

    def merged(self, other: ModelSettings) -> ModelSettings:
        """self, with every value `other` sets replacing it.  Asking for 8-bit turns a
        saved 4-bit off, and the other way round: they cannot both be on."""
        values = {**self.model_dump(), **other.model_dump(exclude_none=True)}
        if other.load_in_8bit and other.load_in_4bit is None:
            values["load_in_4bit"] = False
        if other.load_in_4bit and other.load_in_8bit is None:
            values["load_in_8bit"] = False
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
        if isinstance(entry.get("gpu_split"), list):
            entry = {**entry, "gpu_split": tuple(entry["gpu_split"])}
        try:
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
        entry = settings.model_dump(exclude_none=True)
        if "gpu_split" in entry:
            entry["gpu_split"] = list(entry["gpu_split"])
        data[name] = entry
        try:
            atomic_write_text(self.path, yaml.safe_dump(data, sort_keys=True, allow_unicode=True))
        except OSError as exc:
            return f"settings not saved: {exc.strerror or exc}"
        return None
