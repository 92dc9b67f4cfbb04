"""Owns the loaded model: load, unload and swap, one at a time.

One lock guards the model.  The engine holds it while any request runs, and a swap
waits for it, so a model is never swapped under a running stream (docs/LOADERS.md).
A swap loads the new model first, while the old one keeps serving, and only then drops
the old one: if the load fails, the previous model keeps serving.  The price is briefly
holding both in memory; a memory-tight "unload first" mode belongs with the Model-tab
options.

Whoever computes on the model off the engine's model thread (a load, a LoRA change, a
lent job) gives its thread's OpenMP pool back when it is done; the model thread gives
its own back when it goes idle (webui/openmp.py says why).
"""

from __future__ import annotations

import logging
import threading
import time
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
from webui.openmp import pool_released_after, release_thread_pool
from webui.paths import is_plain_name, list_entries, pick
from webui.settings import describe_validation_error

log = logging.getLogger(__name__)

# How often a request waiting for the model looks whether a lend has begun.
LEND_POLL_SECONDS = 0.05


class ModelBusy(ServerError, RuntimeError):
    """The model is in use for longer than the caller was willing to wait."""

    status, code = 503, "server_busy"


class NoModelLoaded(ServerError, RuntimeError):
    status, code = 503, "model_not_loaded"


class ModelLent(ModelBusy):
    """The model is lent out for a long job (training, an evaluation): it does not serve
    until the job ends.  Refused at once rather than queued: a job may run for hours."""


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
        self._lent_for: str | None = None  # what the model is lent out for (see lend)

    def swap_waiting(self) -> bool:
        """True while a load, unload or LoRA change waits for the running requests to end."""
        return self._swaps_waiting > 0

    @property
    def lent_for(self) -> str | None:
        """What the model is lent out for ("training my-lora"), or None while it serves."""
        return self._lent_for

    def _refuse_if_lent(self) -> None:
        lent = self._lent_for
        if lent is not None:
            raise ModelLent(f"{lent} is in progress: the model does not serve until it ends")

    def _acquire_for_swap(self, timeout: float | None) -> None:
        self._refuse_if_lent()
        self._acquire_ahead_of_requests(timeout)

    def _acquire_ahead_of_requests(self, timeout: float | None) -> None:
        """Take the model lock, counted as waiting so that no new request is admitted meanwhile."""
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
        """Hold the model for one request; raise ModelBusy after `timeout` seconds, and
        ModelLent at once while the model is lent out (see lend)."""
        self._take(timeout)
        with self._holding() as loaded:
            yield loaded

    @contextmanager
    def _holding(self) -> Iterator[LoadedModel]:
        """With the model lock just taken: the current model, and the lock released after."""
        try:
            if self._current is None:
                raise NoModelLoaded("no model is loaded; pick one in the Model tab")
            yield self._current
        finally:
            self._lock.release()

    def _take(self, timeout: float | None) -> None:
        """Acquire the model lock for a request, giving up as soon as a lend begins: a
        request must not sit blocked behind a training run that lasts hours."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._refuse_if_lent()
            left = None if deadline is None else deadline - time.monotonic()
            wait = LEND_POLL_SECONDS if left is None else max(0.0, min(LEND_POLL_SECONDS, left))
            if self._lock.acquire(timeout=wait) if wait > 0 else self._lock.acquire(blocking=False):
                break
            if left is not None and left <= wait:
                raise ModelBusy("the model is busy with another request")
        if self._lent_for is not None:  # a lend began while we waited: it goes first
            self._lock.release()
            self._refuse_if_lent()

    @contextmanager
    def lend(self, purpose: str, timeout: float | None = None) -> Iterator[LoadedModel]:
        """Hold the loaded model for a long job (`purpose`: "training NAME").

        Running requests finish first (new ones are not admitted meanwhile); from then
        until the job ends every request, load, unload and LoRA change is refused with
        ModelLent naming `purpose`.  The job gets the model back exactly as it must give
        it back: loaded, serving the same weights.
        """
        with self._count_lock:
            if self._lent_for is not None:
                raise ModelLent(f"{self._lent_for} is already in progress")
            self._lent_for = purpose
        try:
            self._acquire_ahead_of_requests(timeout)
            with self._holding() as loaded, pool_released_after():
                yield loaded
        finally:
            self._lent_for = None

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
        self._refuse_if_lent()  # before reading gigabytes that could not be swapped in
        folder = pick(name, self.available(), "model")
        loader = self.registry.for_folder(folder)
        options = self.options_for({**(overrides or {}), **({"dtype": dtype} if dtype else {})}, loader)
        with self._load_lock, pool_released_after():
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
            release_thread_pool()

    def unload(self, timeout: float | None = None) -> None:
        self._acquire_for_swap(timeout)
        try:
            previous, self._current = self._current, None
            if previous is not None:
                self.registry.get(previous.loader).unload(previous)
        finally:
            self._lock.release()


__all__ = ["ModelManager", "ModelBusy", "ModelLent", "NoModelLoaded", "LoadError"]
