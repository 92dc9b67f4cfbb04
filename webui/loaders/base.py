"""The contract between the model manager and loader backends."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from webui.settings import Dtype

Device = Literal["auto", "cpu", "cuda"]


class LoadError(RuntimeError):
    """A model that cannot be loaded, with a message fit to show the user."""


@dataclass(frozen=True)
class LoadOptions:
    dtype: Dtype = "auto"
    device: Device = "auto"
    # Both switches come from the command line only; requests can never set them.
    allow_pickle: bool = False
    trust_remote_code: bool = False


@dataclass
class LoadedModel:
    """A model ready to generate: what the engine needs, nothing UI-specific."""

    name: str
    folder: Path
    loader: str
    model: Any  # a transformers PreTrainedModel (or another backend's object)
    tokenizer: Any
    device: str
    dtype: str
    context_length: int
    parameters: int

    def describe(self) -> str:
        return (
            f"{self.name} ({self.loader}, {self.parameters / 1e6:.1f}M parameters, "
            f"{self.dtype} on {self.device}, context {self.context_length})"
        )


class Loader(Protocol):
    name: str

    def can_load(self, folder: Path) -> bool:
        """Cheap check: does this folder look like something this loader reads?"""

    def load(self, name: str, folder: Path, options: LoadOptions) -> LoadedModel:
        """Load or raise LoadError; must not leave half-loaded state behind."""

    def unload(self, loaded: LoadedModel) -> None:
        """Release the model's memory (device caches included)."""
