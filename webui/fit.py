""""Will it fit?": the memory a model will need, before loading it, against this machine.

The model is built on PyTorch's `meta` device from its config.json: exact parameter
counts and layer shapes, no memory, no weights read.  Bytes then follow from how each
tensor will be stored:

- 16/32-bit: 2 or 4 bytes per parameter.
- bitsandbytes quantizes the Linear layers except the output head (transformers keeps
  the head, embeddings and norms in the compute dtype).  8-bit: 1 byte per weight plus
  one fp32 scale per output row.  4-bit: half a byte per weight plus one fp32 absmax
  per block of 64 (double quantization stores that absmax in 8 bits, plus an fp32 per
  256 blocks), and small per-layer lookup tables.
- cpu-int8 (webui/loaders/cpu_int8.py) quantizes every Linear, the head too: 1 byte
  per weight plus an fp32 and a bf16 scale per output row; the rest stays in the
  compute dtype.  A tied head gets its own int8 copy beside the embedding.
- fp16 on fbgemm's kernel (webui/loaders/cpu_fp16.py, `--dtype auto` on AVX2 CPUs)
  packs every Linear, the head too, at 2 bytes per weight; the rest (embeddings, norms)
  and the KV cache are fp32, the dtype it computes in.  It loads in 16-bit.
- Loading peaks: cpu-int8 loads in bf16 and then quantizes layer by layer, so its peak
  is the bf16 model.  bitsandbytes 8-bit on the CPU held a full-precision copy and the
  8-bit one at once (3.4 GB RSS against fp32's 2.7 GB on a ~0.47B Llama,
  docs/PERFORMANCE.md), so its peak counts both.
- KV cache: keys and values for every layer, key/value head and position, in the
  compute dtype.

Activations and allocator slack are not included, and sliding-window layers (Mistral,
Gemma 2) are counted at the full context, so long contexts are over-estimated for
them.  Tests hold the estimate to within 10% of the bytes a loaded tiny model holds.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from webui.loaders.base import LoadError, ModelRefused

log = logging.getLogger(__name__)

GIB = 1 << 30
# The deepest published models have a few hundred layers.  Building even the meta
# skeleton of millions of layers takes minutes, so a count past this is refused first.
MAX_LAYERS = 4096
MAX_CONFIG_BYTES = 16 << 20
BLOCK_4BIT = 64  # bitsandbytes' default 4-bit block size
DOUBLE_QUANT_GROUP = 256


@dataclass(frozen=True)
class ModelShape:
    """Counts read from a model's config, the inputs to every estimate."""

    parameters: int
    quantizable: int  # weights of the Linear layers bitsandbytes would quantize
    quantizable_rows: int  # their output rows (one 8-bit scale each)
    quantizable_layers: int  # each 4-bit layer also keeps small lookup tables
    layers: int
    kv_heads: int
    head_dim: int
    context_length: int
    head: int = 0  # the output head's weights (cpu-int8 quantizes it, bitsandbytes does not)
    head_rows: int = 0
    head_tied: bool = False  # the head shares the embedding's weights (counted once in parameters)
    # Double quantization groups each layer's blocks by 256 (a group per started 256).
    double_quant_groups: int = 0
    # Buffers that are not parameters (rotary frequencies, embedding scales), in bytes.
    buffer_bytes: int = 0
    # Mixture of experts: experts per MoE layer and how many each token uses (0: dense).
    experts: int = 0
    experts_per_token: int = 0

    def cpu_int8_bytes(self, base_bytes: int = 4) -> int:
        """cpu-int8: every Linear (head included) at 1 byte + 6 bytes of scales per row."""
        rest = self.parameters - self.quantizable - (0 if self.head_tied else self.head)
        return rest * base_bytes + self.quantizable + self.head + 6 * (self.quantizable_rows + self.head_rows)

    def cpu_fp16_bytes(self) -> int:
        """fp16 packed for fbgemm: every Linear (head included) at 2 bytes, the rest fp32."""
        rest = self.parameters - self.quantizable - (0 if self.head_tied else self.head)
        return rest * 4 + 2 * (self.quantizable + self.head)

    def weight_bytes(self, bits: int, base_bytes: int = 2, double_quant: bool = False) -> int:
        """Weights stored in `bits` (16 or 32: everything; 8 or 4: the Linear layers);
        what is not quantized stays at `base_bytes` per parameter."""
        if bits >= 16:
            return self.parameters * bits // 8
        rest = (self.parameters - self.quantizable) * base_bytes
        n = self.quantizable
        if bits == 8:
            return rest + n + 4 * self.quantizable_rows
        blocks = -(-n // BLOCK_4BIT)
        groups = self.double_quant_groups or -(-blocks // DOUBLE_QUANT_GROUP)
        scales = blocks + 4 * groups if double_quant else 4 * blocks
        # Per layer: the 16-value fp32 code table; double quantization adds a 256-value
        # table and an offset.  Negligible for real models, visible on tiny ones.
        tables = self.quantizable_layers * (64 + (1028 if double_quant else 0))
        return rest + n // 2 + scales + tables

    def kv_cache_bytes(self, context: int, bytes_per_value: int = 2) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * context * bytes_per_value


@dataclass(frozen=True)
class Memory:
    """Free memory this process could use: per GPU (name, free bytes) and RAM."""

    gpus: tuple[tuple[str, int], ...]
    ram: int

    @classmethod
    def detect(cls) -> Memory:
        gpus = []
        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                free, _total = torch.cuda.mem_get_info(index)
                gpus.append((torch.cuda.get_device_name(index), free))
        return cls(tuple(gpus), available_ram())


def available_ram() -> int:
    """MemAvailable from /proc/meminfo (Linux); elsewhere free physical pages."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


# The longest context of a released model is ~10M positions; some architectures size
# buffers by it (GPT-2 keeps an n_positions² mask), so a config asking 1e12 is refused.
MAX_POSITIONS = 1 << 24
POSITION_KEYS = ("max_position_embeddings", "n_positions", "seq_length")


class _NotFinite(ValueError):
    pass


def _not_finite(constant: str) -> float:
    raise _NotFinite(constant)


def config_floor(folder: Path) -> tuple[int, int]:
    """(parameters at least, layers) from config.json's numbers alone, nothing built.

    A lower bound, so it never refuses a model that fits: per layer the query and
    output projections (2·h²) and an up and a down projection (2·h·i), plus one
    embedding table (v·h).  Key/value projections, gates, extra experts and norms only
    add to that.  Multimodal configs keep the text model's numbers in `text_config`.
    """
    path = folder / "config.json"
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ModelRefused(f"{folder.name}: config.json is larger than {MAX_CONFIG_BYTES >> 20} MB")
        config = json.loads(path.read_text(encoding="utf-8"), parse_constant=_not_finite)
    except _NotFinite as exc:
        # Python's json reads NaN and Infinity; a model built from them loads, then every
        # sampled reply fails and embeddings are NaN (rms_norm_eps: NaN, rope_theta: Infinity).
        raise ModelRefused(f"{folder.name}: config.json holds {exc}, which is not a finite number") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise ModelRefused(f"{folder.name}: config.json cannot be read ({exc.__class__.__name__})") from None
    if not isinstance(config, dict):
        raise ModelRefused(f"{folder.name}: config.json must hold a JSON object")
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    for name in POSITION_KEYS:
        value = text.get(name, config.get(name))
        if isinstance(value, int | float) and not isinstance(value, bool) and not (
                0 <= value <= MAX_POSITIONS and value == int(value)):
            raise ModelRefused(f"{folder.name}: config.json's {name} is {value:,}; at most {MAX_POSITIONS:,} "
                               "positions, a whole number, are taken")

    def number(*names: str) -> int:
        for name in names:
            value = text.get(name, config.get(name))
            if isinstance(value, int) and not isinstance(value, bool):
                if value < 0:
                    raise ModelRefused(f"{folder.name}: config.json's {name} is negative")
                return value
        return 0

    hidden = number("hidden_size", "n_embd", "d_model")
    layers = number("num_hidden_layers", "n_layer", "num_layers")
    inner = number("intermediate_size", "n_inner", "ffn_dim")
    vocab = number("vocab_size")
    return vocab * hidden + layers * (2 * hidden * hidden + 2 * hidden * inner), layers


def refuse_impossible(folder: Path, *, bytes_per_parameter: float, disk: Path | None = None,
                      memory: Memory | None = None) -> None:
    """Refuse, fast, a config that no memory here could hold (or absurdly deep), before
    anything is built from it: otherwise a few bytes of config.json can keep a load
    building layers for minutes (docs/SECURITY.md, "Model files")."""
    floor, layers = config_floor(folder)
    if layers > MAX_LAYERS:
        raise ModelRefused(f"{folder.name}: config.json asks for {layers:,} layers (at most {MAX_LAYERS:,} here)")
    memory = memory or Memory.detect()
    room = sum(free for _, free in memory.gpus) + memory.ram + (disk_free(disk) if disk else 0)
    need = int(floor * bytes_per_parameter)
    if need > room:
        raise ModelRefused(
            f"{folder.name}: config.json describes at least {floor / 1e9:,.1f}B parameters ({gib(need)} of "
            f"weights), more than the {gib(room)} of memory this machine has free"
        )


def disk_free(folder: Path) -> int:
    """Free bytes on the disk that holds `folder` (or its nearest existing parent)."""
    for where in (folder, *folder.parents):
        if where.exists():
            return shutil.disk_usage(where).free
    return 0


def read_shape(folder: Path, trust_remote_code: bool = False) -> ModelShape:
    """Build the model on the meta device (no memory) and count what it holds."""
    from transformers import AutoConfig, AutoModelForCausalLM

    refuse_impossible(folder, bytes_per_parameter=0.5)  # the smallest (4-bit) load
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as exc:  # an unreadable config is a message, not a crash
        raise LoadError(f"{folder.name}: cannot read the model's shape ({exc.__class__.__name__}: {exc})") from exc
    head = model.get_output_embeddings()
    # Exactly nn.Linear, as every quantizer here picks its layers: a subclass with its own
    # forward (Llama 4's MoE router) stays as it is.  Mixture-of-experts weights held as
    # one 3-D parameter per layer (Qwen3-MoE, gpt-oss, Llama 4 in transformers 5) are no
    # Linear either: they stay in the compute dtype, and are counted so.
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear and m is not head]
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_attention_heads", 1) or 1
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    from webui.loaders.hf_transformers import context_length

    return ModelShape(
        parameters=model.num_parameters(),
        quantizable=sum(m.weight.numel() for m in linears),
        quantizable_rows=sum(m.out_features for m in linears),
        quantizable_layers=len(linears),
        layers=text.num_hidden_layers,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        context_length=context_length(config),
        head=0 if head is None else head.weight.numel(),
        head_rows=0 if head is None else head.out_features,
        head_tied=head is not None and head.weight is model.get_input_embeddings().weight,
        double_quant_groups=sum(ceil_div(ceil_div(m.weight.numel(), BLOCK_4BIT), DOUBLE_QUANT_GROUP) for m in linears),
        buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()),
        experts=_config_int(text, "num_local_experts", "num_experts", "n_routed_experts"),
        experts_per_token=_config_int(text, "num_experts_per_tok", "moe_topk"),
    )


def _config_int(config, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Estimate:
    shape: ModelShape
    context: int
    bits: int  # of the chosen load: 32, 16, 8 or 4
    base_bytes: int  # bytes per unquantized value (compute dtype)
    double_quant: bool = False
    cpu_int8: bool = False
    peak_weights: int = 0  # bytes the load holds at its peak, where above the final weights
    packed_fp16: bool = False

    @property
    def weights(self) -> int:
        return self._parameters + self.shape.buffer_bytes

    @property
    def _parameters(self) -> int:
        if self.cpu_int8:
            return self.shape.cpu_int8_bytes(self.base_bytes)
        if self.packed_fp16:
            return self.shape.cpu_fp16_bytes()
        return self.shape.weight_bytes(self.bits, self.base_bytes, self.double_quant)

    @property
    def peak(self) -> int:
        """The most RAM/GPU memory the load itself holds (the KV cache comes after)."""
        return max(self.weights, self.peak_weights)

    @property
    def need(self) -> int:
        return max(self.total, self.peak)

    @property
    def kv_cache(self) -> int:
        return self.shape.kv_cache_bytes(self.context, self.base_bytes)

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache


def estimate(shape: ModelShape, context: int, *, dtype: str = "auto", cpu: bool = False,
             load_in_8bit: bool = False, load_in_4bit: bool = False, use_double_quant: bool = False,
             cpu_int8: bool = False, flags: frozenset[str] | None = None, fbgemm: bool | None = None,
             cpu_memory: float | None = None, disk: bool = False) -> Estimate:
    """The chosen load's needs, decided as the loader decides (hf_kwargs.load_dtype and
    packs_fp16): `auto` means 16-bit on a GPU and, on the CPU, what `auto_cpu_dtype`
    picks for its `flags`; `fbgemm`: this torch has fbgemm's fp16 kernel.  Left out,
    both are this machine's: what a load here would really hold (bitsandbytes' layers
    outside the quantized ones, for one, stay in the CPU's auto dtype)."""
    from webui.loaders.hf_kwargs import LoadOptions, Machine, load_dtype, packs_fp16

    options = LoadOptions(dtype=dtype, cpu=cpu, load_in_8bit=load_in_8bit, load_in_4bit=load_in_4bit,
                          use_double_quant=use_double_quant, cpu_int8=cpu_int8, cpu_memory=cpu_memory, disk=disk)
    here = Machine.detect()
    machine = Machine(0 if cpu else 1, here.flags if flags is None else flags,
                      here.fbgemm_fp16 if fbgemm is None else fbgemm)
    if packs_fp16(options, machine):
        # Packed: 2 bytes per Linear weight, everything else and the cache in fp32.
        return Estimate(shape, max(1, context), 16, 4, peak_weights=shape.weight_bytes(16), packed_fp16=True)
    base = 4 if load_dtype(options, machine) == torch.float32 else 2
    bits = 8 if load_in_8bit or cpu_int8 else 4 if load_in_4bit else base * 8
    peak = 0
    if cpu_int8:
        peak = shape.weight_bytes(16)
    elif load_in_8bit and cpu:
        peak = shape.weight_bytes(base * 8) + shape.weight_bytes(8, base)
    return Estimate(shape, max(1, context), bits, base, use_double_quant and load_in_4bit, cpu_int8, peak)


def verdict(need: int, memory: Memory, cpu: bool) -> str:
    gpu_free = sum(free for _, free in memory.gpus)
    if memory.gpus and not cpu:
        if need <= gpu_free:
            where = "the GPU" if len(memory.gpus) == 1 else f"{len(memory.gpus)} GPUs (split by --gpu-split)"
            return f"✅ fits on {where}"
        if need <= gpu_free + memory.ram:
            return "⚠️ fits only with part of it in RAM (--cpu-memory): much slower"
        return "❌ does not fit in GPU memory and RAM together; try 4-bit or a shorter context"
    if need <= memory.ram:
        return "✅ fits in RAM (CPU)"
    return "❌ does not fit in RAM; try 4-bit, a shorter context, or --disk"


def gib(n: int, unit: str | None = None) -> str:
    """A size in GiB, or MiB when small; `unit` ("GiB" or "MiB") fixes it for a whole table."""
    unit = unit or ("GiB" if n >= GIB / 100 else "MiB")
    return f"{n / GIB:.2f} GiB" if unit == "GiB" else f"{n / (1 << 20):.2f} MiB"


def unit_for(*sizes: int) -> str:
    """One unit for a table's sizes, from its largest (a column never mixes GiB and MiB)."""
    return "GiB" if max(sizes, default=0) >= GIB / 100 else "MiB"


def report(shape: ModelShape, chosen: Estimate, memory: Memory, cpu: bool,
           flags: frozenset[str] = frozenset()) -> str:
    """Markdown for the Model tab."""
    rows = [
        ("16-bit", shape.weight_bytes(16)),
        ("8-bit", shape.weight_bytes(8, 2)),
        ("4-bit", shape.weight_bytes(4, 2)),
    ]
    if cpu:
        rows = [("fp32", shape.weight_bytes(32)), *rows, ("fp16 on fbgemm (fp32 math)", shape.cpu_fp16_bytes()),
                ("cpu-int8", shape.cpu_int8_bytes(4))]
    kv = shape.kv_cache_bytes(chosen.context, 2)
    unit = unit_for(*(size + kv for _, size in rows))
    mine = unit_for(chosen.total, chosen.peak)
    lines = [
        f"**{shape.parameters / 1e6:,.1f}M parameters**, context {chosen.context:,} "
        f"(model maximum {shape.context_length:,})",
        *([f"Mixture of experts: {shape.experts} experts a layer, {shape.experts_per_token or '?'} used per token; "
           "all of them are held in memory (counted here), each token computes with a few."] if shape.experts else []),
        "",
        "| weights in | weights | + KV cache (16-bit) | total |",
        "|---|---|---|---|",
        *[f"| {label} | {gib(size, unit)} | {gib(kv, unit)} | {gib(size + kv, unit)} |" for label, size in rows],
        "",
        f"Your choice ({chosen.bits}-bit weights, {chosen.base_bytes * 8}-bit cache): "
        f"**{gib(chosen.total, mine)}** (weights {gib(chosen.weights, mine)} + KV cache "
        f"{gib(chosen.kv_cache, mine)}), plus activations."
        + (f" Loading peaks at **{gib(chosen.peak, mine)}** before the weights settle." if chosen.peak > chosen.weights
           else ""),
        "",
        *(cpu_speed_lines(flags) if cpu else []),
        "Detected: " + (", ".join(f"{name} {gib(free)} free" for name, free in memory.gpus) or "no CUDA GPU")
        + f"; RAM {gib(memory.ram)} available.",
        "",
        verdict(chosen.need, memory, cpu),
    ]
    return "\n".join(lines)


def cpu_speed_lines(flags: frozenset[str]) -> list[str]:
    """Speed of each choice on this CPU, from the table measured per CPU feature set."""
    from webui.loaders.cpu_features import AUTO_CHOICES, MEASURED, auto_cpu_dtype, feature_set

    kind = feature_set(flags)
    table = MEASURED.get(kind)
    if not table:
        return [f"Speed on this CPU ({kind}): not measured here; bench/bench_cpu_dtypes.py measures it.", ""]
    lines = [f"Speed on this CPU kind ({kind}), ÷ fp32, measured by bench/bench_cpu_dtypes.py:", "",
             "| load | decode | prefill |", "|---|---|---|"]
    auto = auto_cpu_dtype(flags)
    lines += [f"| {name}{' (--dtype auto)' if AUTO_CHOICES.get(name) == auto else ''} | {row['decode']:.2f}x "
              f"| {row['prefill']:.2f}x |" for name, row in table.items() if row["decode"] is not None]
    return [*lines, ""]


# -- GGUF (llama.cpp) ---------------------------------------------------------------
# Bytes per cached key/value element for each --cache-type: q8_0 stores 32 values in
# 34 bytes, q4_0 in 18 (ggml's block sizes).
CACHE_TYPE_BYTES = {"fp16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


@dataclass(frozen=True)
class GGUFEstimate:
    """A GGUF file's needs: the weights are the file's bytes; llama.cpp puts the last
    --n-gpu-layers layers (and their KV cache) on the GPU, the head too when all are."""

    weights_gpu: int
    weights_ram: int
    kv_gpu: int
    kv_ram: int

    @property
    def gpu(self) -> int:
        return self.weights_gpu + self.kv_gpu

    @property
    def ram(self) -> int:
        return self.weights_ram + self.kv_ram


def gguf_estimate(info, context: int, n_gpu_layers: int, cache_type: str, projector_bytes: int = 0) -> GGUFEstimate:
    """`projector_bytes`: a vision model's image projector, loaded beside it in RAM."""
    layers = info.layers or len(info.block_bytes) or 1
    offloaded = layers if n_gpu_layers < 0 else min(n_gpu_layers, layers)
    on_gpu = sum(info.block_bytes[len(info.block_bytes) - offloaded :]) if offloaded else 0
    if n_gpu_layers < 0 or n_gpu_layers > layers:
        on_gpu += info.output_bytes
    values_per_layer = context * info.kv_heads * (info.key_length + info.value_length)  # keys + values
    kv_layer = int(values_per_layer * CACHE_TYPE_BYTES[cache_type])
    return GGUFEstimate(on_gpu, info.file_bytes - on_gpu + projector_bytes, kv_layer * offloaded,
                        kv_layer * (layers - offloaded))


def gguf_report(info, context: int, n_gpu_layers: int, cache_type: str, memory: Memory, gpu_build: bool,
                projector: Path | None = None) -> str:
    """Markdown for the Model tab: a GGUF file's memory at this context and cache type
    (with the image projector `projector` that loads beside it, counted in RAM)."""
    projector_bytes = projector.stat().st_size if projector is not None else 0
    chosen = gguf_estimate(info, context, n_gpu_layers if gpu_build else 0, cache_type, projector_bytes)
    gpu_free = sum(free for _, free in memory.gpus)
    if chosen.gpu and chosen.gpu > gpu_free:
        verdict_text = "❌ the offloaded layers do not fit in GPU memory; lower --n-gpu-layers"
    elif chosen.ram > memory.ram:
        verdict_text = "❌ does not fit in RAM; a smaller quantization, a shorter --n-ctx or --cache-type q8_0"
    elif chosen.gpu:
        # Every layer offloaded: only the token embeddings stay in RAM (llama.cpp keeps them there).
        layers = info.layers or len(info.block_bytes) or 1
        verdict_text = "✅ fits on the GPU" if n_gpu_layers < 0 or n_gpu_layers >= layers else "✅ fits (GPU + RAM)"
    else:
        verdict_text = "✅ fits in RAM (CPU)"
    note = "" if gpu_build or not n_gpu_layers else (
        " (this llama-cpp-python was built without GPU support: --n-gpu-layers has no effect)")
    unit = unit_for(chosen.gpu, chosen.ram)
    lines = [
        f"**{info.parameters / 1e6:,.1f}M parameters**, {info.architecture}, {info.file_type}, "
        f"file `{info.file.name}` {gib(info.file_bytes)}"
        + (f" + image projector `{projector.name}` {gib(projector_bytes)}" if projector is not None else "")
        + f"; context {context:,} (model maximum {info.context_length:,})",
        "",
        "| | weights | KV cache (" + cache_type + ") | total |",
        "|---|---|---|---|",
        f"| GPU | {gib(chosen.weights_gpu, unit)} | {gib(chosen.kv_gpu, unit)} | {gib(chosen.gpu, unit)} |",
        f"| RAM | {gib(chosen.weights_ram, unit)} | {gib(chosen.kv_ram, unit)} | {gib(chosen.ram, unit)} |",
        "",
        f"--n-gpu-layers {n_gpu_layers}{note}; compute buffers not included.",
        "",
        "Detected: " + (", ".join(f"{name} {gib(free)} free" for name, free in memory.gpus) or "no CUDA GPU")
        + f"; RAM {gib(memory.ram)} available.",
        "",
        verdict_text,
    ]
    return "\n".join(lines)
