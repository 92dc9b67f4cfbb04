"""Hugging Face Transformers loader: a folder with config.json and weights."""

from __future__ import annotations

import gc
import json
import logging
import struct
from pathlib import Path

import torch

from webui.fit import refuse_impossible
from webui.generation.backend import ServingOptions
from webui.loaders.base import LoadedModel, LoadError, ModelRefused
from webui.loaders.hf_backend import TransformersBackend
from webui.loaders.hf_vision import is_vision_folder
from webui.loaders.cpu_int8 import to_cpu_int8
from webui.loaders.cpu_fp16 import to_cpu_fp16
from webui.loaders.hf_kwargs import Machine, from_pretrained_kwargs, load_dtype, load_warnings, packs_fp16
from webui.loaders.quiet_logs import quiet_chatty_loggers
from webui.loaders.hf_options import TransformersOptions

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def check_safetensors(path: Path) -> None:
    """Refuse a truncated or corrupt safetensors file before anything loads it.

    The format is an 8-byte little-endian header length, a JSON header giving each
    tensor's dtype, shape and byte range, then the data; a file shorter than its last
    range is truncated.  Every field's type is checked here, so a header of the wrong
    shape is a clear refusal, not an exception deep in a library.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            raw_len = handle.read(8)
            if len(raw_len) < 8:
                raise ModelRefused(f"{path.name} is empty or truncated")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len > min(size - 8, 100 << 20):
                raise ModelRefused(f"{path.name} has a corrupt header")
            header = json.loads(handle.read(header_len))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelRefused(f"{path.name} cannot be read as safetensors ({exc.__class__.__name__})") from exc
    if not isinstance(header, dict):
        raise ModelRefused(f"{path.name} has a corrupt header")
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not _tensor_entry_ok(entry):
            raise ModelRefused(f"{path.name} has a corrupt header (tensor entry of the wrong shape or types)")
        data_end = max(data_end, entry["data_offsets"][1])
    if 8 + header_len + data_end > size:
        raise ModelRefused(f"{path.name} is truncated ({size} bytes, needs {8 + header_len + data_end})")


def _tensor_entry_ok(entry: object) -> bool:
    """{"dtype": str, "shape": [int >= 0, ...], "data_offsets": [begin, end]} with 0 <= begin <= end."""
    if not isinstance(entry, dict):
        return False
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    return (
        isinstance(entry.get("dtype"), str)
        and isinstance(shape, list) and all(_count(n) for n in shape)
        and isinstance(offsets, list) and len(offsets) == 2 and all(_count(n) for n in offsets)
        and offsets[0] <= offsets[1]
    )


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class TransformersLoader:
    name = "transformers"
    options_schema = TransformersOptions

    def __init__(self, serving: ServingOptions | None = None):
        self.serving = serving or ServingOptions()

    def can_load(self, folder: Path) -> bool:
        return (folder / "config.json").is_file()

    def preflight(self, folder: Path, options: TransformersOptions) -> None:
        """Everything that can be checked without loading: fail fast, load nothing."""
        if not (folder / "config.json").is_file():
            raise ModelRefused(f"{folder.name}: no config.json, not a Transformers model folder")
        safetensors = sorted(folder.glob("*.safetensors"))
        pickles = [p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if not safetensors:
            if pickles and not options.allow_pickle:
                raise ModelRefused(
                    f"{folder.name} has only pickle weights ({pickles[0].name}), which can run "
                    "code when loaded; convert it to safetensors or start with --allow-pickle"
                )
            if not pickles:
                raise ModelRefused(f"{folder.name}: no weights found (*.safetensors)")
        for path in safetensors:
            check_safetensors(path)
        # Before anything is built: a config no memory here can hold is refused at once.
        refuse_impossible(folder, bytes_per_parameter=bytes_per_parameter(options),
                          disk=options.disk_cache_dir if options.disk else None)

    def load(self, name: str, folder: Path, options: TransformersOptions) -> LoadedModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.preflight(folder, options)
        quiet_chatty_loggers()
        machine = Machine.detect()
        kwargs = from_pretrained_kwargs(options, machine)  # raises LoadError on bad options
        for warning in load_warnings(options, machine):
            log.warning("%s: %s", name, warning)
        packed = packs_fp16(options, machine)
        if packed:
            # 16-bit in, never an fp32 copy of the whole model: bf16 stays bf16 (fp16 would
            # overflow what bf16's range holds; each layer is checked when packed).
            kwargs["dtype"] = torch.bfloat16 if checkpoint_dtype(folder) == "bfloat16" else torch.float16
        model = tokenizer = processor = None
        try:
            if is_vision_folder(folder):
                # A vision model: its processor prepares images, its tokenizer the text.
                from transformers import AutoModelForImageTextToText, AutoProcessor

                processor = AutoProcessor.from_pretrained(
                    folder, local_files_only=True, trust_remote_code=options.trust_remote_code)
                tokenizer = processor.tokenizer
                if not getattr(tokenizer, "chat_template", None) and getattr(processor, "chat_template", None):
                    tokenizer.chat_template = processor.chat_template
                model = AutoModelForImageTextToText.from_pretrained(folder, **kwargs)
            else:
                tokenizer = AutoTokenizer.from_pretrained(
                    folder, local_files_only=True, trust_remote_code=options.trust_remote_code
                )
                model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
            # Counted before cpu-int8 or packing moves weights out of the parameters.
            parameters = model.num_parameters()
            if options.cpu_int8:
                # The rest of the model (embeddings, norms) computes in what --dtype says.
                to_cpu_int8(model, load_dtype(options, machine))
            if packed:
                kept = to_cpu_fp16(model)
                if kept:
                    log.warning("%s: %d layers have weights beyond fp16's range and stay fp32", name, kept)
            model.eval()
        except torch.OutOfMemoryError as exc:
            del model, tokenizer, processor
            free_memory()
            raise LoadError(f"{name}: out of memory while loading ({exc})") from exc
        except Exception as exc:  # any library failure becomes a message, never a crash
            del model, tokenizer, processor
            free_memory()
            raise LoadError(f"{name}: {exc.__class__.__name__}: {exc}") from exc
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
            tokenizer.pad_token = tokenizer.eos_token
        loaded = LoadedModel(
            name=name,
            folder=folder,
            loader=self.name,
            model=model,
            tokenizer=tokenizer,
            device=input_device(model),
            # Packed fp16 weights compute in fp32 (model.dtype): name what the weights are.
            dtype="float16" if packed else str(model.dtype).removeprefix("torch."),
            context_length=context_length(model.config),
            # num_parameters counts a packed 4-bit weight as its unpacked size.
            parameters=parameters,
            options=options,
            processor=processor,
        )
        serving = self.serving
        loaded.backend = TransformersBackend(loaded, serving.max_batch, serving.kv_budget_bytes,
                                             serving.prefix_cache_bytes, serving.prefill_chunk,
                                             serving.prompt_lookup)
        return loaded

    def unload(self, loaded: LoadedModel) -> None:
        if loaded.backend is not None:
            loaded.backend.clear_cache()
        loaded.backend = None
        loaded.model = None
        loaded.tokenizer = None
        loaded.processor = None
        free_memory()


def checkpoint_dtype(folder: Path) -> str | None:
    """The dtype config.json says the weights were saved in ("bfloat16", "float32"...)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(config, dict):
        return None
    dtype = config.get("dtype", config.get("torch_dtype"))
    return dtype if isinstance(dtype, str) else None


def bytes_per_parameter(options: TransformersOptions) -> float:
    """The least a parameter can take in this load (quantized layers' share; the rest
    is at least 16-bit), for the size preflight."""
    if options.load_in_4bit:
        return 0.5
    if options.load_in_8bit:
        return 1.0
    # cpu-int8 ends at ~1 byte but loads through bf16 first: its peak is 2 bytes.
    return 4.0 if options.dtype == "fp32" else 2.0


def input_device(model) -> str:
    """Where a request's token ids go: the first device that computes.  With offload,
    model.device can be "meta" (weights on disk) or a later shard's device."""
    placement = getattr(model, "hf_device_map", None)
    if placement:
        for where in placement.values():
            if where not in ("cpu", "disk"):
                return f"cuda:{where}" if isinstance(where, int) else str(where)
        return "cpu"
    return str(model.device)


def context_length(config) -> int:
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in ("max_position_embeddings", "n_positions", "seq_length"):
        value = getattr(text_config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
