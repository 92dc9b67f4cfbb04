"""Time to first token for an API request that names a model not in memory (load on
demand, webui/resident.py) ÷ the same request once the model is resident: the demo
model, and a ~0.47B random Llama loaded beside it.

    .venv/bin/python bench/bench_load_on_demand.py [--rounds 3] [--skip-0.5b]

Each round unloads the model first, then streams a one-token chat request through the
real API server with the openai client and times it to its end; the resident figure is
the next request's, the model now in memory.
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import openai
from common import bench_parser
from report import figure

from webui.settings import DEMO_MODEL, PROJECT_ROOT, Settings

KEY = "bench-api-key-123"
HELLO = [{"role": "user", "content": "Who begat Enos?"}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def first_token(client: openai.OpenAI, model: str) -> float:
    """Seconds until a one-token streamed reply ends: its first token (a random model's
    first token may decode to no text, so the first content chunk is not waited for)."""
    started = time.perf_counter()
    stream = client.chat.completions.create(model=model, messages=HELLO, max_tokens=1, temperature=0, stream=True)
    for _chunk in stream:
        pass
    return time.perf_counter() - started


def measure(runtime, client: openai.OpenAI, model: str, rounds: int) -> tuple[list[float], list[float]]:
    cold, warm = [], []
    for _ in range(rounds):
        runtime.resident.unload(model)
        cold.append(first_token(client, model))
        warm.append(first_token(client, model))
    return cold, warm


def main() -> None:
    parser = bench_parser(__doc__, rounds=3)
    parser.add_argument("--skip-0.5b", dest="skip_half", action="store_true")
    args = parser.parse_args()
    from bench_batching import build_random_half_b

    from webui.api.openai_api import APIServer
    from webui.runtime import build_runtime

    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        (models / DEMO_MODEL).symlink_to(args.model_dir / DEMO_MODEL)
        names = [DEMO_MODEL]
        if not args.skip_half:
            print("building a ~0.47B random Llama ...", flush=True)
            names.append(build_random_half_b(models, args.model_dir / DEMO_MODEL))
        settings = Settings(model=None, model_dir=models, user_data_dir=Path(tmp) / "user_data", api_key=KEY,
                            presets_dir=PROJECT_ROOT / "presets")
        runtime = build_runtime(settings)
        server = APIServer(runtime, port=free_port())
        client = openai.OpenAI(base_url=server.start(), api_key=KEY, max_retries=0, timeout=600)
        try:
            first_token(client, DEMO_MODEL)  # warm the process (imports, the first load's one-time costs)
            for name in names:
                if name != DEMO_MODEL:
                    first_token(client, DEMO_MODEL)  # the big one loads beside a resident demo model
                cold, warm = measure(runtime, client, name, args.rounds)
                c, w = statistics.median(cold), statistics.median(warm)
                print(f"{name}: first token {c:.2f} s loaded on demand, {w:.3f} s resident", flush=True)
                load = "-".join(f"{v:.1f}" for v in os.getloadavg()[:2])
                figure(f"first token, {name} loaded on demand ÷ resident", f"{c:.2f} s ÷ {w:.3f} s",
                       f"median of {args.rounds}; streamed one-token chat request, openai client, loopback; "
                       f"load average {load}")
        finally:
            server.stop()
            runtime.resident.close()


if __name__ == "__main__":
    main()
