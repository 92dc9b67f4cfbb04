"""Who decodes next: waiting requests are admitted round-robin across their owners.

One user (or API key) sending twenty requests gets one place in each round, like
everybody else, so another user's chat is never stuck behind the flood.  An owner
already holding `per_owner` running sequences is passed over while someone else waits
(when nobody else waits, the free places are theirs: the batch never idles for fairness).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Any


class FairQueue:
    def __init__(self, max_waiting: int, per_owner: int):
        self.max_waiting = max_waiting
        self.per_owner = max(1, per_owner)
        self._lock = threading.Condition()
        self._waiting: OrderedDict[str, deque[Any]] = OrderedDict()  # owner -> requests; order = turn
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def put(self, owner: str, item: Any) -> bool:
        """Queue `item`; False (nothing queued) when max_waiting are already waiting."""
        with self._lock:
            if self._count >= self.max_waiting:
                return False
            self._waiting.setdefault(owner, deque()).append(item)
            self._count += 1
            self._lock.notify_all()
            return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until something is waiting (or timeout); True if something is."""
        with self._lock:
            return self._lock.wait_for(lambda: self._count > 0, timeout)

    def take(self, running: dict[str, int], fits: Callable[[Any], bool]) -> Any | None:
        """The next request to admit, or None.  `running` counts each owner's running
        sequences; `fits(item)` says whether the backend has room for it."""
        with self._lock:
            others_waiting = len(self._waiting) > 1
            for owner in list(self._waiting):
                if others_waiting and running.get(owner, 0) >= self.per_owner:
                    continue
                queue = self._waiting[owner]
                if not fits(queue[0]):
                    return None  # in turn order: nobody jumps ahead of a request that waits for room
                item = queue.popleft()
                self._count -= 1
                del self._waiting[owner]
                if queue:
                    self._waiting[owner] = queue  # back of the line for this owner's next one
                return item
            return None

    def remove_if(self, predicate: Callable[[Any], bool]) -> list[Any]:
        """Take out (and return) every waiting request for which predicate is true."""
        removed = []
        with self._lock:
            for owner in list(self._waiting):
                queue = self._waiting[owner]
                kept = deque(item for item in queue if not predicate(item))
                removed += [item for item in queue if predicate(item)]
                if kept:
                    self._waiting[owner] = kept
                else:
                    del self._waiting[owner]
            self._count -= len(removed)
        return removed

    def order(self) -> Iterator[Any]:
        """Waiting requests in the order they would be admitted (round-robin by owner)."""
        with self._lock:
            queues = [list(q) for q in self._waiting.values()]
        depth = 0
        while any(depth < len(q) for q in queues):
            for q in queues:
                if depth < len(q):
                    yield q[depth]
            depth += 1
