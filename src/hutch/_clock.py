"""The time that hutch's client-side waits use: the real clock, or a memory broker's.

Every wait that ends on a timeout (``Subscriber.messages(timeout=...)``, an RPC call's
deadline, ``WorkerPool.run(timeout=...)``, ``hutch consume --timeout``) reads its
connection's :class:`Clock`. On RabbitMQ that is :data:`REAL_CLOCK`, ``time.monotonic()``
and plain waits. A memory broker opened with ``memory://NAME?clock=virtual`` has a
:class:`VirtualClock`: while every thread that uses the broker waits in hutch for
something that only time can bring, the broker moves time forward to the earliest
deadline instead of sleeping until it (a *jump*). A test that waits for a 5 s RPC timeout
or a message delayed by a minute then takes milliseconds.

Which threads count: every live thread of the process. A thread that has used a virtual
broker (an operation, a channel, a wait) is *waiting* while it blocks inside hutch
(:meth:`Clock.wait`), where it says what would wake it (``ready``) and until when
(``deadline``), and *busy* otherwise. Any other thread counts as busy, since it may yet
publish, except hutch's own threads that never act on a memory broker (a RabbitMQ
connection's I/O thread, the metrics server) and threads that were already running when
every virtual broker now open was created (a test session's helpers, a metrics exporter)
and have not used one. Time jumps only when no thread is busy, no
waiting thread is ready, and no memory connection has a callback to run: so a handler
that sleeps, a test that polls with ``time.sleep``, or a thread blocked outside hutch (a
``join``, a lock, a socket) keeps time at its real pace. Time never jumps early; at worst
it does not jump, and the waits take as long as on the real clock.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from typing import Any, Generic, Literal, Protocol, TypeVar

__all__ = [
    "REAL_CLOCK",
    "VIRTUAL_CLOCK",
    "Clock",
    "Mailbox",
    "TimeSource",
    "Timer",
    "VirtualClock",
    "join_thread",
]

T = TypeVar("T")

#: How often (real seconds) a wait with a deadline looks whether time jumped past it.
POLL = 0.002


class _Waiting:
    __slots__ = ("deadline", "ready", "wake")

    def __init__(
        self,
        ready: Callable[[], bool],
        deadline: float | None,
        wake: Callable[[], None] | None,
    ) -> None:
        self.ready = ready
        self.deadline = deadline
        self.wake = wake


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

    def touch(self) -> None:
        """Say that a waiting thread may be ready now (nothing on the real clock)."""

    def wait(
        self,
        ready: Callable[[], bool],
        block: Callable[[float | None], object],
        deadline: float | None,
        *,
        poll: float | None = None,
        wake: Callable[[], None] | None = None,
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
            wake: Makes ``block`` return early; a virtual clock calls it when it jumps
                past ``deadline`` (without it the wait notices within 2 ms).

        Returns:
            ``ready()``'s last answer.
        """
        poll_end = None if poll is None else time.monotonic() + poll
        waiting = _Waiting(ready, deadline, wake)
        while True:
            if ready():
                return True
            left = self.left(deadline)
            if left is not None and left <= 0:
                return False
            real_left = None if poll_end is None else poll_end - time.monotonic()
            if real_left is not None and real_left <= 0:
                return False
            self._block(waiting, block, _least(left, real_left))

    def _block(
        self, waiting: _Waiting, block: Callable[[float | None], object], seconds: float | None
    ) -> None:
        block(seconds)

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` on this clock (a virtual clock may jump over them)."""
        event = threading.Event()
        self.wait(event.is_set, event.wait, self.now() + seconds, wake=event.set)

    def wait_future(self, future: Future[Any], deadline: float | None) -> bool:
        """Block until ``future`` is done or ``deadline`` passes on this clock; True if done.

        A thread blocked in ``Future.result`` counts as busy for a virtual clock; one that
        waits here lets time jump to ``deadline``.
        """
        return self.wait(future.done, lambda s: futures_wait([future], s), deadline)


REAL_CLOCK = Clock()


class TimeSource(Protocol):
    """A memory broker on virtual time, as the clock's jumps see it."""

    #: The threads that were alive when it was created (see :class:`VirtualClock`).
    threads_before: frozenset[threading.Thread]

    def quiet_until(self) -> tuple[bool, float | None]:
        """False while a callback waits to run; else True and seconds to its next expiry."""

    def catch_up(self) -> None:
        """Expire what is due now that time has jumped."""


class VirtualClock(Clock):
    """Virtual time, one for the process: real monotonic time, plus what jumps added.

    Every memory broker opened with ``?clock=virtual`` runs on it (:data:`VIRTUAL_CLOCK`);
    a thread of its own jumps (see the module's docstring for when).
    """

    virtual = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Seconds added by jumps.
        self.offset = 0.0
        # a thread that used a virtual broker -> what it waits for, or None while busy
        self._threads: dict[threading.Thread, _Waiting | None] = {}
        self._sources: weakref.WeakSet[TimeSource] = weakref.WeakSet()
        self._changes = 0  # bumped by whatever could make a waiting thread ready
        self._jumper: threading.Thread | None = None
        self._look = threading.Condition(self._lock)  # tells the jumper to look now
        # hutch's threads that never act on a memory broker (a RabbitMQ connection's I/O
        # thread, the memory broker's own expiry timer, the metrics server)
        self._ignored: weakref.WeakSet[threading.Thread] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"<hutch virtual clock +{self.offset:.3f}s>"

    def now(self) -> float:
        """Real monotonic time plus the jumps so far."""
        return time.monotonic() + self.offset

    def enter(self) -> None:
        """Make the calling thread known (busy until it waits in :meth:`wait`)."""
        thread = threading.current_thread()
        if thread not in self._threads:
            with self._lock:
                self._threads.setdefault(thread, None)
                self._changes += 1

    def ignore(self, thread: threading.Thread) -> None:
        """Leave ``thread`` out: one of hutch's that never acts on a memory broker."""
        with self._lock:
            self._ignored.add(thread)

    def touch(self) -> None:
        """Say that something happened that a waiting thread may be ready for."""
        with self._lock:
            self._changes += 1

    def add_source(self, source: TimeSource) -> None:
        """Run ``source`` (a memory broker) on this clock; starts the jumping thread."""
        with self._lock:
            self._sources.add(source)
            if self._jumper is None:
                self._jumper = threading.Thread(
                    target=self._jump_loop, name="hutch-virtual-clock", daemon=True
                )
                self._jumper.start()

    def remove_source(self, source: TimeSource) -> None:
        """Stop looking at ``source`` (a closed broker)."""
        with self._lock:
            self._sources.discard(source)

    @property
    def active(self) -> bool:
        """True while a memory broker runs on this clock."""
        return bool(self._sources)

    def advance(self, seconds: float) -> None:
        """Move this clock ``seconds`` forward."""
        with self._lock:
            self.offset += seconds
            self._changes += 1

    def _block(
        self, waiting: _Waiting, block: Callable[[float | None], object], seconds: float | None
    ) -> None:
        # while blocked this thread counts as waiting; a jump past the deadline wakes it,
        # or is seen within POLL
        thread = threading.current_thread()
        with self._lock:
            self._threads[thread] = waiting
            if self._last_to_wait(thread):
                self._look.notify()  # the jumper looks now
        try:
            unwoken = waiting.deadline is not None and waiting.wake is None
            block(_least(seconds, POLL if unwoken else None))
        finally:
            with self._lock:
                self._threads[thread] = None
                self._changes += 1

    def _last_to_wait(self, me: threading.Thread) -> bool:
        """False if another thread known to this clock is busy or ready (call with the lock).

        Then time cannot jump yet, and that thread tells the jumper when it waits in its
        turn: waking the jumper on every wait would cost a thread switch and a scan each
        time, most of the cost of a message on virtual time. A wait made ready without a
        notification is seen at the jumper's next periodic look.
        """
        for thread, waiting in self._threads.items():
            if thread is me:
                continue
            if waiting is None:
                if thread.is_alive():
                    return False
            elif waiting.ready():
                return False
        return True

    # ------------------------------------------------------------------ jumps
    def _jump_loop(self) -> None:
        while True:
            with self._lock:
                # told when a thread starts to wait; else every 5 POLLs (a thread ended)
                self._look.wait(5 * POLL)
                if not self._sources:
                    self._jumper = None
                    return
            self.jump()

    def jump(self) -> bool:
        """Jump to the earliest deadline if nothing else can happen first; True if it did."""
        with self._lock:
            changes = self._changes
            holders, earliest, nudges = self._scan()
            sources = list(self._sources)
        for wake in nudges:  # ready without being told (a flag that stop() set): wake now
            wake()
        if holders:
            return False
        steps = [] if earliest is None else [earliest - self.now()]
        for source in sources:
            quiet, due = source.quiet_until()
            if not quiet:
                return False
            if due is not None:
                steps.append(due)
        if not steps:
            return False
        with self._lock:
            # nothing happened meanwhile: no thread woke, no callback was queued
            if self._changes != changes or self._all_waiting() is False:
                return False
            step = min(steps)
            if step > 0:
                self.offset += step
            self._changes += 1
            now = self.now()
            wakes = [
                w.wake
                for w in self._threads.values()
                if w is not None and w.wake is not None
                if w.deadline is not None and w.deadline <= now
            ]
        for source in sources:
            source.catch_up()
        for wake in wakes:
            wake()
        return True

    def _all_waiting(self) -> float | Literal[False] | None:
        """The earliest deadline if every thread waits with nothing ready, else False."""
        holders, earliest, _ = self._scan()
        return False if holders else earliest

    def _scan(
        self,
    ) -> tuple[list[threading.Thread], float | None, list[Callable[[], None]]]:
        """Who keeps time from jumping, the earliest deadline, the wakes of ready waits.

        The wakes are those of waiting threads that are ready but may not have been told
        (a flag set without an event, as ``RpcServer.stop()`` on the main thread does).

        The caller is left out. Every other live thread counts: one that used a virtual
        broker by its state, any other thread as busy (a thread of the program that may
        yet publish), except the threads of hutch's that never act on one (:meth:`ignore`)
        and threads older than every virtual broker (a test session's helpers, a metrics
        exporter). Call with the lock.
        """
        holders: list[threading.Thread] = []
        earliest: float | None = None
        nudges: list[Callable[[], None]] = []
        me = threading.current_thread()
        # the threads known to this clock, by their state (one that has finished its code
        # but not yet died is no longer listed by threading.enumerate(): it counts here)
        for thread, waiting in list(self._threads.items()):
            if not thread.is_alive():
                del self._threads[thread]
            elif thread is me:
                continue
            elif waiting is None:
                holders.append(thread)
            elif waiting.ready():
                holders.append(thread)
                if waiting.wake is not None:
                    nudges.append(waiting.wake)
            elif waiting.deadline is not None:
                earliest = _least(earliest, waiting.deadline)
        sources = list(self._sources)
        for thread in threading.enumerate():
            if thread is me or thread in self._threads or thread in self._ignored:
                continue
            if not _older(thread, sources):
                holders.append(thread)
        return holders, earliest, nudges

    def busy_threads(self) -> list[str]:
        """The names of the threads (other than the caller) that keep time from jumping."""
        with self._lock:
            return [thread.name for thread in self._scan()[0]]


#: The process's virtual time, shared by every memory broker on ``?clock=virtual``.
VIRTUAL_CLOCK = VirtualClock()


def join_thread(thread: threading.Thread, timeout: float | None) -> None:
    """``thread.join(timeout)``, counted as waiting for virtual time's jumps meanwhile.

    A thread that joins another only waits for what that one does: while a virtual broker
    is open it says so (see :class:`VirtualClock`); else this is a plain join.
    """
    if VIRTUAL_CLOCK.active:
        VIRTUAL_CLOCK.wait(_ended(thread), thread.join, None, poll=timeout)
    else:
        thread.join(timeout)


def _ended(thread: threading.Thread) -> Callable[[], bool]:
    # done once its code has returned: a dying thread leaves threading.enumerate() before
    # is_alive() turns False, and nothing it does then can wake anyone
    return lambda: not thread.is_alive() or thread not in threading.enumerate()


class Timer(threading.Thread):
    """Calls ``function()`` once ``delay`` seconds have passed on ``clock``, unless cancelled.

    ``threading.Timer`` on a :class:`Clock`: on a virtual clock its thread counts as
    waiting, so a pause (a held message's requeue) is a deadline that time may jump to
    rather than a busy thread that keeps it at its real pace.
    """

    def __init__(
        self, clock: Clock, delay: float, function: Callable[[], object], *, name: str
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._clock = clock
        self._delay = delay
        self._function = function
        self._cancelled = False
        self._flag = threading.Event()  # set by cancel() and by a jump past the deadline

    def cancel(self) -> None:
        """Do not call the function if it has not been called yet."""
        self._cancelled = True
        self._flag.set()

    def start(self) -> None:
        """Start counting ``delay`` from now."""
        self._deadline = self._clock.deadline(self._delay)
        super().start()

    def run(self) -> None:
        """Wait for the deadline (or the cancel), then call the function."""
        self._clock.enter()
        self._clock.wait(self._is_cancelled, self._flag.wait, self._deadline, wake=self._flag.set)
        if not self._cancelled:
            self._function()

    def _is_cancelled(self) -> bool:
        return self._cancelled


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

    def take(self) -> T | None:
        """The oldest item, or None if none waits (for boxes whose items are never None)."""
        with self._cond:
            return self._items.popleft() if self._items else None

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
        if not clock.virtual:  # the hot path on RabbitMQ: one lock, no clock bookkeeping
            now = time.monotonic()
            end = _least(deadline, None if poll is None else now + poll)
            with self._cond:
                while not self._items:
                    if end is None:
                        self._cond.wait()
                    else:
                        left = end - now
                        if left <= 0:
                            return None
                        self._cond.wait(left)
                        now = time.monotonic()
                return self._items.popleft()
        while True:
            with self._cond:
                if self._items:
                    return self._items.popleft()
            if not clock.wait(self.ready, self._block, deadline, poll=poll, wake=self._wake):
                with self._cond:
                    return self._items.popleft() if self._items else None
            # ready: take it (another consumer may have been first: then wait again)

    def _block(self, seconds: float | None) -> None:
        with self._cond:
            if not self._items:
                self._cond.wait(seconds)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


def _older(thread: threading.Thread, sources: list[TimeSource]) -> bool:
    """True if ``thread`` was alive before every source was created."""
    return bool(sources) and all(thread in source.threads_before for source in sources)


def _least(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
