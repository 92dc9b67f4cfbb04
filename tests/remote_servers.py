"""Real misbehaving OpenAI-compatible servers on loopback, for the remote-engine tests.

Each lives under its own prefix (`/slow/v1`, `/garbage/v1`, `/echo/v1`, `/endless/v1`), so
one uvicorn serves them all; they answer /models properly and then misbehave on completions
the way a broken or hostile engine does: too slow, not JSON, echoing the request's key in
an error, or one event line that never ends.  `/huge/v1` lists HUGE_MODELS models.
"""

from __future__ import annotations

import asyncio
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route


HUGE_MODELS = 300_000  # ~10 MB of listing: past the client's caps, small enough for main to survive
ENDLESS_LIMIT = 256 << 20  # the endless line stops by itself here (main read all of it)


class Misbehaving:
    def __init__(self, port: int, hold_seconds: float = 30.0):
        self.closed = threading.Event()  # the slow stream saw its client leave
        self.hold_seconds = hold_seconds
        self.endless_sent = 0  # bytes of the endless line sent before its client left
        self.endless_done = threading.Event()
        routes = []
        for prefix in ("slow", "garbage", "echo", "endless"):
            routes.append(Route(f"/{prefix}/v1/models", self._models(prefix)))
        routes += [
            Route("/huge/v1/models", self._huge),
            Route("/endless/v1/chat/completions", self._endless, methods=["POST"]),
            Route("/slow/v1/chat/completions", self._slow, methods=["POST"]),
            Route("/slow/v1/completions", self._slow, methods=["POST"]),
            Route("/garbage/v1/completions", self._garbage, methods=["POST"]),
            Route("/garbage/v1/chat/completions", self._garbage, methods=["POST"]),
            Route("/echo/v1/completions", self._echo, methods=["POST"]),
        ]
        config = uvicorn.Config(Starlette(routes=routes), host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def _models(self, prefix: str):
        async def models(request: Request):
            return JSONResponse({"object": "list", "data": [{"id": f"{prefix}-model", "object": "model"}]})
        return models

    async def _slow(self, request: Request):
        async def events():
            try:
                yield 'data: {"choices": [{"index": 0, "text": "a", "delta": {"content": "a"}}]}\n\n'
                await asyncio.sleep(self.hold_seconds)  # then nothing: the client's timeout must end it
            finally:
                self.closed.set()
        return StreamingResponse(events(), media_type="text/event-stream")

    async def _huge(self, request: Request):
        async def listing():
            yield b'{"object": "list", "data": ['
            for start in range(0, HUGE_MODELS, 10_000):
                yield b",".join(b'{"id": "m%d", "object": "model"}' % i
                                for i in range(start, min(start + 10_000, HUGE_MODELS))) + (
                    b"," if start + 10_000 < HUGE_MODELS else b"")
            yield b"]}"
        return StreamingResponse(listing(), media_type="application/json")

    async def _endless(self, request: Request):
        chunk = b"x" * (1 << 20)

        async def events():
            try:
                yield b"data: "
                while self.endless_sent < ENDLESS_LIMIT and not await request.is_disconnected():
                    yield chunk  # (writes after a hang-up are dropped silently: hence the check)
                    self.endless_sent += len(chunk)
            finally:
                self.endless_done.set()
        return StreamingResponse(events(), media_type="text/event-stream")

    async def _garbage(self, request: Request):
        async def events():
            yield "data: this is not json\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

    async def _echo(self, request: Request):
        # A broken engine that repeats the request's credentials in its error message.
        return JSONResponse({"error": {"message": f"bad key {request.headers.get('authorization')}"}},
                            status_code=401)

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "the misbehaving server did not start"
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
