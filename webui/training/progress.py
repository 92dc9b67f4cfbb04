"""A training run's progress, written by the training thread and read by the page.

The trainer's callback records each step; readers take a `Snapshot` (a frozen copy),
so the Training tab's poll never sees a half-updated record.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Literal

State = Literal["idle", "preparing", "training", "saving", "done", "stopped", "failed"]


@dataclass(frozen=True)
class Snapshot:
    name: str
    state: State
    step: int
    max_steps: int
    first_step: int  # where this session began (above 0 after a resume)
    losses: tuple[tuple[int, float], ...]  # (step, loss) from the first step ever, resumes included
    tokens_per_second: float
    eta_seconds: float | None
    message: str

    @property
    def fraction(self) -> float:
        return self.step / self.max_steps if self.max_steps else 0.0

    @property
    def running(self) -> bool:
        return self.state in ("preparing", "training", "saving")

    def line(self) -> str:
        """One line for a terminal or a status box."""
        if self.state in ("idle", "preparing"):
            return self.message or self.state
        parts = [f"{self.state}: step {self.step}/{self.max_steps}"]
        if self.losses:
            parts.append(f"loss {self.losses[-1][1]:.4f}")
        if self.tokens_per_second:
            parts.append(f"{self.tokens_per_second:,.0f} tokens/s")
        if self.eta_seconds is not None and self.state == "training":
            parts.append(f"ETA {format_seconds(self.eta_seconds)}")
        if self.message:
            parts.append(self.message)
        return ", ".join(parts)


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class Progress:
    name: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _state: State = "idle"
    _step: int = 0
    _max_steps: int = 0
    _first_step: int = 0
    _losses: list[tuple[int, float]] = field(default_factory=list)
    _tokens: int = 0
    _started: float = 0.0
    _ended: float = 0.0  # when the run stopped: its rate is over the run, not up to now
    _message: str = ""

    def set_state(self, state: State, message: str = "") -> None:
        with self._lock:
            if state != "training" and self._state == "training" and self._started:
                self._ended = time.monotonic()
            self._state, self._message = state, message

    def begin(self, step: int, max_steps: int, losses: list[tuple[int, float]]) -> None:
        """Training starts (or resumes) at `step` of `max_steps`, with the losses so far."""
        with self._lock:
            self._state, self._message = "training", ""
            self._step = self._first_step = step
            self._max_steps = max_steps
            self._losses = list(losses)
            self._tokens = 0
            self._started, self._ended = time.monotonic(), 0.0

    def add_tokens(self, count: int) -> None:
        with self._lock:
            self._tokens += count

    def step(self, step: int, loss: float | None = None) -> None:
        with self._lock:
            self._step = step
            if loss is not None and (not self._losses or self._losses[-1][0] != step):
                self._losses.append((step, loss))

    def snapshot(self) -> Snapshot:
        with self._lock:
            elapsed = (self._ended or time.monotonic()) - self._started if self._started else 0.0
            done = self._step - self._first_step
            eta = elapsed / done * (self._max_steps - self._step) if done > 0 else None
            rate = self._tokens / elapsed if elapsed > 0 else 0.0
            return Snapshot(self.name, self._state, self._step, self._max_steps, self._first_step,
                            tuple(self._losses), rate, eta, self._message)


class BackgroundJob:
    """A job on a thread of its own whose progress any thread may read (LoRA training,
    webui/training/service.py; control-vector training, webui/steer/service.py).  The
    subclass sets `_thread`, `_progress` and `_stop`."""

    _thread: threading.Thread | None
    _progress: Progress
    _stop: threading.Event

    def _request_stop(self, idle: str, stopping: str) -> str:
        """Ask the running job to stop; `idle` or `stopping` is what to tell the user."""
        if self._thread is None or not self._thread.is_alive():
            return idle
        self._stop.set()
        return stopping

    def status(self) -> Snapshot:
        return self._progress.snapshot()

    def wait(self, timeout: float | None = None) -> Snapshot:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.status()
