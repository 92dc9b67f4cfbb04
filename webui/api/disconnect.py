"""Notice, while a request runs, that its client has gone.

The ASGI server delivers `http.disconnect` on the request's receive channel when the
client closes the connection.  A route that only checks between pieces of a reply
notices late or never (a non-streaming reply sends nothing until the end), so a task
waits on that channel for the whole request and calls `on_gone` the moment the
message comes: the request's cancel token is set, and the model is free within one
decoding step (docs/SECURITY.md, "Disconnects").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.types import Receive


@asynccontextmanager
async def on_disconnect(receive: Receive, on_gone: Callable[[], None]) -> AsyncIterator[asyncio.Event]:
    """Run the body with a watcher; the yielded event is set once the client has gone.

    Call it after the request body has been read: from then on the channel carries
    nothing but the disconnect (or the server's note that the response is complete).
    """
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()
        on_gone()

    watcher = asyncio.create_task(watch())
    try:
        yield gone
    finally:
        watcher.cancel()
