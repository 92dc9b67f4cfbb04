"""Soak test: mixed chat (UI) and API load for N minutes, on loopback only, with clients
that disconnect mid-reply, model reloads and UI restarts, and a hostile client mixing
the hostile payloads in (docs/SECURITY.md, "Request contents" and "Connections": deep grammar and $ref
chains, a grammar that matches nothing, a 1 MB prompt, half-sent requests, a big
embeddings call, wrong keys, foreign Host headers); reports latency, memory, open files,
threads and every error.  A hostile request is expected to be refused (4xx); a normal
one to be answered.

    .venv/bin/python bench/soak.py [--minutes 2] [--model demo-kjv-4m] [--workers 4] [--no-hostile]

Bounded: every loop ends at the deadline; the servers bind 127.0.0.1 on free ports
and a temporary user-data folder is removed at the end.  Figures: docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
from bench_api import free_port
from report import figure
from common import PROMPT

from webui.settings import DEMO_MODEL, PROJECT_ROOT, Settings

KEY = "soak-test-key-1"
ADMIN = "soak-admin-key-1"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


class Record:
    """Latencies by kind of request, and errors, from all workers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)

    def took(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.latency[kind].append(seconds)

    def failed(self, what: str) -> None:
        with self.lock:
            self.errors[what[:160]] += 1


def api_worker(api: str, model: str, deadline: float, record: Record, seed: int) -> None:
    rng = random.Random(seed)  # a load pattern, not a secret
    headers = {"authorization": f"Bearer {KEY}"}
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 24}
    while time.monotonic() < deadline:
        kind = rng.choice(["stream", "whole", "leave-stream", "leave-whole"])
        started = time.monotonic()
        try:
            if kind in ("stream", "leave-stream"):
                with httpx.stream("POST", f"{api}/chat/completions", json={**body, "stream": True},
                                  headers=headers, timeout=120) as answer:
                    if answer.status_code not in (200, 503):
                        record.failed(f"api {kind} {answer.status_code}")
                    for i, _line in enumerate(answer.iter_lines()):
                        if kind == "leave-stream" and i >= 3:
                            break  # the client leaves mid-reply
            else:
                timeout = 0.3 if kind == "leave-whole" else 120
                answer = httpx.post(f"{api}/chat/completions", json=body, headers=headers, timeout=timeout)
                if answer.status_code not in (200, 503):
                    record.failed(f"api {kind} {answer.status_code}: {answer.text[:80]}")
        except httpx.TimeoutException:
            if kind != "leave-whole":
                record.failed(f"api {kind} timed out")
        except httpx.HTTPError as exc:
            record.failed(f"api {kind} {exc.__class__.__name__}")
        record.took(f"api {kind}", time.monotonic() - started)


def deep_lark(rules: int = 4000) -> str:
    return "start: a0\n" + "".join(f'a{i}: "a" a{i + 1} | "b"\n' for i in range(rules)) + f'a{rules}: "c"\n'


