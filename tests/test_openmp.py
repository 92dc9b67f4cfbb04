"""A thread that stops computing on the model gives its OpenMP pool back (webui/openmp.py):
with more pool threads than CPUs, libgomp makes every worker sleep between parallel
regions, and decoding on the model thread ran 1.5x slower (bench/bench_openmp.py).
The model thread keeps its pool while requests come and gives it back once idle."""

from __future__ import annotations

import os
import threading

import pytest
import torch
from tests.conftest import TINY, needs_proc, wait_for

from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.generation.params import make_params
from webui.loaders.base import LoadOptions
from webui.loaders.registry import default_registry
from webui.model_manager import ModelManager
from webui.openmp import release_thread_pool

pytestmark = [
    needs_proc,
    pytest.mark.skipif(torch.get_num_threads() < 2, reason="one torch thread: OpenMP starts no workers"),
    pytest.mark.skipif(not release_thread_pool(), reason="torch does not run on GNU libgomp here"),
]


def native_threads() -> set[int]:
    """The process's OS threads that are not Python threads (OpenMP's workers among them)."""
    python = {thread.native_id for thread in threading.enumerate()}
    return {int(tid) for tid in os.listdir("/proc/self/task")} - python


def parallel_op() -> set[int]:
    """Run one op large enough for torch to split over its threads; the OS threads it started."""
    before = native_threads()
    torch.ones(1 << 20).mul_(2)  # far above torch's grain size
    return native_threads() - before


def still_listed(threads: set[int]) -> set[int]:
    """Those of `threads` still alive after a short wait: libgomp joins the workers it
    frees, but the kernel lists an exited thread in /proc for a moment after the join."""
    wait_for(lambda: not threads & native_threads(), timeout=10)
    return threads & native_threads()


def on_a_fresh_thread(job):
    """Run `job` on a new thread (it has no OpenMP pool yet) and return what it returns,
    checked while that thread is still alive: a thread's exit frees its pool anyway."""
    result, error = [], []

    def run():
        try:
            result.append(job())
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            error.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    if error:
        raise error[0]
    return result[0]


def test_releasing_stops_the_threads_workers():
    def job():
        workers = parallel_op()
        assert workers, "the op started no OpenMP workers: nothing to test"
        assert workers <= native_threads()
        assert release_thread_pool()
        left = still_listed(workers)
        assert parallel_op(), "the next parallel op builds a pool again"
        release_thread_pool()
        return left

    assert on_a_fresh_thread(job) == set()


@pytest.fixture
def manager(models_root):
    return ModelManager(models_root, default_registry(), LoadOptions())


def test_a_load_gives_its_threads_pool_back(manager):
    started: list[set[int]] = []

    def job():
        # `adjust` runs inside the load, on the loading thread, like the loader's own ops;
        # the load itself may have started the pool already (the backend probes its
        # layers: webui/loaders/row_attention.py), so every thread it started counts.
        before = native_threads()
        manager.load(TINY, adjust=lambda loaded: started.append(parallel_op() | (native_threads() - before)))
        return still_listed(started[0])

    assert on_a_fresh_thread(job) == set()
    assert started[0], "the load started no OpenMP workers: nothing to test"


def test_a_lent_job_gives_the_pool_back(manager):
    manager.load(TINY)

    def job():
        with manager.lend("a test job"):
            started = parallel_op()
            assert started, "the job started no OpenMP workers: nothing to test"
        return still_listed(started)

    assert on_a_fresh_thread(job) == set()


def test_the_model_thread_gives_its_pool_back_once_idle(manager):
    manager.load(TINY)
    manager.current.tokenizer(["warm", "up"])  # the tokenizer's own threads, if any, start now
    engine = GenerationEngine(manager)
    try:
        before = native_threads()
        params = make_params({"temperature": 0.0, "max_new_tokens": 3})
        assert engine.generate(GenerationRequest("The keeper", params)).text()
        started = native_threads() - before  # the model thread's pool, kept a second after the batch
        if not started:
            pytest.skip("decoding the tiny model ran no parallel op here, or the pool was already gone")
        assert wait_for(lambda: not started & native_threads(), timeout=30)
    finally:
        engine.close()
