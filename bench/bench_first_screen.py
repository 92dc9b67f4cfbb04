"""How long a fresh page takes to become usable: navigation -> the message box is
there and the chat shows the user's open conversation (the page-load event has run),
in headless Chromium, idle and with the CPUs kept busy.

    .venv/bin/python bench/bench_first_screen.py [--rounds 7] [--model demo-kjv-4m]

"Usable" is read off the page: the message box is enabled and the chat shows the
message this script stored beforehand, so the same check works whatever the load path
looks like (other tabs are not built by the browser until opened, so only the Chat
tab can be watched).  Busy: one CPU-bound process per core runs beside the browser and
the server, as on a machine that is also decoding.  Prints the median and quartiles.
"""

from __future__ import annotations

import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

from bench_api import free_port
from report import figure
from common import bench_parser

from webui.runtime import build_runtime
from webui.settings import Settings
from webui.ui.app import launch

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
MARK = "first screen bench"
# The stored message, which no default page shows.
USABLE = f"""() => {{
  const box = document.querySelector('#chat-input textarea');
  const said = [...document.querySelectorAll('#chatbot [data-testid=user]')].map((e) => e.innerText.trim());
  return !!box && !box.disabled && said.includes({MARK!r});
}}"""


def burn(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def first_screen(browser, url: str) -> float:
    page = browser.new_page()
    start = time.perf_counter()
    page.goto(url, wait_until="commit")
    page.wait_for_function(USABLE, polling=10, timeout=120_000)
    seconds = time.perf_counter() - start
    page.close()
    return seconds


def main() -> None:
    from playwright.sync_api import sync_playwright

    args = bench_parser(__doc__, rounds=7).parse_args()
    with tempfile.TemporaryDirectory() as folder:
        user_data = Path(folder)
        settings = Settings(model=args.model, model_dir=args.model_dir, user_data_dir=user_data)
        runtime = build_runtime(settings, use_remembered=False)
        space = runtime.users.get(None)
        chat = space.chats.new("Assistant", MARK)
        chat.append("user", MARK)
        space.chats.save(chat)
        space.remember_chat("Assistant", chat.id)
        app, url = launch(runtime, block=False, port=free_port())
        results = {}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            first_screen(browser, url)  # warm-up: Gradio's assets into the browser's cache
            for label in ("idle", "busy"):
                stop = multiprocessing.Event()
                burners = [multiprocessing.Process(target=burn, args=(stop,), daemon=True)
                           for _ in range(multiprocessing.cpu_count() if label == "busy" else 0)]
                for process in burners:
                    process.start()
                results[label] = [first_screen(browser, url) for _ in range(args.rounds)]
                stop.set()
                for process in burners:
                    process.join()
            browser.close()
        app.close()
    for label, times in results.items():
        q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
        print(f"navigation -> message box usable, {label}: median {statistics.median(times) * 1000:.0f} ms "
              f"(quartiles {q[0] * 1000:.0f}..{q[2] * 1000:.0f}, {len(times)} loads)")
        figure(f"navigation → message box usable, {label}", f"{statistics.median(times) * 1000:.0f} ms",
               f"median of {len(times)} loads, quartiles {q[0] * 1000:.0f}..{q[2] * 1000:.0f} ms"
               + ("; every core kept busy by other processes" if label == "busy" else ""))


if __name__ == "__main__":
    main()
