"""The Transformers loader's options: the one place each is declared.

Flags keep Text Generation WebUI's spellings (--load-in-8bit but --quant_type).  What
each does to `from_pretrained` is in hf_kwargs.py.  Importable without torch: the
command line and the settings are built from it before anything heavy loads.
"""

from __future__ import annotations

from typing import Literal

from webui.loaders.options import Availability, Folder, GiB, GiBList, LoaderOptions, option

Dtype = Literal["auto", "bf16", "fp16", "fp32"]
BITSANDBYTES = ("load_in_8bit", "load_in_4bit")
Attention = Literal["auto", "sdpa", "eager", "flash_attention_2"]
QuantType = Literal["nf4", "fp4"]
ComputeDtype = Literal["auto", "bfloat16", "float16", "float32"]


class TransformersOptions(LoaderOptions):
    dtype: Dtype = option("auto", "weights dtype (auto: the checkpoint's on a GPU; on the CPU bf16 where it "
                          "computes in bf16 (AVX512-BF16/AMX), else fp16 on fbgemm's kernel with fp32 math "
                          "(AVX2+F16C), else fp32)",
                          const_flags={"--bf16": "bf16"})
    cpu: bool = option(False, "run on the CPU even if a GPU is present", group="device")
    # "auto": what transformers picks for the architecture (Gemma2 has no sdpa path).
    attn_implementation: Attention = option(
        "auto", "attention kernel (flash_attention_2 needs flash-attn and a GPU)", control="dropdown",
        label="attention", group="device")
    load_in_8bit: bool = option(False, "quantize to 8 bits on load (bitsandbytes)", group="quantization",
                                excludes="load_in_4bit")
    load_in_4bit: bool = option(False, "quantize to 4 bits on load (bitsandbytes)", group="quantization",
                                excludes="load_in_8bit")
    # Not bitsandbytes: torch's own int8 kernel, fast on AVX2 (webui/loaders/cpu_int8.py).
    cpu_int8: bool = option(False, "CPU: 8-bit weights on torch's int8 kernel (faster decode than fp32 "
                            "at about a third of its memory; any x86 CPU)", group="quantization",
                            excludes="load_in_8bit")
    quant_type: QuantType = option("nf4", "4-bit data type", flag="--quant_type", label="quant_type (4-bit)",
                                   group="quantization")
    use_double_quant: bool = option(False, "4-bit: also quantize the scales", flag="--use_double_quant",
                                    label="use_double_quant (4-bit)", group="quantization")
    compute_dtype: ComputeDtype = option(
        "auto", "4-bit: dtype of the matmuls (auto: the model dtype)", flag="--compute_dtype", control="dropdown",
        label="compute_dtype (4-bit)", group="quantization")
    # accelerate fills the GPUs in index order, then RAM, then disk.
    gpu_split: GiBList = option((), "GiB of each GPU to use, comma-separated, e.g. 20,7 (shards the model)",
                                group="placement")
    cpu_memory: GiB | None = option(None, "GiB of RAM for the layers that do not fit the GPUs",
                                    label="cpu-memory (GiB)", group="placement")
    disk: bool = option(False, "offload what fits neither GPUs nor RAM to disk", label="disk offload",
                        group="placement")
    disk_cache_dir: Folder | None = option(None, "disk offload folder (default user_data/cache)", scope="server")
    allow_pickle: bool = option(False, "allow pickle checkpoints (*.bin), which can run code when loaded",
                                scope="command_line", group="code")
    trust_remote_code: bool = option(False, "run Python code shipped inside a model folder",
                                     scope="command_line", group="code")

    @classmethod
    def availability(cls) -> dict[str, Availability]:
        # Imported here: hf_kwargs needs torch, and this module must not.
        from webui.loaders.cpu_features import bitsandbytes_cpu_warning, cpu_flags
        from webui.loaders.hf_kwargs import Machine, attention_choices, bitsandbytes_problem

        problem = bitsandbytes_problem()
        # On a machine without a GPU, say before loading when bitsandbytes will be slow.
        on_cpu = Machine.detect().cuda_devices == 0
        flags = cpu_flags()
        notes = {bits: bitsandbytes_cpu_warning(flags, bits) if on_cpu else None for bits in (8, 4)}
        return {"attn_implementation": Availability(choices=tuple(attention_choices())),
                "load_in_8bit": Availability(problem=problem, note=notes[8]),
                "load_in_4bit": Availability(problem=problem, note=notes[4])}

    def summary(self) -> str:
        if self.cpu_int8:
            return "cpu-int8"
        if self.load_in_8bit:
            return "8-bit"
        return f"4-bit {self.quant_type}" if self.load_in_4bit else ""
