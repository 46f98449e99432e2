"""The time that hutch's client-side waits use: the real clock, or a memory broker's.

Every wait that ends on a timeout (``Subscriber.messages(timeout=...)``, an RPC call's
deadline, ``WorkerPool.run(timeout=...)``, ``hutch consume --timeout``) reads its
connection's :class:`Clock`. On RabbitMQ that is :data:`REAL_CLOCK`, ``time.monotonic()``
and plain waits. A memory broker opened with ``memory://NAME?clock=virtual`` has a
:class:`VirtualClock`: while every thread that uses the broker waits in hutch for
something that only time can bring, the broker moves time forward to the earliest
deadline instead of sleeping until it (a *jump*). A test that waits for a 5 s RPC timeout
or a message delayed by a minute then takes milliseconds.

Which threads count: a thread is *known* to a virtual clock from its first operation on
the broker (publish, declare, ack...) or its first wait on the clock, until it ends. A
known thread is *busy* unless it waits inside hutch (:meth:`Clock.wait`), where it says
what would wake it (``ready``) and until when (``deadline``). Time jumps only when every
known thread waits, none of them is ready, and no connection has a callback to run: so
a handler that sleeps, a test that polls with ``time.sleep``, or a thread blocked outside
hutch (a ``join``, a lock) makes time run at its real pace, never early. What a virtual
clock cannot see is a thread that has not used the broker yet (one that sleeps before its
first publish): give such a thread a :meth:`Clock.wait` instead of ``time.sleep``, or use
the real clock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

__all__ = ["REAL_CLOCK", "Clock", "Mailbox", "VirtualClock"]

T = TypeVar("T")

#: How often (real seconds) a wait with a deadline looks whether time jumped past it.
POLL = 0.002


class Clock:
    """Time as hutch's waits on a connection see it: real time (this class).

    ``connection.clock`` is one; a test on a virtual memory broker reads the broker's time
    from it (``conn.clock.now()``) where it would read ``time.monotonic()``.
    """

    #: True for a memory broker's virtual clock.
    virtual = False

    def now(self) -> float:
        """Seconds on this clock, comparable with each other only (``time.monotonic()``)."""
        return time.monotonic()

    def deadline(self, timeout: float | None) -> float | None:
        """``now() + timeout``, or None for no timeout."""
        return None if timeout is None else self.now() + timeout

    def left(self, deadline: float | None) -> float | None:
        """Seconds until ``deadline`` (negative once past), or None for no deadline."""
        return None if deadline is None else deadline - self.now()

    def enter(self) -> None:
        """Make the calling thread known to this clock (nothing on the real clock)."""

    def wait(
        self,
        ready: Callable[[], bool],
        block: Callable[[float | None], object],
        deadline: float | None,
        *,
        poll: float | None = None,
    ) -> bool:
        """Block until ``ready()`` or until ``deadline`` passes on this clock.

        Args:
            ready: True once the wait is over. Called from other threads too, so it must
                only read (no locks that a waiting thread may hold).
            block: Blocks up to its argument in real seconds (None: until woken) and may
                return early; ``ready()`` is checked again after it.
            deadline: On this clock, or None for none.
            poll: Return after this many real seconds even if neither happened, for a
                caller that checks something else too (a stop flag). None: never.

        Returns:
            ``ready()``'s last answer.
        """
        poll_end = None if poll is None else time.monotonic() + poll
        while True:
            if ready():
                return True
            left = self.left(deadline)
            if left is not None and left <= 0:
                return False
            real_left = None if poll_end is None else poll_end - time.monotonic()
            if real_left is not None and real_left <= 0:
                return False
            self._block(ready, block, deadline, _least(left, real_left))

    def _block(
        self,
        ready: Callable[[], bool],
        block: Callable[[float | None], object],
        deadline: float | None,
        seconds: float | None,
    ) -> None:
        block(seconds)

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` on this clock (a virtual clock may jump over them)."""
        event = threading.Event()
        self.wait(event.is_set, event.wait, self.now() + seconds)


REAL_CLOCK = Clock()


class _Waiting:
    __slots__ = ("deadline", "ready")

    def __init__(self, ready: Callable[[], bool], deadline: float | None) -> None:
        self.ready = ready
        self.deadline = deadline


