"""Which loader handles which model folder."""

from __future__ import annotations

from pathlib import Path

from webui.generation.backend import ServingOptions
from webui.loaders.base import Loader, LoadError
from webui.loaders.options import LoaderOptions


class LoaderRegistry:
    """Loaders in priority order; the first that can read a folder loads it."""

    def __init__(self, loaders: list[Loader] | None = None):
        self._loaders: list[Loader] = []
        for loader in loaders or []:
            self.register(loader)

    def register(self, loader: Loader) -> None:
        if any(existing.name == loader.name for existing in self._loaders):
            raise ValueError(f"a loader named {loader.name!r} is already registered")
        schema = getattr(loader, "options_schema", None)
        if not (isinstance(schema, type) and issubclass(schema, LoaderOptions)):
            raise ValueError(f"loader {loader.name!r} declares no options_schema (a LoaderOptions subclass)")
        self._loaders.append(loader)

    def names(self) -> list[str]:
        return [loader.name for loader in self._loaders]

    def schemas(self) -> dict[str, type[LoaderOptions]]:
        """Each loader's options schema, by loader name, in priority order."""
        return {loader.name: loader.options_schema for loader in self._loaders}

    def get(self, name: str) -> Loader:
        for loader in self._loaders:
            if loader.name == name:
                return loader
        raise LoadError(f"unknown loader: {name}")

    def recognises(self, folder: Path) -> bool:
        return any(loader.can_load(folder) for loader in self._loaders)

    def for_folder(self, folder: Path) -> Loader:
        for loader in self._loaders:
            if loader.can_load(folder):
                return loader
        raise LoadError(f"{folder.name}: no loader recognises this folder (no config.json or .gguf file?)")


def default_registry(serving: ServingOptions | None = None) -> LoaderRegistry:
    from webui.loaders.gguf_loader import LlamaCppLoader
    from webui.loaders.hf_transformers import TransformersLoader

    # Transformers first: a folder with config.json is a Transformers model even if it
    # also holds .gguf files.  The llama.cpp loader is registered even without
    # llama-cpp-python, so GGUF models are listed and loading one says how to enable it.
    return LoaderRegistry([TransformersLoader(serving), LlamaCppLoader(serving)])
