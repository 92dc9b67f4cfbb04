"""What the llama.cpp worker process costs: GGUF decoding through the worker
(webui/loaders/gguf_process.py, the default) vs llama.cpp in the server's own process
(LlamaCppLoader(isolate=False), as before), and through our API vs llama-cpp-python's
own server on the same file.

    .venv/bin/python bench/bench_gguf_worker.py [--tokens 96] [--rounds 3] [--streams 8]

Models: the bundled demo GGUF (models/demo-kjv-4m-gguf, Q8_0, a decode step well under
a millisecond: the worst case for a per-step round trip) and a ~60M-parameter random
Llama converted to Q8_0 (built once into --work-dir; vocab 32000, so each step's
logits are 125 KiB a row).

- One backend.step's median wall time, worker - in process: the boundary's own cost.
- Engine tokens/s, single stream: a --tokens greedy request (its one-call prefill of a
  short prompt included), in-process and worker engines loaded side by side, rounds
  alternated so a change in the machine's load hits both alike.
- Aggregate tokens/s of --streams concurrent greedy streams, alternated the same way.
- Single-stream decode through our OpenAI API, worker and in process, ÷ `python -m
  llama_cpp.server` on the same file and threads (bench/bench_gguf.py's method; the
  random model only: the demo's end-of-turn token is not banned there), sides alternated.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_gguf import concurrent_rate, decode_rate, free_port, start_llama_cpp_server  # noqa: E402
from report import figure  # noqa: E402
from webui.generation.params import make_params  # noqa: E402
from webui.settings import PROJECT_ROOT, Settings  # noqa: E402

PROMPT = "And God said, Let there be light: and there was light."
DEMO = PROJECT_ROOT / "models" / "demo-kjv-4m-gguf"
SHAPE = dict(hidden_size=512, num_hidden_layers=8, intermediate_size=1536, num_attention_heads=8,
             num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)


def build_mid(work: Path) -> Path:
    """A ~60M-parameter random Llama as Q8_0 GGUF, built once."""
    gguf = work / "bench-llama-60m-q8_0.gguf"
    if gguf.is_file():
        return gguf
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tests.tiny_models import build_tokenizer
    from webui.loaders.gguf_convert import convert, fetch_converter

    folder = work / "bench-llama-60m"
    build_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = LlamaConfig(**SHAPE, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return convert(folder, gguf, "q8_0", fetch_converter())


def engine_for(model_dir: Path, name: str, isolate: bool, threads: int):
    from webui.generation.backend import ServingOptions
    from webui.generation.engine import GenerationEngine
    from webui.loaders.gguf_loader import LlamaCppLoader
    from webui.loaders.registry import LoaderRegistry
    from webui.model_manager import ModelManager
    from webui.runtime import load_options

    settings = Settings(model_dir=model_dir, threads=threads, threads_batch=threads, n_ctx=2048)
    registry = LoaderRegistry([LlamaCppLoader(ServingOptions(), isolate=isolate)])
    manager = ModelManager(model_dir, registry, load_options(settings))
    manager.load(name)
    return manager, GenerationEngine(manager)


def greedy(engine, tokens: int, owner: str = "bench") -> tuple[float, int]:
    from webui.generation.request import GenerationRequest

    params = make_params({"do_sample": False, "max_new_tokens": tokens, "ban_eos_token": True})
    start = time.perf_counter()
    stream = engine.generate(GenerationRequest(PROMPT, params, owner=owner))
    stream.text()
    return time.perf_counter() - start, stream.stats.new_tokens


def single_rate(engine, tokens: int) -> float:
    """Tokens/s of one greedy request of `tokens` tokens (its one-call prefill of a short
    prompt included: the same on both sides; a short/long difference goes negative when
    the machine's load changes between the two)."""
    seconds, n = greedy(engine, tokens)
    return n / seconds


def step_micros(manager, steps: int = 300) -> float:
    """Median wall time of one backend.step, one sequence (the boundary's cost alone)."""
    with manager.use() as loaded:
        backend = loaded.backend
        slot = backend.start(loaded.tokenizer(PROMPT)["input_ids"])
        token, times = int(slot.logits.argmax()), []
        for _ in range(steps):
            start = time.perf_counter()
            token = int(backend.step([slot], [token]).argmax())
            times.append(time.perf_counter() - start)
        backend.finish(slot, keep=False)
    return statistics.median(times) * 1e6


def streams_rate(engine, tokens: int, streams: int) -> float:
    return concurrent_rate(lambda index: greedy(engine, tokens, owner=f"s{index}")[1], streams)


def compare_engines(model_dir: Path, name: str, args) -> None:
    sides = {isolate: engine_for(model_dir, name, isolate, args.threads) for isolate in (False, True)}
    single: dict[bool, list[float]] = {False: [], True: []}
    many: dict[bool, list[float]] = {False: [], True: []}
    step: dict[bool, list[float]] = {False: [], True: []}
    try:
        for engine in (e for _, e in sides.values()):  # warm both
            greedy(engine, 8)
        for round_ in range(args.rounds):
            order = (False, True) if round_ % 2 == 0 else (True, False)
            for isolate in order:
                step[isolate].append(step_micros(sides[isolate][0]))
            for isolate in order:
                single[isolate].append(single_rate(sides[isolate][1], args.tokens))
            for isolate in order:
                many[isolate].append(streams_rate(sides[isolate][1], args.tokens, args.streams))
    finally:
        for manager, engine in sides.values():
            engine.close()
            manager.unload()
    inproc, worker = statistics.median(step[False]), statistics.median(step[True])
    print(f"{name}: one backend.step: worker {worker:.0f} µs, in process {inproc:.0f} µs", flush=True)
    figure(f"{name}, one decode step (backend.step, one sequence), µs: worker − in process", f"{worker - inproc:.0f}",
           f"{worker:.0f} vs {inproc:.0f} µs, medians of {args.rounds} alternated rounds of 300 steps")
    for label, rates, streams in (("single stream", single, 1), (f"{args.streams} streams", many, args.streams)):
        inproc, worker = statistics.median(rates[False]), statistics.median(rates[True])
        spread = [f"{w / i:.2f}" for w, i in zip(rates[True], rates[False], strict=True)]
        print(f"{name}: {label}: worker {worker:.1f} tok/s, in process {inproc:.1f} tok/s, ratio {worker / inproc:.3f} "
              f"(per round {', '.join(spread)})", flush=True)
        figure(f"{name}, {label} decode tokens/s, llama.cpp worker ÷ in process", f"{worker / inproc:.2f}",
               f"{worker:.1f} vs {inproc:.1f} tok/s, median of {args.rounds} alternated rounds "
               f"(rounds: {', '.join(spread)}), {args.threads} threads" + (", aggregate" if streams > 1 else ""))


def serve(model_dir: Path, name: str, args, user_data: Path, isolate: bool):
    """Our runtime and API on `name`, llama.cpp in the worker or in process."""
    from webui.api.openai_api import APIServer
    from webui.runtime import build_runtime

    settings = Settings(model=None, model_dir=model_dir, user_data_dir=user_data,
                        presets_dir=PROJECT_ROOT / "presets", preset="Deterministic", api_key=KEY,
                        n_ctx=2048, threads=args.threads, threads_batch=args.threads)
    runtime = build_runtime(settings, use_remembered=False)
    runtime.models.registry.get("llama.cpp").isolate = isolate
    runtime.load_model(name, save=False)
    server = APIServer(runtime, port=free_port())
    return runtime, server, server.start()


KEY = "bench-key"


def compare_servers(model_dir: Path, name: str, args) -> None:
    """Single-stream decode through our API (worker, in process) and llama_cpp.server."""
    with tempfile.TemporaryDirectory() as user_data:
        ours = {isolate: serve(model_dir, name, args, Path(user_data) / str(isolate), isolate)
                for isolate in (True, False)}
        theirs, their_url = start_llama_cpp_server(model_dir / name, args.threads)
        try:
            results: dict[str, list[float]] = {}
            sides = (("worker", ours[True][2], KEY, name), ("in process", ours[False][2], KEY, name),
                     ("llama_cpp.server", their_url, None, name))
            for side, url, key, model in sides + sides[::-1]:
                results.setdefault(side, []).append(decode_rate(url, model, args.tokens, args.rounds, key))
        finally:
            theirs.terminate()
            theirs.wait(30)
            for runtime, server, _ in ours.values():
                server.stop()
                runtime.models.unload()
                runtime.engine.close()
    rate = {side: statistics.median(values) for side, values in results.items()}
    worker, inproc, server = rate["worker"], rate["in process"], rate["llama_cpp.server"]
    print(f"{name}: single stream through the API: worker {worker:.1f}, in process {inproc:.1f}, "
          f"llama_cpp.server {server:.1f} tok/s", flush=True)
    for side, value in (("worker", worker), ("in process", inproc)):
        figure(f"{name}, single-stream decode tokens/s through the API, ours ({side}) ÷ `python -m llama_cpp.server`",
               f"{value / server:.2f}", f"{value:.1f} vs {server:.1f} tok/s, {args.threads} threads, sides alternated")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "webui-bench-gguf-worker")
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--threads", type=int, default=max((os.cpu_count() or 2) // 2, 1))
    parser.add_argument("--skip-server", action="store_true", help="leave out the llama_cpp.server comparison")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    mid = build_mid(args.work_dir)
    print(f"{args.threads} threads, {args.tokens} tokens, {args.rounds} rounds; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    for model_dir, name in ((DEMO.parent, DEMO.name), (mid.parent, mid.name)):
        compare_engines(model_dir, name, args)
    if not args.skip_server:  # the demo's end-of-turn token is not banned by bench_gguf's requests: not it
        compare_servers(mid.parent, mid.name, args)
    print(f"load average at the end {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
