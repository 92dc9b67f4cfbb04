"""What an idle server costs: the CPU time of the real app (`python -m webui`, demo
model loaded, loopback, nothing asked of it) over a window, with no browser tab open
and then with one headless Chromium tab sitting on the page after it has loaded.

    .venv/bin/python bench/bench_idle.py [--seconds 60] [--settle 10] [--api] [--model demo-kjv-4m]

The server is started as `./start.sh` starts it (`python -m webui`, here on a free port
with a temporary user-data folder), and measured from outside: user + system CPU time
of its process (every thread) from /proc, before and after each window, as a
percentage of one core.  Each thread's share is printed too (by thread id) to show
what still wakes.  The browser's own processes (Chromium's, not Playwright's driver)
are measured over the same window; where Chromium or Playwright is missing no tab is
opened and only the first state is measured.  The machine's load average is printed:
a busy machine slows every wake-up and so inflates the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from report import figure

ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL = "demo-kjv-4m"  # webui/settings.py's DEMO_MODEL (not imported: keeps this process light)
CHROMIUM = "/usr/bin/chromium"
# As bench/bench_first_screen.py launches it.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
# The page has loaded and run its load event: the message box is there and enabled.
LOADED = """() => {
  const box = document.querySelector('#chat-input textarea');
  return !!box && !box.disabled && !!document.querySelector('#chatbot');
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tab_missing() -> str | None:
    """Why no tab can be opened here, or None."""
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM}"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed"
    return None


def start_server(args: argparse.Namespace, port: int, user_data: Path, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "webui", "--listen-port", str(port), "--user-data-dir", str(user_data),
               "--model-dir", str(args.model_dir), "--model", args.model]
    if args.api:
        command += ["--api", "--api-port", str(free_port())]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603


def wait_ready(server: subprocess.Popen, url: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}) before it was ready")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server did not answer {url} within {timeout:.0f} s")


def thread_times(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (thread name, user + system seconds so far)."""
    times = {}
    for thread in psutil.Process(pid).threads():
        try:
            name = Path(f"/proc/{pid}/task/{thread.id}/comm").read_text().strip()
        except OSError:
            continue
        times[thread.id] = (name, thread.user_time + thread.system_time)
    return times


def cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    """pid -> user + system seconds so far, for those still running."""
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[process.pid] = times.user + times.system
    return seconds


def used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent in between by the processes alive at both ends."""
    return sum(after[pid] - before[pid] for pid in after if pid in before)


def browser_processes() -> list[psutil.Process]:
    """Chromium's processes: below this one, not Playwright's node driver."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "chrom" in child.name().lower() or "chrom" in " ".join(child.cmdline()[:1]).lower():
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def measure(pid: int, seconds: float, browser: bool) -> dict:
    """The server's (and the browser's) CPU time over `seconds` of wall time."""
    server = psutil.Process(pid)
    chromium = browser_processes() if browser else []
    load_before = os.getloadavg()[0]
    threads_before = thread_times(pid)
    server_before, browser_before = cpu_seconds([server]), cpu_seconds(chromium)
    start = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - start
    server_after, browser_after = cpu_seconds([server]), cpu_seconds(chromium)
    threads_after = thread_times(pid)
    per_thread = []
    for tid, (name, after) in threads_after.items():
        spent = after - threads_before.get(tid, (name, 0.0))[1]
        if spent > 0:
            per_thread.append((spent, name, tid))
    return {
        "server": 100 * used(server_before, server_after) / wall,
        "browser": 100 * used(browser_before, browser_after) / wall if chromium else None,
        "browser_processes": len(chromium),
        "wall": wall,
        "load": (load_before, os.getloadavg()[0]),
        "threads": sorted(per_thread, reverse=True),
        "thread_count": len(threads_after),
    }


def show(label: str, result: dict) -> None:
    load = f"load average {result['load'][0]:.2f} → {result['load'][1]:.2f}"
    print(f"{label}: server {result['server']:.2f}% of a core over {result['wall']:.0f} s ({load}, "
          f"{result['thread_count']} threads)", flush=True)
    for spent, name, tid in result["threads"][:8]:
        print(f"    {100 * spent / result['wall']:6.3f}%  {name} ({tid})")
    if result["browser"] is not None:
        print(f"  browser: {result['browser']:.2f}% of a core ({result['browser_processes']} Chromium processes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default=DEMO_MODEL)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each measured window")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds left alone after start-up and after the page loads, before measuring")
    parser.add_argument("--api", action="store_true", help="serve the OpenAI API too, as `--api` does")
    parser.add_argument("--no-tab", action="store_true", help="measure only the server with no tab open")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        log = Path(folder) / "server.log"
        server = start_server(args, port, Path(folder) / "user_data", log)
        try:
            wait_ready(server, url)
            time.sleep(args.settle)
            results = {"no tab": measure(server.pid, args.seconds, browser=False)}
            show("no tab", results["no tab"])
            why_not = tab_missing() if not args.no_tab else "--no-tab"
            if why_not:
                print(f"one tab: not measured ({why_not})", flush=True)
            else:
                from playwright.sync_api import sync_playwright

                with sync_playwright() as p:
                    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                    page = browser.new_page()
                    page.goto(url)
                    page.wait_for_function(LOADED, polling=100, timeout=120_000)
                    time.sleep(args.settle)
                    results["one tab"] = measure(server.pid, args.seconds, browser=True)
                    show("one tab", results["one tab"])
                    browser.close()
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if server.returncode not in (0, -15):
            print(log.read_text(errors="replace")[-2000:], file=sys.stderr)
    api = " and the API" if args.api else ""
    for label, result in results.items():
        load = f"load average {result['load'][0]:.2f} → {result['load'][1]:.2f}"
        figure(f"idle server{api}, {label}: CPU", f"{result['server']:.2f}% of a core",
               f"user + system time of the `python -m webui` process over {result['wall']:.0f} s, "
               f"demo model loaded; {load}")
        if result["browser"] is not None:
            figure(f"idle browser, {label}: CPU", f"{result['browser']:.2f}% of a core",
                   f"headless Chromium's {result['browser_processes']} processes over the same window")


if __name__ == "__main__":
    main()
