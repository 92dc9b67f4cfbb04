"""Who decodes next: the waiting owner with the fewest running requests goes first.

Owners are whoever the scheduler should be fair between: a signed-in user, a browser
session, the API key.  Among waiting owners, the one with the fewest sequences already
running is admitted next (ties: whoever was served least recently), so someone who sends
twenty requests gets no more turns than someone who sends one.  And no owner may hold
more than `per_owner` running sequences (by default one less than the batch), so a
place is always free for somebody else: a newcomer starts at the next step instead of
waiting for a flood to drain.  The running requests are never paused or evicted: what
has started finishes.
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
        # owner -> its waiting requests; dict order is the tie-break (least recently served first)
        self._waiting: OrderedDict[str, deque[Any]] = OrderedDict()
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

    def put_many(self, owner: str, items: list[Any]) -> bool:
        """Queue all of `items` at once, or none (False) when they do not all fit: the
        model thread sees all of them or none, so they are admitted at the same step."""
        with self._lock:
            if self._count + len(items) > self.max_waiting:
                return False
            self._waiting.setdefault(owner, deque()).extend(items)
            self._count += len(items)
            self._lock.notify_all()
            return True

    def wake(self) -> None:
        """Wake a waiter so it can look at something besides the queue (a shutdown)."""
        with self._lock:
            self._lock.notify_all()

    def wait(self, timeout: float | None = None, until: Callable[[], bool] | None = None) -> bool:
        """Block until something is waiting, `until()` is true when woken (wake()), or
        timeout; True if something is waiting."""
        with self._lock:
            self._lock.wait_for(lambda: self._count > 0 or (until is not None and until()), timeout)
            return self._count > 0

    def _next_owner(self, running: dict[str, int], capped: bool = True) -> str | None:
        best, best_count = None, None
        for owner in self._waiting:  # dict order breaks ties
            count = running.get(owner, 0)
            if capped and count >= self.per_owner:
                continue
            if best_count is None or count < best_count:
                best, best_count = owner, count
        return best

    def take(self, running: dict[str, int], fits: Callable[[Any], bool]) -> Any | None:
        """The next request to admit, or None.  `running` counts each owner's running
        sequences; `fits(item)` says whether the backend has room for it."""
        with self._lock:
            owner = self._next_owner(running)
            if owner is None:
                return None
            queue = self._waiting[owner]
            if not fits(queue[0]):
                return None  # nobody jumps ahead of a request that waits for room
            item = queue.popleft()
            self._count -= 1
            del self._waiting[owner]
            if queue:
                self._waiting[owner] = queue  # served: to the back of the tie-break order
            return item

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

    def order(self, running: dict[str, int] | None = None) -> Iterator[Any]:
        """Waiting requests in the order they would be admitted if nothing finished
        meanwhile (once every owner is at its cap, as places free up)."""
        with self._lock:
            waiting = OrderedDict((owner, deque(queue)) for owner, queue in self._waiting.items())
        counts = dict(running or {})
        simulated = FairQueue(self.max_waiting, self.per_owner)
        simulated._waiting = waiting
        while simulated._waiting:
            owner = simulated._next_owner(counts) or simulated._next_owner(counts, capped=False)
            queue = simulated._waiting.pop(owner)
            yield queue.popleft()
            counts[owner] = counts.get(owner, 0) + 1
            if queue:
                simulated._waiting[owner] = queue
