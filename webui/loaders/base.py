"""The contract between the model manager and loader backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from webui.errors import ServerError

# The Transformers schema keeps its old name: most callers build options for it.
from webui.loaders.hf_options import TransformersOptions as LoadOptions  # noqa: F401
from webui.loaders.options import LoaderOptions


class LoadError(ServerError, RuntimeError):
    """A model that cannot be loaded, with a message fit to show the user."""

    code = "load_failed"


class ModelRefused(LoadError):
    """Refused before loading (broken files, a size no machine here can hold): the
    request's fault, so the API answers 400, and nothing was built."""

    status, code, kind = 400, "model_refused", "invalid_request_error"


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
    options: LoaderOptions = field(default_factory=LoaderOptions)  # the loader's own schema
    # Names of the LoRA adapters currently applied, in order.
    loras: tuple[str, ...] = ()
    # What the engine drives (webui/generation/backend.py); set by the loader.
    backend: Any = None
    # A vision model's processor (images -> tokens and pixels); None for text-only models.
    processor: Any = None

    def describe(self) -> str:
        notable = self.options.summary()
        quant = f" {notable}" if notable else ""
        loras = f", LoRA {' + '.join(self.loras)}" if self.loras else ""
        serving = ""
        if self.backend is not None:
            caps = self.backend.capabilities
            serving = f", batches up to {caps.max_batch}" if caps.max_batch > 1 else ", one request at a time"
            serving += ", prefix cache" if caps.prefix_cache else ""
            serving += ", reads images" if getattr(caps, "vision", False) else ""
        return (
            f"{self.name} ({self.loader}, {self.parameters / 1e6:.1f}M parameters, "
            f"{self.dtype}{quant} on {self.device}, context {self.context_length}{loras}{serving})"
        )


class Loader(Protocol):
    name: str
    # The loader's options schema (webui/loaders/options.py): what `load` receives an
    # instance of, and what the flags, settings, per-model settings, API and Model tab offer.
    options_schema: type[LoaderOptions]

    def can_load(self, folder: Path) -> bool:
        """Cheap check: does this folder look like something this loader reads?"""

    def load(self, name: str, folder: Path, options: Any) -> LoadedModel:
        """Load or raise LoadError; must not leave half-loaded state behind.  `options` is
        an instance of `options_schema`, already validated."""

    def unload(self, loaded: LoadedModel) -> None:
        """Release the model's memory (device caches included)."""
