"""Owns the loaded model: load, unload and swap, one at a time.

One lock guards the model.  The engine holds it while any request runs, and a swap
waits for it, so a model is never swapped under a running stream (docs/LOADERS.md).
A swap loads the new model first, while the old one keeps serving, and only then drops
the old one: if the load fails, the previous model keeps serving.  The price is briefly
holding both in memory; a memory-tight "unload first" mode belongs with the Model-tab
options.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from webui import loras
from webui.errors import ServerError
from webui.loaders.base import LoadedModel, Loader, LoadError
from webui.loaders.hf_options import Dtype
from webui.loaders.registry import LoaderRegistry
from webui.paths import is_plain_name, list_entries, pick
from webui.settings import describe_validation_error

log = logging.getLogger(__name__)


class ModelBusy(ServerError, RuntimeError):
    """The model is in use for longer than the caller was willing to wait."""

    status, code = 503, "server_busy"


class NoModelLoaded(ServerError, RuntimeError):
    status, code = 503, "model_not_loaded"


class ModelManager:
    def __init__(self, model_dir: Path, registry: LoaderRegistry, options: BaseModel,
                 lora_dir: Path | None = None):
        """`options`: the start-up loader option values, by name (from the command line
        and settings.yaml: runtime.load_options, or one loader's own options)."""
        self.model_dir = model_dir
        self.lora_dir = lora_dir
        self.registry = registry
        self.options = options
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._load_lock = threading.Lock()  # one load at a time (each may hold a whole model)
        self._current: LoadedModel | None = None
        self._swaps_waiting = 0  # loads/unloads waiting for the model; the engine admits no more

    def swap_waiting(self) -> bool:
        """True while a load, unload or LoRA change waits for the running requests to end."""
        return self._swaps_waiting > 0

    def _acquire_for_swap(self, timeout: float | None) -> None:
        with self._count_lock:
            self._swaps_waiting += 1
        try:
            if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
                raise ModelBusy("a request is generating; try again when it ends")
        finally:
            with self._count_lock:
                self._swaps_waiting -= 1

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def available(self) -> dict[str, Path]:
        """Model folders and files (a .gguf, by its file name) a loader recognises: the
        listing every request is checked against."""
        entries = list_entries(self.model_dir, dirs=True)
        if self.model_dir.is_dir():
            entries.update({p.name: p for p in sorted(self.model_dir.iterdir())
                            if p.is_file() and p.suffix == ".gguf" and is_plain_name(p.name)})
        return {name: path for name, path in entries.items() if self.registry.recognises(path)}

    def names(self) -> list[str]:
        return sorted(self.available(), key=str.lower)

    @contextmanager
    def use(self, timeout: float | None = None) -> Iterator[LoadedModel]:
        """Hold the model for one request; raise ModelBusy after `timeout` seconds."""
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            raise ModelBusy("the model is busy with another request")
        try:
            if self._current is None:
                raise NoModelLoaded("no model is loaded; pick one in the Model tab")
            yield self._current
        finally:
            self._lock.release()

    def options_for(self, overrides: Mapping[str, Any] | None = None, loader: Loader | None = None) -> Any:
        """`loader`'s options (by default the first registered loader's): the start-up
        values of its schema's options, with `overrides` applied.

        Only options a user may set per model can be overridden; anything else (the
        code-execution switches, a server folder, an unknown key) is refused.  Another
        loader's per-model options are left out: the Model tab sends all it shows.
        """
        loader = loader or self.registry.get(self.registry.names()[0])
        schema = loader.options_schema
        overrides = dict(overrides or {})
        settable = frozenset().union(*(s.settable() for s in self.registry.schemas().values()))
        refused = sorted(set(overrides) - settable)
        if refused:
            raise LoadError(f"these load options cannot be set here: {', '.join(refused)}")
        own = {name: value for name, value in overrides.items() if name in schema.settable()}
        startup = {name: getattr(self.options, name) for name in schema.model_fields if hasattr(self.options, name)}
        try:
            return schema(**{**startup, **own})
        except ValidationError as exc:
            raise LoadError(f"invalid load options: {describe_validation_error(exc)}") from exc

    def load(
        self,
        name: object,
        dtype: Dtype | None = None,
        timeout: float | None = None,
        overrides: Mapping[str, Any] | None = None,
        adjust: Callable[[LoadedModel], None] | None = None,
    ) -> LoadedModel:
        """Load the listed model `name`; on failure the current model stays loaded.

        The new model is read while the current one keeps serving (loads are serialised
        among themselves, not against generation); only the swap itself waits for the
        running requests to finish.  `adjust` runs on the new model before it is swapped
        in, so no request ever sees it half-configured.
        """
        folder = pick(name, self.available(), "model")
        loader = self.registry.for_folder(folder)
        options = self.options_for({**(overrides or {}), **({"dtype": dtype} if dtype else {})}, loader)
        with self._load_lock:
            loaded = loader.load(folder.name, folder, options)
            try:
                if adjust is not None:
                    adjust(loaded)
                self._acquire_for_swap(timeout)
            except BaseException:
                loader.unload(loaded)
                raise
            try:
                previous, self._current = self._current, loaded
                if previous is not None:
                    self.registry.get(previous.loader).unload(previous)
                log.info("loaded %s", loaded.describe())
                return loaded
            finally:
                self._lock.release()

    def loras(self) -> list[str]:
        """LoRA adapters in the LoRA folder: the listing every request is checked against."""
        return sorted(loras.available(self.lora_dir), key=str.lower) if self.lora_dir else []

    def set_loras(self, names: Sequence[object], timeout: float | None = None) -> LoadedModel:
        """Apply exactly these listed adapters (none: remove all) to the loaded model."""
        listing = loras.available(self.lora_dir) if self.lora_dir else {}
        chosen = {}
        for name in names:
            chosen[name] = pick(name, listing, "LoRA")
        self._acquire_for_swap(timeout)
        try:
            if self._current is None:
                raise NoModelLoaded("no model is loaded; load one before applying a LoRA")
            if self._current.loader != "transformers" and (chosen or self._current.loras):
                raise LoadError(f"LoRA adapters apply to Transformers models; {self._current.name} is "
                                f"loaded with {self._current.loader}")
            loras.apply(self._current, chosen, allow_pickle=self.options.allow_pickle)
            log.info("LoRA now: %s", ", ".join(self._current.loras) or "none")
            return self._current
        finally:
            self._lock.release()

    def unload(self, timeout: float | None = None) -> None:
        self._acquire_for_swap(timeout)
        try:
            previous, self._current = self._current, None
            if previous is not None:
                self.registry.get(previous.loader).unload(previous)
        finally:
            self._lock.release()


__all__ = ["ModelManager", "ModelBusy", "NoModelLoaded", "LoadError"]
