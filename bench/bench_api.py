"""Tokens/s through the OpenAI-compatible API (streaming, over loopback) vs the engine
directly, same model and settings, one run.

    .venv/bin/python bench/bench_api.py [--model demo-kjv-4m] [--tokens 100] [--rounds 21]

Both sides decode greedily with the end-of-text token banned, so each round produces
the same number of tokens; rounds alternate; the ratio is API / engine.
"""

from __future__ import annotations

import socket
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from report import figure
from common import PROMPT, bench_parser

from webui.api.openai_api import APIServer
from webui.generation.params import make_params
from webui.runtime import build_runtime
from webui.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    args = bench_parser(__doc__, rounds=21).parse_args()
    with tempfile.TemporaryDirectory() as user_data:
        settings = Settings(model=args.model, model_dir=args.model_dir, user_data_dir=Path(user_data))
        runtime = build_runtime(settings, use_remembered=False)
        server = APIServer(runtime, port=free_port())
        url = server.start()
        params = make_params({"temperature": 0.0, "max_new_tokens": args.tokens, "ban_eos_token": True})
        body = {"model": args.model, "prompt": PROMPT, "max_tokens": args.tokens, "temperature": 0,
                "stream": True, "ban_eos_token": True}

        def direct() -> float:
            start = time.perf_counter()
            stream = runtime.stream("bench", PROMPT, params)
            for _ in stream:
                pass
            return stream.stats.new_tokens / (time.perf_counter() - start)

        def through_api(client: httpx.Client) -> float:
            start = time.perf_counter()
            with client.stream("POST", f"{url}/completions", json=body) as response:
                for _ in response.iter_lines():
                    pass
            return args.tokens / (time.perf_counter() - start)

        with httpx.Client(timeout=120) as client:
            direct(), through_api(client)  # warm-up
            ratios = [through_api(client) / direct() for _ in range(args.rounds)]
        server.stop()
    print(f"model: {runtime.models.current.describe()}")
    quartiles = statistics.quantiles(ratios, n=4)
    print(f"API (streaming, loopback) vs engine: {statistics.median(ratios):.3f} (target >= 0.95; "
          f"per-round quartiles {quartiles[0]:.3f}..{quartiles[2]:.3f})")
    figure("streaming completions over loopback ÷ the engine directly, tokens/s", f"{statistics.median(ratios):.3f}",
           f"median of {args.rounds} rounds of {args.tokens} tokens, quartiles "
           f"{quartiles[0]:.3f}..{quartiles[2]:.3f}; {runtime.models.current.describe()}")


if __name__ == "__main__":
    main()
