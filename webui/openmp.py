"""One OpenMP thread pool at a time: a thread that stops computing gives its pool back.

Why: torch's CPU kernels run on OpenMP, and GNU libgomp (what Linux builds of torch
ship) gives every thread that runs a parallel op a pool of worker threads of its own,
kept until that thread exits.  Once the pools hold more threads than the machine has
CPUs, libgomp makes every worker sleep between parallel regions instead of spinning
for a few milliseconds, and each of the ~170 matmuls of a decoding step then waits for
a worker to wake up.  The model is loaded on one thread (start-up, or the Model tab's)
and decoded on another (the engine's model thread), so that was the normal case: on
this 2-core machine the ~0.47B Llama decoded at ~100 ms a token instead of ~65 ms
(bench/bench_openmp.py measures it).

So every place that computes on the model off the model thread (a load, a LoRA change,
a lent job) calls `release_thread_pool()` when done, and so does the model thread once
it has been idle for a second (webui/generation/engine.py): the next parallel op on that
thread builds a pool again, which costs about a millisecond.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

OMP_PAUSE_HARD = 2  # omp_pause_resource_kind: free the pool's threads, not just idle them


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _library_of(function: ctypes._CFuncPtr) -> str:
    """The file of the shared library a resolved C function lives in."""
    info = _DlInfo()
    address = ctypes.cast(function, ctypes.c_void_p)
    try:
        found = ctypes.CDLL(None).dladdr(address, ctypes.byref(info))
    except AttributeError:  # a C library without dladdr
        return ""
    if not found or not info.dli_fname:
        return ""
    return info.dli_fname.decode(errors="replace")


@functools.cache
def _pause_this_thread() -> Callable[[int], int] | None:
    """libgomp's omp_pause_resource_all as torch's own kernels see it, or None where
    torch runs on another threading runtime (LLVM's libomp pauses the whole process,
    not one thread's pool, so it is left alone) or this libgomp predates OpenMP 5."""
    if not sys.platform.startswith("linux"):
        return None
    import torch

    libraries = sorted((Path(torch.__file__).parent / "lib").glob("libtorch_cpu.so*"))
    if not libraries:
        return None
    try:
        # Resolved through libtorch_cpu's own dependencies: the libgomp torch uses, not
        # another copy a different package vendors (sentencepiece ships one).
        pause = ctypes.CDLL(str(libraries[0])).omp_pause_resource_all
    except (OSError, AttributeError):
        return None
    if "libgomp" not in Path(_library_of(pause)).name:
        return None
    pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
    return pause


def release_thread_pool() -> bool:
    """Free the calling thread's OpenMP worker threads (none are running: only this thread
    could have started them); False where that is not possible here."""
    pause = _pause_this_thread()
    if pause is None:
        return False
    if pause(OMP_PAUSE_HARD) != 0:  # called inside a parallel region: nothing to free
        log.debug("this thread's OpenMP pool could not be released")
        return False
    return True


@contextmanager
def pool_released_after() -> Iterator[None]:
    """Compute in the block; the calling thread's OpenMP pool is freed when it ends."""
    try:
        yield
    finally:
        release_thread_pool()
