"""The llama.cpp loader's options: the one place each is declared.

Names and flags are Text Generation WebUI's (--n-ctx, --n-gpu-layers, --n_batch ...).
Importable without llama-cpp-python: the command line and the settings are built from
it before anything heavy loads, and an install without the `gguf` extra still shows
(disabled) controls with the reason.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from webui.loaders.options import Availability, LoaderOptions, option, split_commas
from webui.paths import is_plain_name

# KV-cache element types llama.cpp stores keys and values in (q8_0/q4_0 quantize them).
CacheType = Literal["fp16", "q8_0", "q4_0"]
MAX_CONTEXT = 1 << 21
INSTALL_HINT = ("llama-cpp-python is not installed: run `scripts/install.sh gguf` (or "
                "`pip install -e '.[gguf]'`); README.md says how to build it for CUDA, Metal or Vulkan")


def _split_proportions(value: object) -> object:
    """'3,1' -> (3.0, 1.0): what share of the model each GPU takes (llama.cpp normalises)."""
    return split_commas(value, "expected a share per GPU, comma-separated, e.g. 3,1")


def _file_name(value: object) -> object:
    # Only a plain name: it is looked up in the folder's own listing, never joined on.
    if isinstance(value, str) and value:
        parts = value.split("/")
        if len(parts) > 2 or not all(is_plain_name(part) for part in parts) or not value.endswith(".gguf"):
            raise ValueError("expected the name of a .gguf file in the model's folder (or one sub-folder down)")
    return value


Share = Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)]
Proportions = Annotated[tuple[Share, ...], BeforeValidator(_split_proportions), Field(max_length=64)]
GGUFName = Annotated[str, BeforeValidator(_file_name), Field(max_length=128)]


class LlamaCppOptions(LoaderOptions):
    n_ctx: Annotated[int, Field(ge=0, le=MAX_CONTEXT)] = option(
        0, "context length in tokens, shared by the requests decoding together (0: the model's, at most 8192)",
        flag="--n-ctx", label="n-ctx (llama.cpp)", group="llama.cpp")
    n_gpu_layers: Annotated[int, Field(ge=-1, le=1024)] = option(
        0, "layers to put on the GPU (-1: all; 0: CPU only)", flag="--n-gpu-layers", group="llama.cpp")
    threads: Annotated[int, Field(ge=0, le=1024)] = option(
        0, "CPU threads for decoding (0: one per physical core, as llama.cpp does)", group="llama.cpp")
    threads_batch: Annotated[int, Field(ge=0, le=1024)] = option(
        0, "CPU threads for reading prompts (0: all cores)", flag="--threads-batch", group="llama.cpp")
    n_batch: Annotated[int, Field(ge=1, le=1 << 16)] = option(
        512, "prompt tokens computed per llama.cpp call", flag="--n_batch", group="llama.cpp")
    tensor_split: Proportions = option(
        (), "share of the model per GPU, comma-separated, e.g. 3,1", group="llama.cpp")
    flash_attn: bool = option(False, "flash attention (llama.cpp's kernel)", group="llama.cpp")
    cache_type: CacheType = option(
        "fp16", "KV-cache type: q8_0 and q4_0 quantize the cache (q4_0/q8_0 values need --flash-attn)",
        flag="--cache-type", group="llama.cpp")
    no_mmap: bool = option(False, "read the whole file into memory instead of mapping it", group="llama.cpp")
    mlock: bool = option(False, "lock the model in RAM so the system cannot swap it out", group="llama.cpp")
    rope_freq_base: Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)] = option(
        0.0, "RoPE base frequency (0: the model's)", flag="--rope-freq-base", group="llama.cpp")
    gguf_file: GGUFName = option(
        "", "which .gguf file of a model folder to load (blank: the largest that fits)", flag="--gguf-file",
        control="dropdown", group="llama.cpp")

    @classmethod
    def availability(cls) -> dict[str, Availability]:
        problem = llama_cpp_problem()
        return {name: Availability(problem=problem) for name in cls.model_fields} if problem else {}

    def summary(self) -> str:
        return f"KV {self.cache_type}" if self.cache_type != "fp16" else ""


def llama_cpp_problem() -> str | None:
    """Why the llama.cpp loader cannot run here, or None."""
    try:
        import llama_cpp  # noqa: F401 - importing is the check (it loads the compiled library)
    except ImportError:
        return INSTALL_HINT
    except Exception as exc:  # installed, but its compiled library does not load
        return f"llama-cpp-python is installed but does not load ({exc.__class__.__name__}: {exc}); reinstall it"
    return None
