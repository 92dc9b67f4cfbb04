"""Training control vectors and checking what they cost, for the Steer tab.

Both borrow the model (ModelManager.lend), as LoRA training does: running requests
finish first, new ones are refused with "training control vector NAME is in progress"
until it ends.  Training runs on a thread of its own (one at a time), reports a step
per prompt and stops at the next prompt when asked; the file is written only when
every prompt has been read.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from webui.generation.params import ParamsError, VectorUse
from webui.loaders.base import LoadError
from webui.model_manager import ModelLent, ModelManager, NoModelLoaded
from webui.paths import NameRefused, new_entry
from webui.steer import cvec_file
from webui.steer.cvec_file import VectorFileError
from webui.steer.hooks import row_additions, steer_shape, steered
from webui.steer.library import SUFFIX, VectorLibrary
from webui.steer.train import Pairs, SteerTrainingError, Stopped, train_vector
from webui.training.datasets import read_text
from webui.training.perplexity import perplexity
from webui.training.progress import BackgroundJob, Progress, Snapshot
from webui.training.service import SAMPLE_FILE

log = logging.getLogger(__name__)

CHECK_TOKENS = 1024  # of the sample text the perplexity check reads (twice)


@dataclass(frozen=True)
class Check:
    """Perplexity of one text with and without a vector."""

    vector: str
    strength: float
    tokens: int
    plain: float
    steered: float

    def line(self) -> str:
        change = (self.steered / self.plain - 1) * 100
        return (f"perplexity on {self.tokens} tokens of the sample text: **{self.plain:.3f}** unsteered, "
                f"**{self.steered:.3f}** with {self.vector} at {self.strength:g} ({change:+.1f}%)")


class SteerService(BackgroundJob):
    def __init__(self, models: ModelManager, library: VectorLibrary):
        self.models = models
        self.library = library
        self._lock = threading.Lock()
        self._progress = Progress()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def folder(self) -> Path:
        return self.library.folder

    def _steerable(self):
        loaded = self.models.current
        if loaded is None:
            raise NoModelLoaded("no model is loaded: load one in the Model tab")
        if loaded.loader != "transformers" or steer_shape(loaded.model) is None:
            raise SteerTrainingError(f"control vectors are trained and checked on a model loaded with the "
                                     f"Transformers loader; {loaded.name} is loaded with {loaded.loader} (the "
                                     "vector files it makes steer GGUF models too)")
        return loaded

    # -- training ------------------------------------------------------------------------
    def start(self, name: object, pairs: Pairs) -> Snapshot:
        """Check, then train on a thread of its own; returns at once."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise ModelLent(f"training control vector {self._progress.name} is already in progress")
            path = new_entry(self.folder, name, SUFFIX, "control vector")
            pairs.check()
            model = self._steerable().name
            self._stop.clear()
            self._progress = Progress(name=str(name))
            self._progress.set_state("preparing", "waiting for running requests to finish")
            self._thread = threading.Thread(target=self._run, args=(path, pairs, model, self._progress),
                                            name="steer-training", daemon=True)
            self._thread.start()
            return self._progress.snapshot()

    def stop(self) -> str:
        return self._request_stop("No control vector is being trained.", "Stopping after this prompt; nothing is saved.")

    def _run(self, path: Path, pairs: Pairs, model: str, progress: Progress) -> None:
        try:
            with self.models.lend(f"training control vector {progress.name}") as loaded:
                if loaded.name != model:
                    raise SteerTrainingError(f"the model changed to {loaded.name} before training began")
                if loaded.backend is not None:
                    loaded.backend.clear_cache()
                progress.begin(0, len(pairs.prompts), [])
                vector = train_vector(loaded.model, loaded.tokenizer, pairs, model_hint=_hint(loaded),
                                      on_prompt=lambda done, total: progress.step(done), stop=self._stop)
            progress.set_state("saving")
            self.folder.mkdir(parents=True, exist_ok=True)
            cvec_file.write(path, vector)
            progress.set_state("done", f"saved to user_data/control-vectors/{path.name} "
                                       f"({len(vector.directions)} layers)")
        except Stopped:
            progress.set_state("stopped", "stopped: nothing saved")
        except (SteerTrainingError, NameRefused, LoadError, ModelLent, NoModelLoaded) as exc:
            progress.set_state("failed", str(exc))
        except Exception as exc:  # the thread must end with a message, never silently
            log.exception("training control vector %s failed", progress.name)
            progress.set_state("failed", f"{exc.__class__.__name__}: {exc}")

    # -- the perplexity check --------------------------------------------------------------
    def check(self, name: object, strength: float, layers: tuple[int, int] | None = None) -> Check:
        """Perplexity of the sample text unsteered and steered by `name` at `strength`."""
        try:
            use = VectorUse(name=name, strength=float(strength), layers=layers)
        except ValueError as exc:
            raise ParamsError(f"control_vectors: {exc}", param="control_vectors") from None
        self._steerable()
        text = read_text(SAMPLE_FILE)
        with self.models.lend("control vector perplexity check") as loaded:
            steering = self.library.resolve((use,), steer_shape(loaded.model))
            ids = loaded.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"][:CHECK_TOKENS]
            context = min(loaded.context_length, len(ids))
            with torch.inference_mode():
                plain, tokens = perplexity(loaded.model, ids, context, context, loaded.device)
                additions = row_additions([steering], loaded.device, loaded.model.dtype) if steering else {}
                with steered(loaded.model, additions):
                    value, _ = perplexity(loaded.model, ids, context, context, loaded.device)
        return Check(str(name), float(strength), tokens, plain, value)

    def describe(self, name: object) -> str:
        """One line about a vector file: its layers, width and the model it was made for."""
        try:
            vector = self.library.load(name)
        except (NameRefused, VectorFileError) as exc:
            return f"**{name}**: {exc}"
        layers = vector.layers
        return (f"**{name}**: layers {layers[0]}–{layers[-1]} ({len(layers)}), {vector.width} values each"
                + (f", made for {vector.model_hint}" if vector.model_hint else ""))


def _hint(loaded) -> str:
    """The model's architecture, as llama.cpp names it in a GGUF file (general.architecture)."""
    return str(getattr(loaded.model.config, "model_type", "") or "")
