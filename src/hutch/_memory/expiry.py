"""Expiry in the memory broker: what falls due when, and what its lock remembers of it.

Every operation expires what is due before and after it runs (a mixin of
:class:`~hutch._memory.broker.Broker`). The scan after an operation also finds the
earliest time anything can fall due; until then, and while nothing else changed, the scan
before the next operation has nothing to find. Anything else that takes the lock may
change what is due (a channel closed, its messages requeued), so taking the lock that way
forgets that time: only the broker's operation path (``Broker.run``) and read-only
questions take the :attr:`BrokerLock.raw` lock directly.
"""

from __future__ import annotations

import math
import threading
from types import TracebackType
from typing import TYPE_CHECKING

from hutch._memory.dead_letter import DeathReason
from hutch._memory.parts import BrokerPart

if TYPE_CHECKING:
    from hutch._memory.broker import Vhost
    from hutch._memory.queues import MemoryQueue

__all__ = ["BrokerLock", "Expiring"]


class BrokerLock:
    """A re-entrant lock that forgets the remembered calm when taken or released.

    Attributes:
        raw: The lock itself, for the paths that keep :attr:`calm_until` themselves.
        calm_until: Broker time before which nothing expires, as of the last full scan
            (``math.inf``: nothing will), or None when unknown (scan to know).
    """

    def __init__(self) -> None:
        self.raw = threading.RLock()
        self.calm_until: float | None = None

    def __enter__(self) -> BrokerLock:
        self.raw.acquire()
        self.calm_until = None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # a nested Broker.run may have remembered a calm before this block changed things
        self.calm_until = None
        self.raw.release()


class Expiring(BrokerPart):
    """Message and queue expiry, earliest first (a Broker mixin, under its lock)."""

    def _next_deadline(self) -> float | None:
        calm = self._lock.calm_until
        soonest = self._soonest() if calm is None else calm
        return None if soonest == math.inf else soonest

    def _soonest(self) -> float:
        """The earliest time anything falls due (``math.inf``: nothing will).

        Queues that can expire nothing leave the timed ones on the way.
        """
        soonest = math.inf
        for vhost in self._vhosts.values():
            idle = False
            for queue in vhost.timed:
                at = queue.deadline()
                if at is None:
                    idle = idle or not queue.may_expire
                elif at < soonest:
                    soonest = at
            if idle:
                vhost.untime_idle()
        return soonest

    def _expire_due(self, now: float) -> None:
        """Expire messages and queues due by ``now``, earliest first, each at its time.

        Remembers when the next one falls due (``calm_until``).
        """
        while True:
            due = self._first_due(now)
            if due is None:
                return
            at, _, whole, vhost, queue = due
            if whole:
                self._delete_queue(vhost, queue, at)
                continue
            entry = queue.pop_expired(at)
            queue.head_since = at
            if entry is not None:
                self._dead_letter(vhost, queue, entry.message, DeathReason.EXPIRED, at)

    def _first_due(self, now: float) -> tuple[float, int, bool, Vhost, MemoryQueue] | None:
        """What expires first by ``now``, or None (then ``calm_until`` is the next time).

        Of two due at the same time, the older queue's goes first, and in one queue its
        message before the queue itself.
        """
        soonest = self._soonest()
        if soonest > now:
            self._lock.calm_until = soonest
            return None
        best: tuple[float, int, bool, Vhost, MemoryQueue] | None = None
        for vhost in self._vhosts.values():
            for queue in vhost.timed:
                expiry, gone = queue.next_expiry(), queue.expires_at()
                if expiry is not None:
                    key = (max(expiry, queue.head_since), queue.created, False)
                    if key[0] <= now and (best is None or key < best[:3]):
                        best = (*key, vhost, queue)
                if gone is not None and gone <= now:
                    key = (gone, queue.created, True)
                    if best is None or key < best[:3]:
                        best = (*key, vhost, queue)
        return best
