"""LoadOptions -> keyword arguments for transformers' `from_pretrained`.

Pure functions of the options and of what the machine has (passed in), so that the
multi-GPU and quantization paths can be unit-tested on a machine with neither.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import torch

from webui.loaders.base import LoadError
from webui.loaders.cpu_features import auto_cpu_dtype, bitsandbytes_cpu_warning, cpu_flags
from webui.loaders.quiet_logs import quiet_offline_notices
from webui.loaders.hf_options import TransformersOptions as LoadOptions

TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
COMPUTE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class Machine:
    """What the loader may place weights on."""

    cuda_devices: int
    flags: frozenset[str] = frozenset()  # the CPU's, as /proc/cpuinfo spells them
    fbgemm_fp16: bool = True  # this torch build runs fbgemm's fp16 matmul (cpu_fp16.py)

    @classmethod
    def detect(cls) -> Machine:
        from webui.loaders.cpu_fp16 import fbgemm_fp16_ready

        return cls(torch.cuda.device_count() if torch.cuda.is_available() else 0, cpu_flags(), fbgemm_fp16_ready())


def attention_choices() -> list[str]:
    """Attention implementations this install can run; flash-attn only when importable."""
    choices = ["auto", "sdpa", "eager"]
    if importlib.util.find_spec("flash_attn") is not None:
        choices.append("flash_attention_2")
    return choices


def bitsandbytes_problem() -> str | None:
    """Why 8/4-bit loading cannot work here, or None when bitsandbytes imports."""
    quiet_offline_notices()
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "8-bit and 4-bit loading need bitsandbytes: pip install bitsandbytes (the [quant] extra)"
    except Exception as exc:  # a broken native library must not take the app down
        return f"bitsandbytes is installed but cannot be used here: {exc.__class__.__name__}: {exc}"
    return None


def pick_device(options: LoadOptions, machine: Machine) -> str:
    return "cuda" if machine.cuda_devices and not options.cpu else "cpu"


def pick_dtype(requested: str, device: str, flags: frozenset[str] = frozenset(),
               fbgemm: bool = True) -> torch.dtype | str:
    if requested != "auto":
        return TORCH_DTYPES[requested]
    # On GPUs the checkpoint's own dtype (usually bf16) is best.  On CPUs what computes
    # fastest there (cpu_features.py): bf16 with bf16 arithmetic, fp16 on fbgemm's kernel.
    return "auto" if device == "cuda" else TORCH_DTYPES[auto_cpu_dtype(flags, fbgemm)]


def packs_fp16(options: LoadOptions, machine: Machine) -> bool:
    """Whether this load keeps fp16 weights packed for fbgemm's kernel (cpu_fp16.py): on
    the CPU, unquantized, every layer in RAM (packing cannot reach offloaded layers)."""
    if pick_device(options, machine) != "cpu" or not machine.fbgemm_fp16:
        return False
    if options.cpu_int8 or options.load_in_8bit or options.load_in_4bit:
        return False
    if options.disk or options.cpu_memory is not None:
        return False
    return pick_dtype(options.dtype, "cpu", machine.flags) == torch.float16


def load_dtype(options: LoadOptions, machine: Machine) -> torch.dtype | str:
    """The dtype `--dtype` means on this machine, before any packing: `auto` falls back
    to fp32 where fp16 could not be packed (the emulated fp16 matmul is slow)."""
    dtype = pick_dtype(options.dtype, pick_device(options, machine), machine.flags, machine.fbgemm_fp16)
    if options.dtype == "auto" and dtype == torch.float16 and not packs_fp16(options, machine):
        return torch.float32
    return dtype


def load_warnings(options: LoadOptions, machine: Machine) -> list[str]:
    """What to tell the user at load time about speed on this machine."""
    if pick_device(options, machine) != "cpu":
        return []
    bits = 8 if options.load_in_8bit else 4 if options.load_in_4bit else None
    warning = bitsandbytes_cpu_warning(machine.flags, bits) if bits else None
    return [warning] if warning else []


def max_memory(options: LoadOptions, machine: Machine) -> dict[int | str, str] | None:
    """--gpu-split 20,7 --cpu-memory 64 -> {0: "20GiB", 1: "7GiB", "cpu": "64GiB"}.

    accelerate fills devices in this order and spills the rest to the next; a GPU
    left out of the split is not used at all.  Each value's range was checked by the
    options schema (hf_options.py), once, wherever it came from.
    """
    if len(options.gpu_split) > machine.cuda_devices and machine.cuda_devices:
        raise LoadError(
            f"--gpu-split names {len(options.gpu_split)} GPUs but only {machine.cuda_devices} are present"
        )
    limits: dict[int | str, str] = {}
    if machine.cuda_devices:
        limits.update({index: f"{gib:g}GiB" for index, gib in enumerate(options.gpu_split)})
    if options.cpu_memory is not None:
        limits["cpu"] = f"{options.cpu_memory:g}GiB"
    return limits or None


def device_map(options: LoadOptions, device: str, machine: Machine) -> str:
    """Where the weights go.  No limits: all on the one device.  Several GPUs, or any
    memory limit or disk offload: accelerate's "auto" planner (on a CPU-only machine
    that spills what exceeds --cpu-memory to disk)."""
    limited = options.cpu_memory is not None or options.disk
    if device == "cpu":
        return "auto" if limited else "cpu"
    if options.gpu_split or limited or machine.cuda_devices > 1:
        return "auto"
    return "cuda"


def quantization_config(options: LoadOptions, device: str, compute: torch.dtype | str):
    if options.load_in_8bit and options.load_in_4bit:
        raise LoadError("choose 8-bit or 4-bit, not both")
    if not (options.load_in_8bit or options.load_in_4bit):
        return None
    problem = bitsandbytes_problem()
    if problem:
        raise LoadError(problem)
    from transformers import BitsAndBytesConfig

    if options.load_in_8bit:
        # Layers that accelerate places on the CPU or disk stay unquantized (fp32).
        offloads = options.cpu_memory is not None or options.disk
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_enable_fp32_cpu_offload=offloads and device != "cpu")
    if options.compute_dtype != "auto":
        compute = COMPUTE_DTYPES[options.compute_dtype]
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=options.quant_type,
        bnb_4bit_use_double_quant=options.use_double_quant,
        bnb_4bit_compute_dtype=compute if isinstance(compute, torch.dtype) else torch.bfloat16,
    )


def from_pretrained_kwargs(options: LoadOptions, machine: Machine) -> dict[str, Any]:
    """Everything `AutoModelForCausalLM.from_pretrained` gets besides the folder."""
    device = pick_device(options, machine)
    dtype = load_dtype(options, machine)
    if options.cpu_int8:
        if device != "cpu":
            raise LoadError("cpu-int8 is for the CPU; on a GPU use --load-in-8bit, or add --cpu")
        if options.load_in_8bit or options.load_in_4bit:
            raise LoadError("choose one quantization: cpu-int8, 8-bit or 4-bit")
        if options.disk:
            raise LoadError("cpu-int8 quantizes weights in RAM; it cannot offload to disk")
        # Loaded in bf16 (half the fp32 peak), then quantized layer by layer (hf_transformers.py).
        dtype = torch.bfloat16
    if options.attn_implementation not in attention_choices():
        raise LoadError(f"attention {options.attn_implementation!r} is not available (flash-attn is not installed)")
    if options.attn_implementation == "flash_attention_2" and device == "cpu":
        raise LoadError("flash_attention_2 needs a CUDA GPU; use sdpa or eager on the CPU")
    if options.disk and options.disk_cache_dir is None:
        raise LoadError("disk offload needs a folder")
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "device_map": device_map(options, device, machine),
        "local_files_only": True,
        "use_safetensors": None if options.allow_pickle else True,
        "trust_remote_code": options.trust_remote_code,
    }
    if options.attn_implementation != "auto":
        kwargs["attn_implementation"] = options.attn_implementation
    # On the CPU only the RAM limit applies (a GPU split is meaningless there).
    limits = max_memory(options, machine if device == "cuda" else Machine(0))
    if limits:
        kwargs["max_memory"] = limits
    if options.disk:
        kwargs["offload_folder"] = str(options.disk_cache_dir)
    quant = quantization_config(options, device, dtype)
    if quant is not None:
        kwargs["quantization_config"] = quant
    return kwargs
