"""GGUF through llama.cpp: our API vs llama-cpp-python's own server, 4 streams vs 1, and
GGUF Q8_0 vs Transformers (--dtype auto), on one ~0.47B random-weight Llama, in one run.

    .venv/bin/python bench/bench_gguf.py [--tokens 64] [--rounds 3] [--threads 2]

The model (hidden 1024, 24 layers, intermediate 4608, 16 heads, 4 KV heads, vocab
32000; random weights, the tests' SentencePiece tokenizer) is built once into
--work-dir and converted to Q8_0 with scripts/convert_to_gguf.py's converter.

- Decode tokens/s, single stream, through our OpenAI API and through `python -m
  llama_cpp.server` on the same file with the same threads.  Decode rate = extra
  tokens / extra seconds between a short and a long greedy request (prompt processing
  and HTTP overhead cancel out).  End-of-text is banned by logit_bias on both sides.
- Aggregate tokens/s of 4 concurrent streams / 1 stream, on both servers.
- Our engine's decode tokens/s with the Q8_0 file (llama.cpp loader) / with the
  safetensors (Transformers loader, `--dtype auto`: fp16 on fbgemm on AVX2 CPUs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from report import figure  # noqa: E402
from webui.generation.params import make_params  # noqa: E402
from webui.settings import PROJECT_ROOT, Settings  # noqa: E402

PROMPT = "And God said, Let there be light: and there was light."
SHAPE = dict(hidden_size=1024, num_hidden_layers=24, intermediate_size=4608, num_attention_heads=16,
             num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)


def build_folder(work: Path) -> Path:
    """The fp32 Transformers folder, built once."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tests.tiny_models import build_tokenizer

    folder = work / "bench-llama-0.47b"
    if not (folder / "model.safetensors").is_file():
        build_tokenizer(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        config = LlamaConfig(**SHAPE, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        print(f"built a {model.num_parameters() / 1e9:.2f}B-parameter random Llama", flush=True)
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        del model
    return folder


def build_model(work: Path) -> tuple[Path, Path]:
    """The fp32 Transformers folder and its Q8_0 GGUF, built once."""
    from webui.loaders.gguf_convert import convert, fetch_converter

    folder, gguf = build_folder(work), work / "bench-llama-0.47b-q8_0.gguf"
    if not gguf.is_file():
        convert(folder, gguf, "q8_0", fetch_converter())
    return folder, gguf


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def complete(url: str, model: str, tokens: int, key: str | None, prompt: str = PROMPT) -> tuple[float, int]:
    """One greedy, non-streaming completion: (seconds, completion tokens)."""
    body = {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "logit_bias": {"2": -100}}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    start = time.perf_counter()
    reply = httpx.post(f"{url}/completions", json=body, headers=headers, timeout=600)
    reply.raise_for_status()
    return time.perf_counter() - start, reply.json()["usage"]["completion_tokens"]


def decode_rate(url: str, model: str, tokens: int, rounds: int, key: str | None) -> float:
    """Decode tokens/s: (long - short) tokens over (long - short) seconds, median of rounds."""
    rates = []
    for _ in range(rounds):
        short_s, short_n = complete(url, model, 8, key)
        long_s, long_n = complete(url, model, tokens + 8, key)
        rates.append((long_n - short_n) / (long_s - short_s))
    return statistics.median(rates)


def aggregate(url: str, model: str, tokens: int, streams: int, key: str | None) -> float:
    """Tokens/s over all streams, `streams` requests sent at once."""
    return concurrent_rate(lambda index: complete(url, model, tokens, key)[1], streams)


def concurrent_rate(run_one, streams: int) -> float:
    """Tokens/s over `streams` calls of run_one(index) -> tokens, released together."""
    counts: list[int] = []
    gate = threading.Barrier(streams)

    def one(index: int) -> None:
        gate.wait()
        counts.append(run_one(index))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - start)


def engine_rate(runtime, tokens: int, rounds: int) -> float:
    """Our engine's decode tokens/s, single stream (short/long difference as above)."""
    rates = []
    for _ in range(rounds):
        timings = []
        for n in (8, tokens + 8):
            params = make_params({"do_sample": False, "max_new_tokens": n, "ban_eos_token": True})
            start = time.perf_counter()
            stream = runtime.stream("bench", PROMPT, params)
            "".join(stream)
            timings.append((time.perf_counter() - start, stream.stats.new_tokens))
        (short_s, short_n), (long_s, long_n) = timings
        rates.append((long_n - short_n) / (long_s - short_s))
    return statistics.median(rates)


TYPICAL = {"temperature": 0.9, "min_p": 0.05, "repetition_penalty": 1.1, "dry_multiplier": 0.8}
EVERY = dict(repetition_penalty=1.1, presence_penalty=0.2, frequency_penalty=0.2, dry_multiplier=0.8,
             top_n_sigma=2.0, temperature=0.9, smoothing_factor=0.3, top_k=40, top_p=0.95, typical_p=0.95,
             epsilon_cutoff=3.0, eta_cutoff=3.0, tfs=0.95, top_a=0.1, min_p=0.05, xtc_probability=0.5,
             no_repeat_ngram_size=6, mirostat_mode=2)


def chain_ms(loaded, values: dict, n: int = 50) -> float:
    """Our sampler chain's cost per token (ms) on this model's vocabulary, 1,000-token context:
    the Python work that running llama.cpp's native samplers instead would save."""
    import torch

    from webui.generation.chain import build_chain

    backend = loaded.backend
    vocab = backend.vocab_size()
    chain = build_chain(make_params(values), loaded.tokenizer, backend, vocab, backend.eos_ids(),
                        torch.Generator().manual_seed(0))
    context, logits = torch.randint(0, vocab, (1, 1000)), torch.randn(1, vocab)
    start = time.perf_counter()
    for _ in range(n):
        torch.multinomial(torch.softmax(chain(context, logits), -1), 1)
    return (time.perf_counter() - start) / n * 1e3


def start_llama_cpp_server(gguf: Path, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads), "--n_threads_batch",
               str(threads), "--model_alias", gguf.name]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    url = f"http://127.0.0.1:{port}/v1"
    return wait_until_serving(server, url, "llama_cpp.server"), url


