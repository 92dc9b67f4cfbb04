"""The contract between the model manager and loader backends."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol

from webui.settings import Dtype

Device = Literal["auto", "cpu", "cuda"]
Attention = Literal["auto", "sdpa", "eager", "flash_attention_2"]
QuantType = Literal["nf4", "fp4"]
ComputeDtype = Literal["auto", "bfloat16", "float16", "float32"]


class LoadError(RuntimeError):
    """A model that cannot be loaded, with a message fit to show the user."""


class ModelRefused(LoadError):
    """Refused before loading (broken files, a size no machine here can hold): the
    request's fault, so the API answers 400, and nothing was built."""


@dataclass(frozen=True)
class LoadOptions:
    dtype: Dtype = "auto"
    device: Device = "auto"
    # "auto": what transformers picks for the architecture (Gemma2 has no sdpa path).
    attn_implementation: Attention = "auto"
    # bitsandbytes quantization (at most one of the two).
    load_in_8bit: bool = False
    load_in_4bit: bool = False
    quant_type: QuantType = "nf4"
    use_double_quant: bool = False
    compute_dtype: ComputeDtype = "auto"
    # Placement: GiB per GPU (index order), GiB of CPU RAM, and offload to disk.
    gpu_split: tuple[float, ...] = ()
    cpu_memory: float | None = None
    disk: bool = False
    offload_dir: Path | None = field(default=None, compare=False)
    # Both switches come from the command line only; requests can never set them.
    allow_pickle: bool = False
    trust_remote_code: bool = False


# What the UI, an API request or a saved per-model file may change.  The code-execution
# switches and the offload folder are deliberately absent (HOSTILE.md 6).
USER_OPTIONS = frozenset(
    f.name for f in fields(LoadOptions) if f.name not in {"allow_pickle", "trust_remote_code", "offload_dir"}
)


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
    options: LoadOptions = field(default_factory=LoadOptions)
    # Names of the LoRA adapters currently applied, in order.
    loras: tuple[str, ...] = ()

    def describe(self) -> str:
        quant = " 8-bit" if self.options.load_in_8bit else (
            f" 4-bit {self.options.quant_type}" if self.options.load_in_4bit else "")
        loras = f", LoRA {' + '.join(self.loras)}" if self.loras else ""
        return (
            f"{self.name} ({self.loader}, {self.parameters / 1e6:.1f}M parameters, "
            f"{self.dtype}{quant} on {self.device}, context {self.context_length}{loras})"
        )


class Loader(Protocol):
    name: str

    def can_load(self, folder: Path) -> bool:
        """Cheap check: does this folder look like something this loader reads?"""

    def load(self, name: str, folder: Path, options: LoadOptions) -> LoadedModel:
        """Load or raise LoadError; must not leave half-loaded state behind."""

    def unload(self, loaded: LoadedModel) -> None:
        """Release the model's memory (device caches included)."""
