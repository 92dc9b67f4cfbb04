"""Gradio's event queue, woken by events instead of polling.

Gradio's queue runs two loops in the server's event loop: one looks for a queued event
to start every millisecond, the other for progress to send every 10 ms, whether or not
anything is queued or running.  On an idle server that was 7% of a core, and still
1.8% with the intervals raised to 20 and 50 ms (docs/PERFORMANCE.md, "Other facts
measured here"); each look walks every event's queue, and this app has many events.

Here the first loop sleeps until something can change what it would do: an event is
queued, a running one ends, or the queue closes.  The second sleeps while nothing
runs, and looks every PROGRESS_POLL_SECONDS only while something does.  A queued click
therefore starts at once instead of at the next poll, and an idle server wakes for the
queue only every SAFETY_SECONDS.  A running stream was never affected: its updates go
straight to the browser, not through these loops.

Starting an event is what Gradio's own `Queue.start_processing` does, written against
the queue's attributes; `install` checks that they are all there and otherwise falls
back to only lengthening Gradio's polling intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

# A running job's progress (gr.Progress) is sent this often (Gradio's own loop: every 10 ms).
PROGRESS_POLL_SECONDS = 0.05
# A safety net, not a poll: every way an event becomes startable rings the bell, so this
# only bounds the delay should a future Gradio add one that does not.
SAFETY_SECONDS = 5.0
# The fallback when the queue is not the one this module knows: poll, but less often.
FALLBACK_POLL_SECONDS = (("sleep_when_free", 0.02), ("progress_update_sleep_when_free", 0.05))

NEEDED = ("push", "process_events", "close", "get_events", "active_jobs", "delete_lock", "stopped",
          "event_queue_per_concurrency_id", "event_analytics", "_asyncio_tasks", "_cancel_asyncio_tasks",
          "live_updates", "broadcast_estimations", "send_message", "start_processing", "start_progress_updates")


class Bell:
    """Wakes whoever waits in the server's event loop.  Waited on, and (but for a
    close) rung, in that loop's thread, so checking state and then waiting cannot
    miss a ring."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def ring(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            self._set()
        else:  # Blocks.close() closes the queue from another thread
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            event.set()

    async def wait(self, timeout: float) -> None:
        """Until the next ring, or `timeout` seconds."""
        loop = asyncio.get_running_loop()
        if self._event is None or self._loop is not loop:  # a relaunch runs a new loop
            self._event, self._loop = asyncio.Event(), loop
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            pass


def install(queue: Any) -> bool:
    """Make `queue` (a Blocks' `_queue`, before launch) wait instead of polling.
    False when it is not the queue this module knows: then its polls are only slowed."""
    if queue is None:
        return False
    if not all(hasattr(queue, name) for name in NEEDED):
        log.warning("unknown Gradio queue: polling for events every %.0f ms", FALLBACK_POLL_SECONDS[0][1] * 1000)
        for attribute, seconds in FALLBACK_POLL_SECONDS:
            if getattr(queue, attribute, seconds) < seconds:
                setattr(queue, attribute, seconds)
        return False
    bell = Bell()
    push, process_events, close = queue.push, queue.process_events, queue.close

    async def push_and_ring(*args: Any, **kwargs: Any) -> Any:
        try:
            return await push(*args, **kwargs)
        finally:
            bell.ring()  # an event is queued

    async def process_and_ring(*args: Any, **kwargs: Any) -> Any:
        try:
            return await process_events(*args, **kwargs)
        finally:
            bell.ring()  # a worker and the event's concurrency place are free again

    def close_and_ring() -> None:
        close()
        bell.ring()

    async def start_processing() -> None:
        await dispatch(queue, bell)

    async def start_progress_updates() -> None:
        await send_progress(queue, bell)

    queue.push, queue.process_events, queue.close = push_and_ring, process_and_ring, close_and_ring
    queue.start_processing, queue.start_progress_updates = start_processing, start_progress_updates
    return True


async def dispatch(queue: Any, bell: Bell) -> None:
    """Start queued events while a worker is free; otherwise wait for the bell."""
    try:
        while not queue.stopped:
            if len(queue) and None in queue.active_jobs:
                async with queue.delete_lock:  # as Gradio: the list may be edited meanwhile
                    batch = queue.get_events()
                if batch:
                    start(queue, *batch)
                    bell.ring()  # the progress loop: something runs now
                    continue
            await bell.wait(SAFETY_SECONDS)
    finally:
        queue.stopped = True
        queue._cancel_asyncio_tasks()


def start(queue: Any, events: list, batch: bool, concurrency_id: str) -> None:
    """Run `events` on a free worker, with Gradio's bookkeeping."""
    from gradio.utils import run_coro_in_background, set_task_name

    queue.active_jobs[queue.active_jobs.index(None)] = events
    event_queue = queue.event_queue_per_concurrency_id[concurrency_id]
    event_queue.current_concurrency += 1
    began = time.time()
    fn = events[0].fn
    event_queue.start_times_per_fn[fn].add(began)
    for event in events:
        analytics = queue.event_analytics.get(event._id)
        if analytics is not None:
            analytics["status"] = "processing"
    task = run_coro_in_background(queue.process_events, events, batch, began, fn)
    set_task_name(task, events[0].session_hash, fn._id, events[0]._id, batch)
    queue._asyncio_tasks.add(task)
    task.add_done_callback(queue._asyncio_tasks.discard)
    if queue.live_updates:
        queue.broadcast_estimations(concurrency_id)


async def send_progress(queue: Any, bell: Bell) -> None:
    """Send each running job's latest progress every PROGRESS_POLL_SECONDS; while
    nothing runs, wait for the bell."""
    while not queue.stopped:
        running = [event for job in queue.active_jobs if job is not None for event in job]
        if not running:
            await bell.wait(SAFETY_SECONDS)
            continue
        for event in running:
            if event.progress_pending and event.progress:
                event.progress_pending = False
                queue.send_message(event, event.progress)
        await asyncio.sleep(PROGRESS_POLL_SECONDS)
