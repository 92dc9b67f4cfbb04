"""Tokens/s through this app in front of a remote engine vs asking the engine directly,
same engine, same run.

    .venv/bin/python bench/bench_remote.py [--model demo-kjv-4m] [--tokens 100] [--rounds 21]

The engine is this app's own OpenAI-compatible API serving the demo model, in a
process of its own (as a remote engine would be); the gateway is a second app with
that engine configured (`kind: webui`) and no local model.  Both sides stream the same
greedy completion with the end-of-text token banned, so each round produces the same
tokens; rounds alternate; the ratio is through-the-gateway / direct.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from report import figure
from common import PROMPT, bench_parser

from webui.api.openai_api import APIServer
from webui.remote.config import RemoteEngineConfig
from webui.runtime import build_runtime
from webui.settings import PROJECT_ROOT, Settings

ENGINE = """
import sys, tempfile, time
from pathlib import Path
from webui.api.openai_api import APIServer
from webui.runtime import build_runtime
from webui.settings import Settings
settings = Settings(model=sys.argv[1], model_dir=Path(sys.argv[2]), user_data_dir=Path(tempfile.mkdtemp()))
server = APIServer(build_runtime(settings, use_remembered=False), port=int(sys.argv[3]))
print(server.start(), flush=True)
sys.stdin.read()  # serve until the benchmark closes our stdin
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    args = bench_parser(__doc__, rounds=21).parse_args()
    engine = subprocess.Popen([sys.executable, "-c", ENGINE, args.model, str(args.model_dir), str(free_port())],  # noqa: S603 - our own code
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
                              env={"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(PROJECT_ROOT),
                                   "PATH": "/usr/bin:/bin"})
    engine_url = engine.stdout.readline().strip()
    if not engine_url.startswith("http"):
        raise SystemExit("the engine did not start")
    try:
        with tempfile.TemporaryDirectory() as user_data:
            settings = Settings(model=None, model_dir=args.model_dir, user_data_dir=Path(user_data),
                                remote_engines=(RemoteEngineConfig(url=engine_url, name="engine", kind="webui"),))
            gateway = APIServer(build_runtime(settings, use_remembered=False), port=free_port())
            gateway_url = gateway.start()
            body = {"model": args.model, "prompt": PROMPT, "max_tokens": args.tokens, "temperature": 0,
                    "stream": True, "ban_eos_token": True}

            def rate(client: httpx.Client, url: str) -> float:
                start = time.perf_counter()
                pieces = 0
                with client.stream("POST", f"{url}/completions", json=body) as response:
                    for line in response.iter_lines():
                        pieces += line.startswith("data: {")
                if pieces < 2:
                    raise SystemExit("the reply did not stream")
                return args.tokens / (time.perf_counter() - start)

            with httpx.Client(timeout=300) as client:
                rate(client, engine_url), rate(client, gateway_url)  # warm-up
                pairs = [(rate(client, gateway_url), rate(client, engine_url)) for _ in range(args.rounds)]
            gateway.stop()
    finally:
        engine.stdin.close()
        engine.wait(timeout=60)
    ratios = [ours / theirs for ours, theirs in pairs]
    quartiles = statistics.quantiles(ratios, n=4)
    print(f"model: {args.model}, {args.tokens} tokens, {args.rounds} rounds")
    print(f"direct: {statistics.median(t for _, t in pairs):.1f} tokens/s; "
          f"through the gateway: {statistics.median(o for o, _ in pairs):.1f} tokens/s")
    print(f"gateway vs engine directly: {statistics.median(ratios):.3f} (target >= 0.95; "
          f"per-round quartiles {quartiles[0]:.3f}..{quartiles[2]:.3f})")
    figure("streamed tokens/s through our gateway ÷ asking the engine directly", f"{statistics.median(ratios):.3f}",
           f"median of {args.rounds} rounds of {args.tokens} tokens, quartiles {quartiles[0]:.3f}..{quartiles[2]:.3f}; "
           f"direct {statistics.median(t for _, t in pairs):.1f} tok/s; the engine is this app's own API "
           f"({args.model}) in another process")


if __name__ == "__main__":
    main()
