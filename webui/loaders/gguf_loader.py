"""The llama.cpp loader: GGUF files through llama-cpp-python.

An optional extra (`pip install -e '.[gguf]'`): without it GGUF entries are still
listed, and loading one says how to install it (INSTALL_HINT).  The file is checked
with the `gguf` reader first (not GGUF, truncated, a split part missing: a clear
LoadError, nothing loaded), then llama.cpp maps it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from webui.generation.backend import ServingOptions
from webui.loaders.base import LoadedModel, LoadError
from webui.loaders.gguf_files import choose_file, is_gguf_entry, projector_file, read_info
from webui.loaders.cpu_features import cpu_flags
from webui.loaders.gguf_options import INSTALL_HINT, LlamaCppOptions
from webui.loaders.llama_build import avoid_amx, build_problem

log = logging.getLogger(__name__)

# n_ctx 0: the model's context, but not more than this: llama.cpp allocates the whole
# KV cache up front, and models that claim 128k would take tens of GiB for it.
DEFAULT_MAX_CONTEXT = 8192
# Finished sequences kept for prefix reuse beside the running ones (each costs only
# the cache cells it holds, which are given back first when the cache is full).
KEPT_SEQUENCES = 8
CACHE_TYPES = {"fp16": "GGML_TYPE_F16", "q8_0": "GGML_TYPE_Q8_0", "q4_0": "GGML_TYPE_Q4_0"}


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:
        raise LoadError(INSTALL_HINT) from exc
    from webui.loaders.llama_logs import route_llama_logs

    # llama.cpp's hundreds of INFO lines per load go to the "llama.cpp" logger, which
    # shows warnings and errors only (webui/loaders/llama_logs.py says why).
    route_llama_logs(llama_cpp)
    return llama_cpp


def cache_type_problem(options: LlamaCppOptions, info) -> str | None:
    """Why llama.cpp cannot hold this model's KV cache in --cache-type, or None.  Checked
    before loading: llama.cpp itself fails the context (V cache) or aborts the process
    (a head that does not fill whole blocks) instead of saying why."""
    if options.cache_type == "fp16":
        return None
    if not options.flash_attn:
        return (f"--cache-type {options.cache_type} needs --flash-attn (llama.cpp quantizes the "
                "V cache only with flash attention)")
    if info.key_length % 32 or info.value_length % 32:
        # q8_0/q4_0 store blocks of 32 values: each head's keys and values must fill whole blocks.
        return (f"--cache-type {options.cache_type} needs attention heads of a multiple of 32 values; "
                f"this model's are {info.key_length} (keys) and {info.value_length} (values): use fp16")
    return None


def default_threads(batch: bool, cpus: list[int] | None = None,
                    topology: dict[int, tuple[str, str]] | None = None) -> int:
    """Decoding: one thread per physical core this process may run on, as llama.cpp's own
    default (a second hardware thread on a core only competes for the same units; half the
    logical CPUs, llama-cpp-python's default, is one thread on a 2-core machine without
    SMT).  Prompts: every logical CPU.  `cpus` (the ones this process may use) and
    `topology` (CPU -> (package, core)) are read from Linux unless given, as tests do."""
    if cpus is None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if batch:
        return max(len(cpus), 1)
    topology = cpu_topology(cpus) if topology is None else topology
    # A CPU the topology does not describe counts as a core of its own.
    cores = {topology.get(cpu, ("?", f"cpu{cpu}")) for cpu in cpus}
    return max(len(cores), 1)


def cpu_topology(cpus: list[int]) -> dict[int, tuple[str, str]]:
    """CPU -> (physical package, core) from /sys; CPUs it does not describe are left out."""
    found = {}
    for cpu in cpus:
        base = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            found[cpu] = ((base / "physical_package_id").read_text().strip(), (base / "core_id").read_text().strip())
        except OSError:
            continue
    return found


def gpu_offload_built() -> bool:
    """Whether the installed llama-cpp-python was built with a GPU backend."""
    try:
        import llama_cpp
    except ImportError:
        return False
    return bool(llama_cpp.llama_supports_gpu_offload())


class LlamaCppLoader:
    name = "llama.cpp"
    options_schema = LlamaCppOptions

    def __init__(self, serving: ServingOptions | None = None, isolate: bool = True):
        self.serving = serving or ServingOptions()
        # True: llama.cpp runs in a worker process of its own (webui/loaders/gguf_process.py),
        # so a crash inside it ends that process, not the server.  False: in this process.
        self.isolate = isolate

    def can_load(self, path: Path) -> bool:
        return is_gguf_entry(path)

    def load(self, name: str, path: Path, options: LlamaCppOptions) -> LoadedModel:
        from webui.fit import available_ram

        file = choose_file(path, options.gguf_file, room=available_ram())
        info = read_info(file)  # refuses a corrupt or truncated file before llama.cpp sees it
        problem = cache_type_problem(options, info)
        if problem:
            raise LoadError(f"{name}: {problem}")
        lib = import_llama_cpp()
        problem = build_problem(lib.llama_print_system_info().decode(errors="replace"), cpu_flags())
        if problem:  # it would die of an illegal instruction: say why instead
            raise LoadError(f"{name}: {problem}")
        projector = projector_file(path)  # a vision model's mmproj, loaded with it
        if self.isolate:
            from webui.loaders.gguf_process import LlamaCppWorker

            backend = LlamaCppWorker.spawn(name, file, info, options, self.serving, projector)
        else:
            backend = open_backend(lib, name, file, info, options, self.serving, projector=projector)
        on_gpu = options.n_gpu_layers != 0 and bool(lib.llama_supports_gpu_offload())
        return LoadedModel(
            name=name, folder=path, loader=self.name, model=info, tokenizer=backend.tokenizer,
            device="gpu+cpu" if on_gpu else "cpu", dtype=info.file_type, context_length=backend.n_ctx,
            parameters=info.parameters, options=options, backend=backend,
        )

    def unload(self, loaded: LoadedModel) -> None:
        if loaded.backend is not None:
            loaded.backend.close()
        loaded.backend = None
        loaded.model = None
        loaded.tokenizer = None

    @staticmethod
    def _model_params(lib, options: LlamaCppOptions, vocab_only: bool = False):
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0x7FFFFFFF if options.n_gpu_layers == -1 else options.n_gpu_layers
        mmap = not options.no_mmap
        if hasattr(params, "load_mode"):  # llama.cpp replaced use_mmap/use_mlock with one mode
            modes = {(True, True): "LLAMA_LOAD_MODE_MMAP_MLOCK", (False, True): "LLAMA_LOAD_MODE_MLOCK",
                     (True, False): "LLAMA_LOAD_MODE_MMAP", (False, False): "LLAMA_LOAD_MODE_NONE"}
            params.load_mode = getattr(lib, modes[(mmap, options.mlock)])
        else:
            params.use_mmap, params.use_mlock = mmap, options.mlock
        params.vocab_only = vocab_only
        if options.tensor_split:
            shares = list(options.tensor_split)[: lib.LLAMA_MAX_DEVICES]
            split = (ctypes_float_array(lib.LLAMA_MAX_DEVICES))(*shares)
            params.tensor_split = split  # ctypes keeps the array alive with the struct
        return params

    @staticmethod
    def _context_params(lib, options: LlamaCppOptions, n_ctx: int, n_seq: int, max_batch: int):
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        # llama.cpp caps a call's tokens at min(n_batch, n_ctx); the backend chunks prompts to that.
        params.n_batch = max(min(options.n_batch, n_ctx), max_batch)
        params.n_ubatch = min(params.n_batch, 512)
        params.n_seq_max = n_seq
        # One pool of cells for every sequence: a lone request may use the whole context,
        # and copying a kept prefix to another sequence moves no data.
        params.kv_unified = True
        params.n_threads = options.threads or default_threads(batch=False)
        params.n_threads_batch = options.threads_batch or default_threads(batch=True)
        params.flash_attn_type = (lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if options.flash_attn
                                  else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        cache = getattr(lib, CACHE_TYPES[options.cache_type])
        params.type_k = params.type_v = cache
        if options.rope_freq_base:
            params.rope_freq_base = options.rope_freq_base
        params.no_perf = True
        return params


def open_backend(lib, name: str, file: Path, info, options: LlamaCppOptions,
                 serving: ServingOptions, chat_template: str | None = None, projector: Path | None = None):
    """Load `file` (and the image projector `projector`, if any) with llama.cpp in this
    process and return its LlamaCppBackend (the one thing that touches llama.cpp's
    weights and context: the worker process runs exactly this,
    webui/loaders/gguf_worker.py).  Raises LoadError; leaves nothing behind."""
    lib.llama_backend_init()
    params = LlamaCppLoader._model_params(lib, options)
    if avoid_amx(lib.llama_print_system_info().decode(errors="replace"), cpu_flags()):
        # llama.cpp's AMX matmul segfaults on quantized weights (llama_build.py).
        log.warning("llama.cpp was built with AMX: its AMX (and repacking) buffers are kept off")
        params.use_extra_bufts = False
    model = lib.llama_model_load_from_file(str(file).encode(), params)
    if not model:
        raise LoadError(f"{name}: llama.cpp could not load {file.name} (the server log says why)")
    ctx = vision = None
    try:
        trained = int(lib.llama_model_n_ctx_train(model)) or info.context_length
        n_ctx = options.n_ctx or min(trained, DEFAULT_MAX_CONTEXT)
        max_batch = serving.max_batch
        n_seq = min(max_batch + KEPT_SEQUENCES, int(lib.llama_max_parallel_sequences()))
        max_batch = min(max_batch, n_seq)
        ctx = lib.llama_init_from_model(model, LlamaCppLoader._context_params(lib, options, n_ctx, n_seq, max_batch))
        if not ctx:
            raise LoadError(f"{name}: llama.cpp could not create a {n_ctx}-token context "
                            "(out of memory? try a smaller --n-ctx or --cache-type q8_0)")
        from webui.loaders.gguf_backend import LlamaCppBackend
        from webui.loaders.gguf_tokenizer import GGUFTokenizer

        if projector is not None:
            from webui.loaders.gguf_vision import Projector

            vision = Projector.open(projector, model, options.threads_batch or default_threads(batch=True))
        tokenizer = GGUFTokenizer(lib, model, chat_template if chat_template is not None else info.chat_template)
        return LlamaCppBackend(
            lib, model, ctx, tokenizer, n_ctx=n_ctx, n_batch=min(options.n_batch, n_ctx), max_batch=max_batch,
            n_seq=n_seq, prefix_cache=serving.prefix_cache_bytes > 0, projector=vision)
    except BaseException:
        if vision is not None:
            vision.close()
        if ctx:
            lib.llama_free(ctx)
        lib.llama_model_free(model)
        raise


def ctypes_float_array(n: int):
    import ctypes

    return ctypes.c_float * n
