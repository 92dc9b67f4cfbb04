"""Which loader handles which model folder."""

from __future__ import annotations

from pathlib import Path

from webui.generation.backend import ServingOptions
from webui.loaders.base import Loader, LoadError


class LoaderRegistry:
    """Loaders in priority order; the first that can read a folder loads it."""

    def __init__(self, loaders: list[Loader] | None = None):
        self._loaders: list[Loader] = list(loaders or [])

    def register(self, loader: Loader) -> None:
        if any(existing.name == loader.name for existing in self._loaders):
            raise ValueError(f"a loader named {loader.name!r} is already registered")
        self._loaders.append(loader)

    def names(self) -> list[str]:
        return [loader.name for loader in self._loaders]

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
        raise LoadError(f"{folder.name}: no loader recognises this folder (no config.json?)")


def default_registry(serving: ServingOptions | None = None) -> LoaderRegistry:
    from webui.loaders.hf_transformers import TransformersLoader

    return LoaderRegistry([TransformersLoader(serving)])
