"""Which engine serves which model name, and which model each browser tab talks to.

Model lists are asked of the engines when first needed and kept for `max_age`
seconds, so listing models or routing a request does not cost a round trip each
time; an engine that is down lists nothing and its problem is kept for the Model tab.
With no engine configured nothing here starts a thread or opens a socket.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

from webui.remote.client import RemoteError
from webui.remote.config import RemoteEngineConfig
from webui.remote.engine import RemoteEngine, RemoteModel
from webui.remote.loop import LoopThread

MIN_RELIST_SECONDS = 2.0


class RemoteEngines:
    def __init__(self, configs: Sequence[RemoteEngineConfig] = (), max_age: float = 30.0):
        self._loop = LoopThread()
        self.max_age = max_age
        self.engines: list[RemoteEngine] = []
        self.warnings: list[str] = []
        for config in configs:
            if any(e.name == config.name for e in self.engines):
                self.warnings.append(f"remote engine {config.name!r} is configured twice; the second is ignored")
                continue
            engine = RemoteEngine(config, self._loop)
            if engine.client.key_missing:
                self.warnings.append(f"remote engine {config.name}: the environment variable {config.api_key_env} "
                                     "is not set; requests go without a key")
            self.engines.append(engine)
        self._lock = threading.Lock()
        self._models: dict[str, RemoteEngine] = {}
        self._listed_at: float | None = None
        self.problems: dict[str, str] = {}  # engine name -> why it listed nothing

    def __bool__(self) -> bool:
        return bool(self.engines)

    def refresh(self) -> dict[str, RemoteEngine]:
        """Ask every engine for its models, all at once; the first engine to list a name serves it."""
        if not self.engines:
            return {}

        async def everyone() -> list[list[str] | BaseException]:
            return await asyncio.gather(*(e.client.list_models() for e in self.engines), return_exceptions=True)

        timeout = max(e.config.timeout for e in self.engines) + 5
        listed = self._loop.call(everyone(), timeout=timeout)
        models: dict[str, RemoteEngine] = {}
        problems: dict[str, str] = {}
        for engine, names in zip(self.engines, listed, strict=True):
            if isinstance(names, BaseException):
                problems[engine.name] = str(names) if isinstance(names, RemoteError) else (
                    f"remote engine {engine.name} could not be asked: {names.__class__.__name__}")
                continue
            for name in names:
                models.setdefault(name, engine)
        with self._lock:
            self._models, self.problems, self._listed_at = models, problems, time.monotonic()
        return dict(models)

    def models(self, fresh: bool = False) -> dict[str, RemoteEngine]:
        """Model name -> its engine, listed at most `max_age` seconds ago (or now, when `fresh`)."""
        with self._lock:
            stale = self._listed_at is None or time.monotonic() - self._listed_at > self.max_age
            if not (fresh or stale):
                return dict(self._models)
        return self.refresh()

    def model(self, name: str) -> RemoteModel | None:
        """The remote model called `name`, asking the engines again if it is not known yet."""
        if not self.engines:
            return None
        engine = self.models().get(name)
        if engine is None and self._age() > MIN_RELIST_SECONDS:
            # It may have been started since; asked again at most this often, so a stream of
            # requests naming unknown models cannot turn into a stream of listings upstream.
            engine = self.models(fresh=True).get(name)
        return RemoteModel(engine, name) if engine else None

    def _age(self) -> float:
        with self._lock:
            return float("inf") if self._listed_at is None else time.monotonic() - self._listed_at


class SessionChoices:
    """The model each browser tab talks to (its session id -> a remote model's name).

    No entry: the local model.  Kept in the Runtime, not in the page, so the Chat and
    Notebook tabs need no new input; a closed tab's entry is a few bytes until restart.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chosen: dict[str, str] = {}

    def get(self, session: str) -> str | None:
        with self._lock:
            return self._chosen.get(session)

    def choose(self, session: str, model: str | None) -> None:
        with self._lock:
            if model is None:
                self._chosen.pop(session, None)
            else:
                self._chosen[session] = model
