"""Sampling parameters (one typed model with ranges) and preset files.

The same SamplingParams validates values from the UI, preset files and (later) the
API, so a bad value is refused with its field named before the model is called
(HOSTILE.md 14).  Preset files are delta-only YAML: they hold just what differs from
the neutral values below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from webui.paths import list_entries, pick
from webui.settings import SettingsError, read_yaml_mapping

MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 200
MAX_SEED = 2**32 - 1


class SamplingParams(BaseModel):
    """Generation settings; the defaults are neutral (they change nothing)."""

    # strict: "0.7" is not a number here; allow_inf_nan: NaN/inf are refused.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    max_new_tokens: int = Field(512, ge=1, le=32768, description="Most tokens to generate.")
    temperature: float = Field(
        1.0, ge=0.0, le=5.0, description="Randomness; 0 picks the likeliest token (greedy)."
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Keep the smallest set of tokens whose probabilities add up to this.")
    top_k: int = Field(0, ge=0, le=100_000, description="Keep only the k likeliest tokens; 0 = off.")
    min_p: float = Field(0.0, ge=0.0, le=1.0, description="Drop tokens less likely than this fraction of the top token.")
    repetition_penalty: float = Field(
        1.0, ge=1.0, le=3.0, description="Penalise tokens already in the context; 1 = off."
    )
    seed: int = Field(-1, ge=-1, le=MAX_SEED, description="-1 = a new random seed each time.")
    stop: tuple[str, ...] = Field((), description="Strings that end the reply (not shown).")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_strings(cls, value: Any) -> Any:
        # Stop strings are plain text, never evaluated (HOSTILE.md 5).
        if isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, tuple) or not all(isinstance(s, str) for s in value):
            raise ValueError("must be a list of strings")
        if len(value) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings")
        if any(not s or len(s) > MAX_STOP_LENGTH for s in value):
            raise ValueError(f"each stop string must have 1 to {MAX_STOP_LENGTH} characters")
        return value

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class ParamsError(ValueError):
    """Sampling values that were refused; the message names each bad field."""


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "value"
        parts.append(f"{field}: {err['msg']}")
    return "; ".join(parts)


def make_params(values: dict[str, Any], base: SamplingParams | None = None) -> SamplingParams:
    """Validate `values` on top of `base` (neutral by default); raise ParamsError."""
    merged = {**(base or SamplingParams()).model_dump(), **values}
    try:
        return SamplingParams(**merged)
    except ValidationError as exc:
        raise ParamsError(describe_validation_error(exc)) from exc
    except TypeError as exc:  # e.g. a non-string key
        raise ParamsError(str(exc)) from exc


def preset_delta(params: SamplingParams) -> dict[str, Any]:
    """What differs from neutral: the content of a delta-only preset file."""
    neutral = SamplingParams()
    return {
        key: (list(value) if isinstance(value, tuple) else value)
        for key, value in params.model_dump().items()
        if value != getattr(neutral, key)
    }


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
