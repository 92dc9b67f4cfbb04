"""An idle server sleeps: uvicorn's loop (webui/quiet_server.py) and Gradio's queue
(webui/ui/quiet_queue.py) wait for something to happen instead of looking for it.
The whole app, idle, is measured by bench/bench_idle.py; the engine's model thread
in tests/test_engine.py and the launched UI in tests/test_app_client.py."""

from __future__ import annotations

import asyncio
import email.utils
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
import uvicorn

from tests.conftest import free_port, needs_proc, thread_activity, wait_for
from webui import quiet_server
from webui.ui import quiet_queue


async def hello(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def serve() -> tuple[quiet_server.Server, threading.Thread, str]:
    port = free_port()
    server = quiet_server.Server(uvicorn.Config(hello, host="127.0.0.1", port=port, lifespan="off",
                                                log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, timeout=30)
    return server, thread, f"http://127.0.0.1:{port}/"


@needs_proc
def test_an_idle_uvicorn_server_wakes_once_a_second_and_keeps_its_date_current():
    server, thread, url = serve()
    try:
        time.sleep(0.3)
        slept, _ = thread_activity(thread)
        time.sleep(2.5)
        woke = thread_activity(thread)[0] - slept
        assert woke <= 8, f"woke {woke} times in 2.5 s (uvicorn's own loop: 25)"
        response = httpx.get(url, timeout=10)
        assert response.text == "hello"
        sent = email.utils.parsedate_to_datetime(response.headers["date"]).timestamp()
        assert abs(sent - time.time()) < 3  # refreshed since the start, 2.8 s ago
    finally:
        server.should_exit = True
        thread.join(10)


def test_should_exit_wakes_the_server_at_once(monkeypatch):
    """Setting should_exit from another thread ends the wait; it is not noticed only at
    the next tick (here an hour away)."""
    monkeypatch.setattr(quiet_server, "HEADER_SECONDS", 3600.0)
    server, thread, _ = serve()
    time.sleep(0.3)  # inside its hour-long wait
    server.should_exit = True
    thread.join(20)
    assert not thread.is_alive()


def test_an_unknown_gradio_queue_is_only_slowed():
    queue = SimpleNamespace(sleep_when_free=0.001, progress_update_sleep_when_free=0.01)
    assert not quiet_queue.install(queue)
    assert queue.sleep_when_free >= 0.02 and queue.progress_update_sleep_when_free >= 0.05
    assert not quiet_queue.install(None)


def test_gradio_s_queue_is_the_one_installed_on():
    import gradio as gr

    with gr.Blocks() as app:
        gr.Button("x").click(lambda: None)
    app.queue()
    assert quiet_queue.install(app._queue)


@pytest.mark.parametrize("from_other_thread", [False, True])
def test_the_bell_wakes_a_waiter(from_other_thread):
    bell = quiet_queue.Bell()
    loop = asyncio.new_event_loop()
    woken = threading.Event()

    async def waiter() -> None:
        await bell.wait(3600)
        woken.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(waiter(),), daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: bell._event is not None, timeout=10)
        if from_other_thread:  # as Blocks.close() closes the queue
            bell.ring()
        else:
            loop.call_soon_threadsafe(bell.ring)
        assert woken.wait(20)
    finally:
        thread.join(20)
        loop.close()