def deep_refs(depth: int = 1000) -> dict:
    defs = {f"d{i}": {"type": "object", "properties": {"a": {"$ref": f"#/$defs/d{i + 1}"}}} for i in range(depth)}
    defs[f"d{depth}"] = {"type": "string"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def hostile_worker(api: str, model: str, deadline: float, record: Record, seed: int) -> None:
    """One probe after another; each must be refused (4xx) or bounded, never kill the server."""
    import socket
    from urllib.parse import urlparse

    rng = random.Random(seed)  # a load pattern, not a secret
    headers = {"authorization": f"Bearer {KEY}"}
    chat = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8}
    address = urlparse(api)
    probes = {
        "lark chain": lambda: httpx.post(f"{api}/completions", headers=headers, timeout=60, json={
            "model": model, "prompt": PROMPT, "max_tokens": 8, "grammar_string": deep_lark()}),
        "$ref chain": lambda: httpx.post(f"{api}/chat/completions", headers=headers, timeout=60, json={
            **chat, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": deep_refs()}}}),
        "matches nothing": lambda: httpx.post(f"{api}/completions", headers=headers, timeout=60, json={
            "model": model, "prompt": PROMPT, "max_tokens": 8, "grammar_string": "root ::= a\na ::= a"}),
        "1 MB prompt": lambda: httpx.post(f"{api}/chat/completions", headers=headers, timeout=60, json={
            **chat, "messages": [{"role": "user", "content": "x " * 500_000}]}),
        "wrong key": lambda: httpx.get(f"{api}/models", headers={"authorization": "Bearer wrong"}, timeout=30),
        "foreign host": lambda: httpx.get(f"{api}/models", headers={**headers, "host": "evil.example"}, timeout=30),
        "big embeddings": lambda: httpx.post(f"{api}/embeddings", headers=headers, timeout=300, json={
            "model": model, "input": [f"{PROMPT} {i}" for i in range(256)]}),
    }
    expected = {"big embeddings": (200,), "wrong key": (401,), "foreign host": (400, 403, 421)}
    while time.monotonic() < deadline:
        name = rng.choice([*probes, "half-sent"])
        started = time.monotonic()
        try:
            if name == "half-sent":  # slowloris: requests that never finish their headers
                held = []
                for _ in range(20):
                    held.append(socket.create_connection((address.hostname, address.port), timeout=5))
                    held[-1].sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: b")
                time.sleep(2.0)
                for sock in held:
                    sock.close()
            else:
                answer = probes[name]()
                if answer.status_code not in expected.get(name, (400, 413)):
                    record.failed(f"hostile {name}: {answer.status_code} {answer.text[:60]}")
        except httpx.HTTPError as exc:
            record.failed(f"hostile {name}: {exc.__class__.__name__}")
        except OSError as exc:
            record.failed(f"hostile {name}: {exc.__class__.__name__}")
        record.took(f"hostile {name}", time.monotonic() - started)


def ui_worker(ui: str, deadline: float, record: Record, seed: int, restarting: threading.Event) -> None:
    from gradio_client import Client

    rng = random.Random(seed)  # a load pattern, not a secret
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            client = Client(ui, verbose=False)
            job = client.submit(f"{PROMPT} {rng.randint(0, 999)}", api_name="/chat_send")
            if rng.random() < 0.3:
                time.sleep(0.2)
                job.cancel()  # a tab closed mid-reply
            else:
                job.result(timeout=120)
            client.predict(api_name="/chat_new")
            client.close()
        except Exception as exc:  # noqa: BLE001 - every failure is counted, not raised
            # While the UI restarts it refuses connections: counted apart from real errors.
            during = " (during a UI restart)" if restarting.is_set() else ""
            record.failed(f"ui{during} {exc.__class__.__name__}: {str(exc)[:60]}")
            if during:
                time.sleep(0.5)
        record.took("ui chat", time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--model-dir", type=Path, default=PROJECT_ROOT / "models")
    parser.add_argument("--model", default=DEMO_MODEL)
    parser.add_argument("--workers", type=int, default=4, help="API clients; half as many UI clients")
    parser.add_argument("--restart-every", type=float, default=30.0, help="seconds between reloads/restarts")
    parser.add_argument("--no-hostile", dest="hostile", action="store_false", help="no hostile client")
    args = parser.parse_args()

    from webui.api.openai_api import APIServer
    from webui.runtime import build_runtime
    from webui.ui.app import launch, restart_ui

    with tempfile.TemporaryDirectory() as user_data:
        settings = Settings(model=args.model, model_dir=args.model_dir, user_data_dir=Path(user_data),
                            api_key=KEY, admin_key=ADMIN, sampling={"max_new_tokens": 24})
        runtime = build_runtime(settings)
        ui_port = free_port()
        app, ui = launch(runtime, block=False, port=ui_port)
        server = APIServer(runtime, port=free_port())
        api = server.start()
        record = Record()
        restarting = threading.Event()
        deadline = time.monotonic() + args.minutes * 60
        samples = [(0.0, rss_mib(), open_files(), threading.active_count())]
        workers = [threading.Thread(target=api_worker, args=(api, args.model, deadline, record, i), daemon=True)
                   for i in range(args.workers)]
        workers += [threading.Thread(target=ui_worker, args=(ui, deadline, record, 100 + i, restarting), daemon=True)
                    for i in range(max(1, args.workers // 2))]
        if args.hostile:
            workers.append(threading.Thread(target=hostile_worker, args=(api, args.model, deadline, record, 7),
                                            daemon=True))
        began = time.monotonic()
        for worker in workers:
            worker.start()
        restarts = reloads = 0
        next_restart = began + args.restart_every
        while time.monotonic() < deadline:
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            samples.append((time.monotonic() - began, rss_mib(), open_files(), threading.active_count()))
            if time.monotonic() >= next_restart and time.monotonic() < deadline - 5:
                next_restart += args.restart_every
                answer = httpx.post(f"{api}/internal/models/load", json={"model": args.model}, timeout=120,
                                    headers={"x-api-key": ADMIN})
                reloads += 1
                if answer.status_code not in (200, 503):
                    record.failed(f"reload {answer.status_code}: {answer.text[:80]}")
                restarting.set()
                app, ui = restart_ui(runtime, app, ui_port, ())
                time.sleep(2.0)  # clients that failed during the restart notice it is over
                restarting.clear()
                restarts += 1
        for worker in workers:
            worker.join(timeout=180)
        samples.append((time.monotonic() - began, rss_mib(), open_files(), threading.active_count()))
        server.stop()
        app.close()

    print(f"soak: {args.minutes:g} min, {args.workers} API + {max(1, args.workers // 2)} UI clients"
          f"{' + 1 hostile' if args.hostile else ''}, {reloads} model reloads, {restarts} UI restarts")
    print(f"{'kind':<18}{'requests':>9}{'p50 s':>9}{'p95 s':>9}")
    for kind, seconds in sorted(record.latency.items()):
        ordered = sorted(seconds)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        print(f"{kind:<18}{len(ordered):>9}{statistics.median(ordered):>9.2f}{p95:>9.2f}")
    print("time s   RSS MiB  open files  threads")
    for at, rss, fds, threads in samples[:: max(1, len(samples) // 12)] + samples[-1:]:
        print(f"{at:>6.0f}{rss:>10.0f}{fds:>12}{threads:>9}")
    print("errors: " + (", ".join(f"{what} x{n}" for what, n in record.errors.items()) or "none"))
    for kind, seconds in sorted(record.latency.items()):
        ordered = sorted(seconds)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        figure(f"{kind}: p50 / p95 seconds", f"{statistics.median(ordered):.2f} / {p95:.2f}", f"{len(ordered)} requests")
    figure("memory at start → end of the soak", f"{samples[0][1]:.0f} → {samples[-1][1]:.0f} MiB RSS",
           f"{args.minutes:g} min, {reloads} model reloads, {restarts} UI restarts; errors: "
           + (", ".join(f"{what} x{n}" for what, n in record.errors.items()) or "none"))


if __name__ == "__main__":
    main()
