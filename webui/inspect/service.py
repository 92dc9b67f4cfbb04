"""Inspections as one job on the loaded model, for the Inspect tab and the API.

The job borrows the model as training does (ModelManager.lend): requests already
running finish first (the job waits for them; none is disturbed), requests that arrive
while it runs are refused with "inspect is in progress" until it ends, and loads and
LoRA changes wait for it.  It is short by construction (one forward pass over at most
MAX_TOKENS tokens) and can be stopped between two layers.  One at a time: a second is
refused while one runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from webui.inspect.lens import Lens, InspectUnsupported, inspect_text
from webui.model_manager import ModelLent, ModelManager, NoModelLoaded

PURPOSE = "an inspection (Inspect tab)"


def refusal(loader: str, name: str) -> str | None:
    """Why a model loaded with `loader` cannot be inspected; None when it can."""
    if loader == "transformers":
        return None
    if loader == "llama.cpp":
        return (f"{name} is a GGUF model run by llama.cpp, which gives back only the last layer's logits, "
                "no per-layer hidden states or attention weights: load a Transformers copy of the model "
                "to inspect it")
    return f"{name} is loaded with {loader}, which gives back no per-layer hidden states to inspect"


def remote_refusal(name: str) -> str:
    return (f"{name} is served by a remote engine, which sends back tokens, not per-layer hidden states or "
            "attention weights: inspect a model loaded here with the Transformers loader")


class InspectService:
    def __init__(self, models: ModelManager):
        self.models = models
        self._stop = threading.Event()
        self._running = threading.Lock()  # one inspection at a time, its Stop its own

    def refused(self) -> str | None:
        """Why the loaded model cannot be inspected now; None when it can."""
        loaded = self.models.current
        if loaded is None:
            return "no model is loaded: load one in the Model tab"
        return refusal(loaded.loader, loaded.name)

    def run(self, text: object, position: object = None,
            on_layer: Callable[[int, int], None] | None = None) -> Lens:
        """Inspect `text` on the loaded model (see webui/inspect/lens.py); blocks until done.
        Raises InspectError (a bad text or position: 400), InspectUnsupported, ModelLent
        (another job has the model), InspectCancelled (stop() was called)."""
        self._check()  # before waiting for running requests to finish
        if not self._running.acquire(blocking=False):
            raise ModelLent(f"{PURPOSE} is already in progress")
        try:
            self._stop.clear()
            with self.models.lend(PURPOSE) as loaded:
                self._check()  # the model may have changed while running requests finished
                return inspect_text(loaded.model, loaded.tokenizer, text, loaded.context_length, position,
                                    cancelled=self._stop.is_set, on_layer=on_layer)
        finally:
            self._running.release()

    def stop(self) -> bool:
        """Ask the running inspection to stop before its next layer; False if none runs."""
        if not self._running.locked():
            return False
        self._stop.set()
        return True

    def _check(self) -> None:
        if self.models.current is None:
            raise NoModelLoaded("no model is loaded: load one in the Model tab")
        reason = self.refused()
        if reason:
            raise InspectUnsupported(reason)
