"""Embeddings through /v1/embeddings: one request of N texts (one padded forward) vs the
same N texts one request each, same model, one run; and while a reply streams.

    .venv/bin/python bench/bench_embeddings.py [--model demo-kjv-4m] [--texts 32] [--rounds 7]

Prints texts/s and tokens/s for each way, the ratio batched / one by one (per-round
median), and how much a streaming reply's tokens/s drops while embeddings run beside
it on the same model thread.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from bench_api import free_port
from common import bench_parser
from report import figure

from webui.api.openai_api import APIServer
from webui.runtime import build_runtime
from webui.settings import Settings

# Sentences of different lengths (6 to ~40 tokens): a padded batch pays for its padding.
WORDS = "and the lord spake unto moses saying speak unto the children of israel that they go forward".split()


def texts(count: int) -> list[str]:
    return [" ".join(WORDS[: 4 + (i * 7) % len(WORDS)] * (1 + i % 3)) for i in range(count)]


def main() -> None:
    parser = bench_parser(__doc__, rounds=7)
    parser.add_argument("--texts", type=int, default=32)
    args = parser.parse_args()
    inputs = texts(args.texts)
    with tempfile.TemporaryDirectory() as user_data:
        settings = Settings(model=args.model, model_dir=args.model_dir, user_data_dir=Path(user_data))
        runtime = build_runtime(settings, use_remembered=False)
        server = APIServer(runtime, port=free_port())
        url = server.start()
        with httpx.Client(timeout=300) as client:

            def batched() -> tuple[float, int]:
                start = time.perf_counter()
                answer = client.post(f"{url}/embeddings", json={"model": args.model, "input": inputs}).json()
                return time.perf_counter() - start, answer["usage"]["prompt_tokens"]

            def one_by_one() -> float:
                start = time.perf_counter()
                for text in inputs:
                    client.post(f"{url}/embeddings", json={"model": args.model, "input": text}).raise_for_status()
                return time.perf_counter() - start

            def stream_rate(during: bool) -> float:
                body = {"model": args.model, "prompt": "And God said", "max_tokens": args.tokens,
                        "temperature": 0, "stream": True, "ban_eos_token": True}
                stop = threading.Event()

                def embed_meanwhile() -> None:
                    with httpx.Client(timeout=300) as other:
                        while not stop.is_set():
                            other.post(f"{url}/embeddings", json={"model": args.model, "input": inputs})

                worker = threading.Thread(target=embed_meanwhile) if during else None
                if worker:
                    worker.start()
                start = time.perf_counter()
                with client.stream("POST", f"{url}/completions", json=body) as response:
                    for _ in response.iter_lines():
                        pass
                rate = args.tokens / (time.perf_counter() - start)
                stop.set()
                if worker:
                    worker.join()
                return rate

            batched(), one_by_one()  # warm-up
            rows = []
            for _ in range(args.rounds):
                (seconds, tokens), single = batched(), one_by_one()
                rows.append((seconds, single, tokens))
            quiet = [stream_rate(False) for _ in range(3)]
            busy = [stream_rate(True) for _ in range(3)]
        server.stop()
    print(f"model: {runtime.models.current.describe()}")
    tokens = rows[0][2]
    batch_s = statistics.median(r[0] for r in rows)
    single_s = statistics.median(r[1] for r in rows)
    print(f"{args.texts} texts, {tokens} tokens")
    print(f"batched:    {args.texts / batch_s:8.1f} texts/s {tokens / batch_s:9.1f} tokens/s")
    print(f"one by one: {args.texts / single_s:8.1f} texts/s {tokens / single_s:9.1f} tokens/s")
    print(f"batched / one by one: {statistics.median(r[1] / r[0] for r in rows):.2f}x (per-round median)")
    print(f"a streaming reply: {statistics.median(quiet):.1f} tokens/s alone, {statistics.median(busy):.1f} "
          f"tokens/s with embedding requests running beside it "
          f"({statistics.median(busy) / statistics.median(quiet):.2f})")
    figure("embeddings: one request of N texts ÷ N requests, texts/s",
           f"{statistics.median(r[1] / r[0] for r in rows):.2f}x",
           f"{args.texts} texts, {tokens} tokens; {args.texts / batch_s:.1f} vs {args.texts / single_s:.1f} texts/s")
    figure("a stream's tokens/s with embeddings running beside it ÷ alone",
           f"{statistics.median(busy) / statistics.median(quiet):.2f}",
           f"{statistics.median(busy):.1f} vs {statistics.median(quiet):.1f} tokens/s, {args.tokens}-token stream")


if __name__ == "__main__":
    main()