class VirtualClock(Clock):
    """A memory broker's clock: real monotonic time, plus what jumps have added.

    The broker owns it and decides when to jump (:meth:`jump_target` under its lock);
    see the module's docstring for when that is.
    """

    virtual = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Seconds added by jumps.
        self.offset = 0.0
        # a known thread -> what it waits for, or None while busy
        self._threads: dict[threading.Thread, _Waiting | None] = {}

    def __repr__(self) -> str:
        return f"<hutch virtual clock +{self.offset:.3f}s, {len(self._threads)} threads>"

    def now(self) -> float:
        """Real monotonic time plus the jumps so far."""
        return time.monotonic() + self.offset

    def enter(self) -> None:
        """Make the calling thread known (busy until it waits in :meth:`wait`)."""
        thread = threading.current_thread()
        if thread not in self._threads:
            with self._lock:
                self._threads.setdefault(thread, None)

    def _block(
        self,
        ready: Callable[[], bool],
        block: Callable[[float | None], object],
        deadline: float | None,
        seconds: float | None,
    ) -> None:
        # while blocked this thread counts as waiting; a jump past the deadline is seen
        # within POLL
        with self._waiting(ready, deadline):
            block(_least(seconds, None if deadline is None else POLL))

    @contextmanager
    def _waiting(self, ready: Callable[[], bool], deadline: float | None) -> Iterator[None]:
        thread = threading.current_thread()
        with self._lock:
            self._threads[thread] = _Waiting(ready, deadline)
        try:
            yield
        finally:
            with self._lock:
                self._threads[thread] = None

    def jump_target(self) -> tuple[bool, float | None]:
        """Whether every known thread waits with nothing ready, and the earliest deadline.

        Returns:
            ``(quiet, deadline)``: ``quiet`` is False while any known thread is busy or
            ready; ``deadline`` is the earliest of the waiting threads' deadlines.
        """
        with self._lock:
            earliest: float | None = None
            for thread, waiting in list(self._threads.items()):
                if not thread.is_alive():
                    del self._threads[thread]
                    continue
                if waiting is None or waiting.ready():
                    return False, None
                if waiting.deadline is not None:
                    earliest = _least(earliest, waiting.deadline)
            return bool(self._threads), earliest

    def advance(self, seconds: float) -> None:
        """Move this clock ``seconds`` forward (a jump)."""
        with self._lock:
            self.offset += seconds

    def busy_threads(self) -> list[str]:
        """The names of the known threads that keep time from jumping (for debugging)."""
        with self._lock:
            return [
                t.name
                for t, w in self._threads.items()
                if t.is_alive() and (w is None or w.ready())
            ]


class Mailbox(Generic[T]):
    """A FIFO of items for one or more consumer threads that wait on a :class:`Clock`.

    Like ``queue.SimpleQueue``, but a waiting consumer takes an item only once it is
    busy again, so that a virtual clock never sees an item that is neither in the box
    nor in a busy thread's hands.
    """

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._cond = threading.Condition(threading.Lock())

    def put(self, item: T) -> None:
        """Add ``item`` and wake a consumer."""
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def ready(self) -> bool:
        """True while an item waits (lock-free: see :meth:`Clock.wait`)."""
        return bool(self._items)

    def qsize(self) -> int:
        """How many items wait (as ``queue.SimpleQueue.qsize``)."""
        return len(self._items)

    def get_nowait(self) -> T:
        """Take the oldest item.

        Raises:
            IndexError: None waits.
        """
        with self._cond:
            return self._items.popleft()

    def get(self, clock: Clock, deadline: float | None, *, poll: float | None = None) -> T | None:
        """Take the oldest item, waiting on ``clock`` until ``deadline`` (None: forever).

        An item that already waits is taken however late it is. Returns None when the
        deadline passed first, or when ``poll`` real seconds passed without an item.
        """
        while True:
            with self._cond:
                if self._items:
                    return self._items.popleft()
            if not clock.wait(self.ready, self._block, deadline, poll=poll):
                with self._cond:
                    return self._items.popleft() if self._items else None
            # ready: take it (another consumer may have been first: then wait again)

    def _block(self, seconds: float | None) -> None:
        with self._cond:
            if not self._items:
                self._cond.wait(seconds)


def _least(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
