"""user_data/control-vectors/NAME.gguf, and a request's vectors made into one addition
per layer for the loaded model.

A request names vectors with strengths (SamplingParams.control_vectors); `resolve`
checks each file against the model (its width against the hidden size, its layers
against the layer count: a vector made for another model is refused by name, never
cut to fit) and sums strength x direction per layer into a `Steering`.  Strength 0
drops a vector; nothing left is None, and a request with None is not steered at all.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from webui.generation.params import ParamsError, VectorUse
from webui.paths import NameRefused, list_entries, pick
from webui.steer.cvec_file import ControlVector, VectorFileError, read

SUFFIX = ".gguf"
FIELD = "control_vectors"


def steer_key(uses: tuple[VectorUse, ...]) -> tuple:
    """What a request's steering is made of; () when it is not steered (every strength 0)."""
    return tuple((use.name, use.strength, use.layers) for use in uses if use.strength != 0.0)


@dataclass(frozen=True, eq=False)
class Steering:
    """One request's addition: llama.cpp layer number -> f32 [hidden] (webui/steer/cvec_file.py)."""

    key: tuple
    hidden: int
    layers: dict[int, np.ndarray]

    def flat(self, n_layers: int) -> np.ndarray:
        """llama_set_adapter_cvec's buffer: n_embd values per layer from layer 1 on."""
        data = np.zeros(((n_layers - 1) * self.hidden,), dtype=np.float32)
        for layer, values in self.layers.items():
            data[(layer - 1) * self.hidden : layer * self.hidden] = values
        return data


class VectorLibrary:
    def __init__(self, folder: Path):
        self.folder = folder
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[tuple[int, int], ControlVector]] = {}

    def names(self) -> list[str]:
        return sorted(list_entries(self.folder, suffixes=(SUFFIX,)))

    def path(self, name: object) -> Path:
        return pick(name, list_entries(self.folder, suffixes=(SUFFIX,)), "control vector")

    def load(self, name: object) -> ControlVector:
        """The named file's vector (kept while its size and time are unchanged)."""
        path = self.path(name)
        try:
            stat = path.stat()
        except OSError as exc:
            raise VectorFileError(f"{path.name} cannot be read ({exc.strerror or exc})") from None
        stamp = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            kept = self._cache.get(path)
            if kept is not None and kept[0] == stamp:
                return kept[1]
        vector = read(path)
        with self._lock:
            self._cache[path] = (stamp, vector)
        return vector

    def resolve(self, uses: tuple[VectorUse, ...], shape: tuple[int, int] | None) -> Steering | None:
        """The request's vectors summed per layer for a model of `shape` (hidden size,
        decoder layers); ParamsError naming control_vectors for anything that does not fit."""
        key = steer_key(uses)
        if not key:
            return None
        if shape is None:
            raise ParamsError("control_vectors: this model's backend cannot steer", param=FIELD,
                              reason="this model's backend cannot steer")
        hidden, n_layers = shape
        layers: dict[int, np.ndarray] = {}
        for use in uses:
            if use.strength == 0.0:
                continue
            try:
                vector = self.load(use.name)
            except (NameRefused, VectorFileError) as exc:
                raise ParamsError(f"control_vectors: {exc}", param=FIELD, reason=str(exc)) from None
            problem = fits(vector, hidden, n_layers)
            if problem:
                reason = f"{use.name}: {problem}"
                raise ParamsError(f"control_vectors: {reason}", param=FIELD, reason=reason)
            first, last = use.layers or (1, n_layers - 1)
            if not any(first <= layer <= last for layer in vector.directions):
                reason = f"{use.name} has no direction for layers {first}-{last} (it has {vector.layers[0]}-{vector.layers[-1]})"
                raise ParamsError(f"control_vectors: {reason}", param=FIELD, reason=reason)
            for layer, direction in vector.directions.items():
                if first <= layer <= last:
                    total = layers.get(layer)
                    added = np.float32(use.strength) * direction
                    layers[layer] = added if total is None else total + added
        return Steering(key, hidden, layers) if layers else None


def fits(vector: ControlVector, hidden: int, n_layers: int) -> str | None:
    """Why `vector` cannot steer a model of this hidden size and layer count, if it cannot."""
    if vector.width != hidden:
        return f"its directions have {vector.width} values; this model's hidden size is {hidden}"
    beyond = [layer for layer in vector.layers if layer >= n_layers]
    if beyond:
        return (f"it has a direction for layer {beyond[0]}; this model has {n_layers} layers "
                f"(directions 1 to {n_layers - 1})")
    return None