def wait_until_serving(server: subprocess.Popen, url: str, what: str, seconds: float = 600) -> subprocess.Popen:
    """`server` once its /models answers; killed and an error if it exits or takes longer."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{what} exited")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"{what} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "webui-bench-gguf")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    # llama-cpp-python's default: half the cores (on a busy machine more threads can be far slower:
    # llama.cpp's threads spin at each barrier, docs/PERFORMANCE.md).
    parser.add_argument("--threads", type=int, default=max((os.cpu_count() or 2) // 2, 1))
    args = parser.parse_args()
    from webui.api.openai_api import APIServer
    from webui.runtime import build_runtime

    args.work_dir.mkdir(parents=True, exist_ok=True)
    folder, gguf = build_model(args.work_dir)
    key = "bench-key"
    print(f"model {gguf.name} ({gguf.stat().st_size / (1 << 20):.0f} MiB), {args.threads} threads, "
          f"{args.tokens} tokens, {args.rounds} rounds; load average {os.getloadavg()[0]:.1f}", flush=True)

    with tempfile.TemporaryDirectory() as user_data:
        settings = Settings(model=gguf.name, model_dir=args.work_dir, user_data_dir=Path(user_data),
                            presets_dir=PROJECT_ROOT / "presets", preset="Deterministic", api_key=key,
                            n_ctx=2048, threads=args.threads, threads_batch=args.threads)
        runtime = build_runtime(settings, use_remembered=False)
        if runtime.models.current is None:
            raise SystemExit(f"the GGUF model did not load: {runtime.warnings}")
        ours = APIServer(runtime, port=free_port())
        our_url = ours.start()
        theirs, their_url = start_llama_cpp_server(gguf, args.threads)
        try:
            results = {}
            # Alternate sides so a change in the machine's load hits both alike.
            for name, url, k in (("ours", our_url, key), ("llama_cpp.server", their_url, None)) * 2:
                results.setdefault(name, []).append(decode_rate(url, gguf.name, args.tokens, args.rounds, k))
            ours_1, theirs_1 = statistics.median(results["ours"]), statistics.median(results["llama_cpp.server"])
            print(f"single stream decode: ours {ours_1:.2f} tok/s, llama_cpp.server {theirs_1:.2f} tok/s, "
                  f"ratio {ours_1 / theirs_1:.2f}", flush=True)
            figure("single-stream decode tokens/s, ours ÷ `python -m llama_cpp.server`", f"{ours_1 / theirs_1:.2f}",
                   f"{ours_1:.2f} vs {theirs_1:.2f} tok/s; {gguf.name} "
                   f"({gguf.stat().st_size / (1 << 20):.0f} MiB), {args.threads} threads, sides alternated")
            for name, url, k in (("ours", our_url, key), ("llama_cpp.server", their_url, None)):
                one = aggregate(url, gguf.name, args.tokens, 1, k)
                four = aggregate(url, gguf.name, args.tokens, 4, k)
                print(f"{name}: 1 stream {one:.2f} tok/s, 4 streams {four:.2f} tok/s aggregate, "
                      f"ratio {four / one:.2f}", flush=True)
                figure(f"4 concurrent streams ÷ 1, aggregate tokens/s, {name}", f"{four / one:.2f}",
                       f"{four:.2f} vs {one:.2f} tok/s")
            gguf_engine = engine_rate(runtime, args.tokens, args.rounds)
            loaded = runtime.models.current
            print(f"sampler chain per token, vocab {loaded.backend.vocab_size()}: min_p+DRY+repetition "
                  f"{chain_ms(loaded, TYPICAL):.1f} ms, every sampler {chain_ms(loaded, EVERY):.1f} ms; "
                  f"a GGUF decode step {1e3 / gguf_engine:.1f} ms", flush=True)
        finally:
            theirs.terminate()
            theirs.wait(30)
            ours.stop()
        import torch

        torch.set_num_threads(args.threads)
        runtime.load_model(folder.name, save=False)
        hf_engine = engine_rate(runtime, args.tokens, args.rounds)
        weights = runtime.models.current.dtype  # --dtype auto: what this CPU computes fastest in
        print(f"engine decode: GGUF Q8_0 {gguf_engine:.2f} tok/s, Transformers {weights} {hf_engine:.2f} tok/s, "
              f"ratio {gguf_engine / hf_engine:.2f}", flush=True)
        figure(f"our engine, same weights: GGUF Q8_0 ÷ Transformers {weights} (--dtype auto), tokens/s",
               f"{gguf_engine / hf_engine:.2f}", f"{gguf_engine:.2f} vs {hf_engine:.2f} tok/s, one stream")


if __name__ == "__main__":
    main()
