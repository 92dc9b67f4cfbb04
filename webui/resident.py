"""Several models resident at once, loaded when a request names one (README: "Models on demand").

The Runtime's own ModelManager and engine hold "the loaded model" the Model tab shows;
every other resident model has a ModelManager and GenerationEngine of its own, so its
requests batch among themselves on their own model thread while another model answers
other tabs.  Residents are keyed by their name in the model listing.

A load that would pass the memory budget first unloads the least recently used models.
An unload goes through ModelManager.unload, which waits for the model's running
requests to end and admits no new ones meanwhile: a model is never taken away from
a reply in progress.  An idle model (no request for --idle-unload-minutes, or past
an Ollama request's keep_alive) is unloaded by sweep(), which a background thread
calls; tests call it with their own clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from webui.errors import AppError, ServerError
from webui.loaders.base import LoadedModel
from webui.model_manager import ModelManager

log = logging.getLogger(__name__)

SWEEP_SECONDS = 5.0  # how often the background thread looks for idle models
KEEP_ALIVE_WAIT = 60.0  # keep_alive 0: how long the unload waits for other replies to end


class LoadRefused(AppError):
    """The request names a listed model that is not loaded, and this caller may not load it."""

    status, code = 403, "load_not_allowed"


class DoesNotFit(ServerError):
    """The model cannot be made resident: Will it fit? says no, or it needs more than the budget."""

    status, code = 503, "model_does_not_fit"


@dataclass
class Resident:
    name: str
    manager: ModelManager
    engine: object  # GenerationEngine
    need: int  # bytes, as Will it fit? counts them
    since: float  # wall-clock time it was loaded
    used: float  # the clock's time of its last request (start or end)
    keep_for: float | None = None  # seconds after last use (Ollama keep_alive); None: the idle timeout; <0: forever

    @property
    def loaded(self) -> LoadedModel | None:
        return self.manager.current

    @property
    def busy(self) -> bool:
        """Requests queued or running, or a swap waiting for them."""
        return self.engine.pending > 0 or self.manager.swap_waiting()

    def expires(self, idle_seconds: float | None) -> float | None:
        """The clock time after which it is unloaded when unused; None: never."""
        keep = self.keep_for if self.keep_for is not None else idle_seconds
        return None if keep is None or keep < 0 else self.used + keep

    def expires_at(self, idle_seconds: float | None, clock: Callable[[], float]) -> str | None:
        """expires() as an ISO time (for /api/ps), or None."""
        end = self.expires(idle_seconds)
        if end is None:
            return None
        moment = time.time() + (end - clock())
        return datetime.fromtimestamp(moment, timezone.utc).isoformat().replace("+00:00", "Z")


class ResidentModels:
    """The models in memory, by name: the Runtime's own (the "loaded model") and others."""

    def __init__(
        self,
        primary: ModelManager,
        primary_engine: object,
        *,
        listing: Callable[[], dict],
        load: Callable[[ModelManager, str], LoadedModel],
        new_manager: Callable[[], ModelManager],
        new_engine: Callable[[ModelManager], object],
        measure: Callable[[str, int], tuple[int, str | None]],
        budget: Callable[[int], int],
        idle_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`measure(name, held)`: (bytes it needs, why it cannot load or None), from Will it
        fit? counting `held` bytes (the residents', which unloads can give back) as free;
        `budget(held)`: the bytes all residents may take, given `held` bytes resident now."""
        self.primary = primary
        self.primary_engine = primary_engine
        self._listing = listing
        self._load = load
        self._new_manager = new_manager
        self._new_engine = new_engine
        self._measure = measure
        self._budget = budget
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._lock = threading.RLock()  # the table below
        self._load_lock = threading.Lock()  # one load (and its evictions) at a time
        self._primary: Resident | None = None
        self._others: dict[str, Resident] = {}
        self._sweeper: threading.Thread | None = None
        self._stopped = threading.Event()

    # -- what is resident ------------------------------------------------------------
    def _primary_entry(self) -> Resident | None:
        """The Runtime's own model as a resident, following loads made elsewhere (the Model tab)."""
        loaded = self.primary.current
        with self._lock:
            if loaded is None:
                self._primary = None
            elif self._primary is None or self._primary.loaded is not loaded or self._primary.name != loaded.name:
                self._primary = Resident(loaded.name, self.primary, self.primary_engine, -1, time.time(),
                                         self.clock())
            return self._primary

    def entries(self) -> list[Resident]:
        """Every resident model, the Runtime's own first."""
        first = self._primary_entry()
        with self._lock:
            others = [r for r in self._others.values() if r.loaded is not None]
        return ([first] if first else []) + others

    def find(self, name: str) -> Resident | None:
        return next((r for r in self.entries() if r.name == name), None)

    def engine_for(self, name: str) -> object | None:
        found = self.find(name)
        return found.engine if found else None

    def touch(self, name: str) -> None:
        found = self.find(name)
        if found is not None:
            found.used = self.clock()

    # -- loading -----------------------------------------------------------------------
    def ensure(self, name: str, allowed: bool) -> Resident | None:
        """The resident model `name`, loaded now if it is listed and `allowed`; None when
        it is not in the listing.  Blocks while it loads (and while older models make
        room: each waits for its running replies).  LoadRefused, DoesNotFit, LoadError."""
        found = self.find(name)
        if found is not None:
            found.used = self.clock()
            return found
        if name not in self._listing():
            return None
        if not allowed:
            raise LoadRefused(f"the model '{name}' is not loaded, and loading models on demand is off for this "
                              "caller (the server's owner loads it, or starts with --load-on-demand)", param="model")
        with self._load_lock:
            found = self.find(name)  # another request loaded it while this one waited
            if found is not None:
                found.used = self.clock()
                return found
            held = sum(self._need(r) for r in self.entries())
            need, problem = self._measure(name, held)
            if problem:
                raise DoesNotFit(f"the model '{name}' cannot be loaded: Will it fit? says {problem}", param="model")
            self._make_room(name, need)
            return self._load_one(name, need)

    def _need(self, resident: Resident) -> int:
        if resident.need < 0:
            resident.need = self._measure(resident.name, 0)[0]
        return resident.need

    def _make_room(self, name: str, need: int) -> None:
        residents = self.entries()
        held = sum(self._need(r) for r in residents)
        budget = self._budget(held)
        if need > budget:
            raise DoesNotFit(f"the model '{name}' cannot be loaded: Will it fit? counts {gib_text(need)} for it, "
                             f"more than the {gib_text(budget)} the resident models may take (--max-resident-gib)",
                             param="model")
        # Least recently used first; an idle one before a busy one (whose unload waits for its replies).
        for victim in sorted(residents, key=lambda r: (r.busy, r.used)):
            if held + need <= budget:
                break
            log.info("unloading %s to make room for %s", victim.name, name)
            self.unload(victim.name)
            held -= self._need(victim)

    def _load_one(self, name: str, need: int) -> Resident:
        if self.primary.current is None:
            self._load(self.primary, name)
            resident = self._primary_entry()
            resident.need = need
            return resident
        manager = self._new_manager()
        self._load(manager, name)
        resident = Resident(name, manager, self._new_engine(manager), need, time.time(), self.clock())
        with self._lock:
            self._others[name] = resident
        return resident

    def unload(self, name: str, timeout: float | None = None) -> bool:
        """Unload `name` once its running replies end (new ones wait meanwhile); False if it
        was not resident."""
        with self._lock:
            other = self._others.pop(name, None)
        if other is not None:
            other.manager.unload(timeout=timeout)
            other.engine.close()
            log.info("unloaded %s", name)
            return True
        primary = self._primary_entry()
        if primary is not None and primary.name == name:
            self.primary.unload(timeout=timeout)
            log.info("unloaded %s", name)
            return True
        return False

    def drop_copy(self, name: str) -> None:
        """The Runtime's own slot now holds `name` (the Model tab loaded it): unload the
        copy another slot holds, once its replies end."""
        with self._lock:
            other = self._others.pop(name, None)
        if other is not None:
            other.manager.unload()
            other.engine.close()

    # -- keep_alive and idle unloads ---------------------------------------------------
    def keep_alive(self, name: str, seconds: float) -> None:
        """An Ollama request's keep_alive for `name`: unloaded `seconds` after its last
        use (0: as soon as its replies end; negative: never)."""
        found = self.find(name)
        if found is None:
            return
        found.keep_for, found.used = seconds, self.clock()
        self.start_sweeping()

    def finished(self, name: str | None) -> None:
        """A request to `name` ended: its idle time starts now; keep_alive 0 unloads it."""
        found = self.find(name) if name else None
        if found is None:
            return
        found.used = self.clock()
        if found.keep_for == 0:
            threading.Thread(target=self._unload_when_idle, args=(found,), daemon=True,
                             name="keep-alive-unload").start()

    def _unload_when_idle(self, resident: Resident) -> None:
        deadline = time.monotonic() + KEEP_ALIVE_WAIT
        while resident.busy and time.monotonic() < deadline:
            time.sleep(0.02)
        if resident.keep_for == 0 and not resident.busy and self.find(resident.name) is resident:
            self.unload(resident.name)

    def sweep(self) -> list[str]:
        """Unload every model unused past its keep_alive or the idle timeout; their names."""
        now = self.clock()
        gone = []
        for resident in self.entries():
            end = resident.expires(self.idle_seconds)
            if end is not None and now >= end and not resident.busy:
                self.unload(resident.name)
                gone.append(resident.name)
        return gone

    def start_sweeping(self) -> None:
        with self._lock:
            if self._sweeper is not None:
                return
            self._sweeper = threading.Thread(target=self._sweep_forever, daemon=True, name="idle-unload")
            self._sweeper.start()

    def _sweep_forever(self) -> None:
        while not self._stopped.wait(SWEEP_SECONDS):
            try:
                self.sweep()
            except Exception:  # an unload that failed is logged; the next sweep tries again
                log.exception("unloading an idle model failed")

    def close(self) -> None:
        self._stopped.set()
        with self._lock:
            others = list(self._others.values())
        for resident in others:
            resident.engine.close()


def gib_text(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"
