"""WorkerPool[T]: competing consumers with fair dispatch, retries and graceful shutdown.

Layout
------
A pool runs ``concurrency`` worker threads and one AMQP consumer of the work queue per
channel (one channel by default). A consumer's ``basic.qos(window, global=False)`` lets
the broker send it at most ``window`` unacked messages, where the window is
:func:`window` (``prefetch`` per worker on the channel plus up to 2); its deliveries go
into one in-memory inbox that the channel's workers share, so whichever worker frees
first takes the next message, already here (local dispatch: no worker waits a broker round
trip after its ack). A message is acked only after its handler returned, so a busy pool
holds at most its window and the broker gives the rest to other pools (fair dispatch
across hosts). Partitions keep one consumer per partition instead (see
:mod:`hutch._worker_pool.rebalance`).

The connection's I/O thread only moves bytes: it puts deliveries into the inboxes and
sends the acks the workers hand back, so heartbeats keep flowing however long a handler
runs. With ``processes=True`` each worker thread drives one child process (see
:mod:`hutch._worker_pool.process`), so CPU-bound handlers are not serialized by the GIL.

Failures
--------
Each attempt ends in an :class:`~hutch._worker_pool.outcome.Outcome`;
:func:`~hutch._worker_pool.routing.decide` picks its route (ack, requeue, retry through a
delay queue, dead letter) and :class:`~hutch._worker_pool.routing.FailureRouter` carries
it out. See :class:`~hutch.RetryPolicy`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Union, cast, overload

from hutch._amqp import ChannelApi
from hutch._checks import check_bool, check_int, check_timeout
from hutch._clock import Mailbox, join_thread
from hutch._connection import Connection, resolve_connection
from hutch._exceptions import (
    ClosedError,
    ConsumerCancelled,
    HutchError,
)
from hutch._lifecycle import Lifecycle, LifecycleState
from hutch._loading import load_callable
from hutch._message import Message
from hutch._publisher import BatchResult
from hutch._retry import RetryPolicy
from hutch._serialization import Codec, codec_for
from hutch._signals import graceful_signals
from hutch._subscriber import wants_message
from hutch._topology import Queue, QueueType
from hutch._worker_pool.partitions import (
    check_partitions,
    partition_census,
    partition_exchange,
    partition_names,
    partition_queue_type,
    partition_topology,
)
from hutch._worker_pool.process import Child, check_picklable_by_name
from hutch._worker_pool.rebalance import PartitionConsumers
from hutch._worker_pool.routing import FailureRouter
from hutch._worker_pool.stats import PoolStats, summary
from hutch._worker_pool.task_queue import TaskQueue, work_queue
from hutch._worker_pool.worker import Crew, Worker

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

    from hutch._topology import FieldValue

__all__ = ["WorkerPool", "load_handler", "window"]

log = logging.getLogger("hutch")

T = TypeVar("T")

Handler = Union[Callable[[T], object], Callable[[T, Message[T]], object]]

_DEFAULT_RETRY = RetryPolicy()

# how repr() names the pool's lifecycle states
_WORDS = {
    Lifecycle.NEW: "new",
    Lifecycle.OPENING: "starting",
    Lifecycle.OPEN: "running",
    Lifecycle.CLOSING: "stopping",
    Lifecycle.CLOSED: "stopped",
    Lifecycle.FAILED: "failed",
}


def window(workers: int, prefetch: int) -> int:
    """Unacked messages one consumer may hold for ``workers`` workers (its ``basic.qos``).

    ``prefetch`` per worker plus up to 2 spare: when a worker acks, the next message is
    already in the pool's inbox, so no worker waits a broker round trip, while a busy pool
    holds at most 2 messages more than it works on (the broker gives the rest to other
    pools). A single worker gets 1 spare, so at most one message waits behind its task.

    Example:
        >>> window(4, 1)
        6
        >>> window(1, 1)
        2
    """
    return min(65535, workers * prefetch + min(2, workers))


def load_handler(spec: str) -> Callable[..., object]:
    """Import a handler named ``"package.module:function"`` (or ``"module:Class.method"``).

    Args:
        spec: The module's import path and the attribute path inside it, joined by ``:``.

    Returns:
        The callable.

    Raises:
        TypeError: ``spec`` is not a string.
        ValueError: The spec is malformed, the module cannot be imported, the attribute
            does not exist or is not callable.

    Example:
        >>> load_handler("os.path:join")("a", "b")
        'a/b'
    """
    return load_callable(spec, what="handler")


class WorkerPool(Generic[T]):
    """Competing workers on one durable queue: fair dispatch, retries, graceful shutdown.

    The pool consumes with a small window of unacked messages (``prefetch`` per worker
    plus up to 2, see :func:`window`) and hands each delivery to whichever of its workers
    frees first, so a worker never waits a broker round trip for its next task, and a
    busy pool never holds more than its window: the broker gives the rest to other pools.
    Several pools on several hosts can consume the same queue (run the same
    ``hutch worker`` command on each).

    Threads: handlers run on the pool's worker threads (or, with ``processes=True``, in
    one child process per worker), never on the connection's I/O thread, so heartbeats
    keep flowing during long tasks. :meth:`start`, :meth:`stop`, :meth:`submit` and
    :attr:`stats` may be called from any thread; :meth:`run` blocks the calling thread
    and, on the main thread, handles SIGTERM and SIGINT by stopping gracefully.

    Acks: a message is acked only after its handler returned (or after its retry copy or
    dead-letter copy was confirmed by the broker). On :meth:`stop`, consumers are
    cancelled first, messages in hand are finished and acked, and messages prefetched but
    not started are requeued. A message whose worker dies unacked is redelivered by the
    broker with ``redelivered=True``.

    Failures follow ``retry`` (see :class:`~hutch.RetryPolicy`): retried through
    broker-side delay queues ``<queue>.retry.<ms>`` (never a sleep in the worker), then
    dead-lettered to ``dead_letter_queue`` with ``x-hutch-error``,
    ``x-hutch-error-type`` and ``x-hutch-attempts`` headers. Bodies that cannot be
    decoded or validated are dead-lettered at once; handlers may raise
    :class:`~hutch.Retry` or :class:`~hutch.Reject`.

    Args:
        connection: A :class:`~hutch.Connection` (shared, left open) or a URL (owned:
            opened by :meth:`start`, closed by :meth:`stop`); None (the default) is
            ``HUTCH_URL``'s broker.
        queue: The work queue: a name (declared as a durable queue) or a
            :class:`~hutch.Queue`.
        handler: ``handler(body)`` or ``handler(body, message)``; or a
            ``"package.module:function"`` string. Its return value is ignored.
        model: The body type; None decodes by content type (JSON, text, else bytes).
        concurrency: Number of workers (consumers, threads, and processes if enabled).
        prefetch: Unacked messages per worker: a channel's consumer holds at most
            ``prefetch`` times its workers plus up to 2 (see :func:`window`).
        channels: Channels (one consumer each) to spread the workers over (default 1).
        processes: Run handlers in ``concurrency`` worker processes (for CPU-bound work).
            The handler and model must then be importable by qualified name; if they live
            in the main script, guard its entry point with ``if __name__ == "__main__":``.
        retry: The failure policy; None dead-letters every failure at once.
        dead_letter_queue: Where failed messages go (default ``<queue>.dead``, durable).
        timeout: Seconds allowed for each broker operation and publish confirm.
        name: A name for threads, processes and logs (default: the queue's name).
        partitions: Consume the partitioned work queue ``<queue>.p0`` ...
            ``<queue>.p<partitions-1>`` (see :class:`TaskQueue`'s ``partitions``): each
            partition is one consumer with prefetch 1 (so ``prefetch`` must stay 1) and a
            single active consumer across all pools, handed to one worker that processes
            its messages in order, one at a time; partitions run in parallel, spread over
            the workers. When this pool's process dies the broker hands its partitions to
            another pool's waiting consumers. See ``docs/work-queues.md``.

    Raises:
        TypeError: A wrong argument type.
        ValueError: An invalid value, a handler that processes cannot import, or
            ``processes=True`` on a ``memory://`` connection.

    Example:
        >>> def resize(job: Job) -> None: ...
        >>> pool = WorkerPool(conn, queue="images", handler=resize, model=Job, concurrency=8)
        >>> pool.run()  # serves until SIGTERM or SIGINT  # doctest: +SKIP
    """

    @overload
    def __init__(
        self: WorkerPool[object],
        connection: Connection | str | None = None,
        *,
        queue: str | Queue,
        handler: Handler[object] | str,
        model: None = None,
        concurrency: int = 4,
        prefetch: int = 1,
        channels: int | None = None,
        processes: bool = False,
        retry: RetryPolicy | None = _DEFAULT_RETRY,
        dead_letter_queue: str | Queue | None = None,
        timeout: float = 30.0,
        name: str | None = None,
        partitions: int | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        connection: Connection | str | None = None,
        *,
        queue: str | Queue,
        handler: Handler[T] | str,
        model: type[T],
        concurrency: int = 4,
        prefetch: int = 1,
        channels: int | None = None,
        processes: bool = False,
        retry: RetryPolicy | None = _DEFAULT_RETRY,
        dead_letter_queue: str | Queue | None = None,
        timeout: float = 30.0,
        name: str | None = None,
        partitions: int | None = None,
    ) -> None: ...

    def __init__(
        self,
        connection: Connection | str | None = None,
        *,
        queue: str | Queue,
        handler: Callable[..., object] | str,
        model: type[T] | None = None,
        concurrency: int = 4,
        prefetch: int = 1,
        channels: int | None = None,
        processes: bool = False,
        retry: RetryPolicy | None = _DEFAULT_RETRY,
        dead_letter_queue: str | Queue | None = None,
        timeout: float = 30.0,
        name: str | None = None,
        partitions: int | None = None,
    ) -> None:
        self.queue = work_queue(queue)
        if isinstance(handler, str):
            handler = load_handler(handler)
        if not callable(handler):
            raise TypeError(
                "handler must be a callable or a 'module:function' string, "
                f"got {type(handler).__name__}"
            )
        self.concurrency = check_int("concurrency", concurrency, 1, 10_000)
        self.prefetch = check_int("prefetch", prefetch, 1, 65535)
        self.partitions = check_partitions(partitions)
        if self.partitions is not None and self.prefetch != 1:
            raise ValueError(
                "prefetch must be 1 with partitions: a partition's messages run one at a time"
            )
        self._partitioned: PartitionConsumers | None = None
        self.channels = (
            1
            if channels is None
            else check_int(
                "channels (consumers are spread over them)", channels, 1, self.concurrency
            )
        )
        check_bool("processes", processes)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(
                "retry must be a hutch.RetryPolicy or None (dead-letter every failure at once)"
            )
        timeout = check_timeout("timeout", timeout)
        if dead_letter_queue is None:
            dead_letter_queue = f"{self.queue.name}.dead"
        if isinstance(dead_letter_queue, str):
            if not dead_letter_queue or dead_letter_queue == self.queue.name:
                raise ValueError(
                    "dead_letter_queue must be a non-empty name other than the work queue's"
                )
            dead_letter_queue = Queue(dead_letter_queue)
        elif not isinstance(dead_letter_queue, Queue):
            raise TypeError("dead_letter_queue must be a queue name, a hutch.Queue or None")
        self._codec: Codec[T] | None = codec_for(model) if model is not None else None
        self.model = model
        self.handler: Callable[..., object] = handler
        self.processes = processes
        self.retry = retry
        self._retry_on: tuple[type[BaseException], ...] = (
            retry.retry_on if retry is not None else ()
        )
        if processes:
            check_picklable_by_name("handler", handler)
            check_picklable_by_name("model", model)
            check_picklable_by_name("retry_on exception types", self._retry_on)
        self.dead_letter_queue = dead_letter_queue
        self.timeout = float(timeout)
        self.name = name or self.queue.name
        self._conn, self._owns_conn = resolve_connection(connection)
        if processes and self._conn.settings.memory is not None:
            raise ValueError(
                "processes=True needs RabbitMQ: the memory:// broker lives in this process "
                "only; use threads (processes=False) in tests on memory://"
            )
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._life = LifecycleState("the worker pool")  # NEW -> OPEN (running) -> CLOSED
        self._stopping = threading.Event()  # workers start nothing new
        self._stop_requested = threading.Event()  # run() should return
        self._stopped = threading.Event()
        self._failure: HutchError | None = None
        self._workers: list[Worker] = []
        self._channels: list[ChannelApi] = []
        self._router = FailureRouter(self._conn, self.queue, dead_letter_queue, retry, self.timeout)
        if self.partitions is not None:
            # a retried copy comes back through the hash exchange: to the same partition
            self._router.retry_exchange = partition_exchange(self.queue)
            self._partitioned = PartitionConsumers(
                partition_names(self.queue, self.partitions),
                self._conn.channel,
                census=partition_census(self.queue),
                # classic queues crash on a SAC switch on 3.10/3.11 (rabbitmq-server #5460)
                rebalance=partition_queue_type(self.queue) is QueueType.QUORUM,
                pool=self.name,
                timeout=self.timeout,
                stopping=self._stopping,
                on_cancel=self._on_cancel,
            )
        self._crew = Crew(
            name=self.name,
            queue=self.queue.name,
            handler=handler,
            call_with_message=wants_message(handler),
            codec=self._codec,
            retry=retry,
            retry_on=self._retry_on,
            processes=processes,
            timeout=self.timeout,
            router=self._router,
            stopping=self._stopping,
            stats_lock=self._stats_lock,
            fail=self._fail,
            telemetry=self._conn.telemetry,
            before_settle=None if self._partitioned is None else self._partitioned.before_settle,
            after_settle=None if self._partitioned is None else self._partitioned.after_settle,
            clock_of=lambda: self._conn.clock,
        )
        self._tasks: TaskQueue[T] | None = None

    def __repr__(self) -> str:
        mode = "processes" if self.processes else "threads"
        return (
            f"<WorkerPool queue={self.queue.name!r} {_WORDS[self._life.state]} "
            f"concurrency={self.concurrency} "
            f"channels={self.channels} prefetch={self.prefetch} {mode}>"
        )

    # ----------------------------------------------------------------- state
    @property
    def is_running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._life.state is Lifecycle.OPEN

    @property
    def failure(self) -> HutchError | None:
        """The error that stopped the pool by itself (connection failed, queue deleted...)."""
        return self._failure

    @property
    def delay_queues(self) -> tuple[str, ...]:
        """Names of the delay queues this pool has declared for retries so far."""
        return self._router.delay_queues

    @property
    def stats(self) -> PoolStats:
        """A snapshot of the per-worker counters (any thread)."""
        with self._stats_lock:
            return PoolStats(tuple(w.snapshot() for w in self._workers))

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> Self:
        """Declare the queues, start the workers and their consumers, and return.

        The pool then runs in the background until :meth:`stop`.

        Returns:
            This pool.

        Raises:
            ClosedError: The pool was stopped before (create a new one).
            PreconditionFailed: The queue exists with other settings.
            WorkerError: A worker process could not be started.
            ConnectError: The owned connection could not be opened.
        """
        with self._lock:
            if self._life.state is Lifecycle.OPEN:
                return self
            if self._life.state is not Lifecycle.NEW:
                raise ClosedError("the worker pool was stopped; create a new one")
            self._life.move(Lifecycle.OPENING)
            try:
                self._start_now()
            except BaseException:
                self._life.move(Lifecycle.CLOSING)
                self._stopping.set()
                try:
                    self._shutdown(time.monotonic() + self.timeout)
                finally:
                    self._life.move(Lifecycle.CLOSED)
                    self._stopped.set()
                raise
            self._life.move(Lifecycle.OPEN)
        log.info(
            "hutch: worker pool %r on queue %r: %d workers (%s) over %d channels, prefetch %d",
            self.name,
            self.queue.name,
            self.concurrency,
            "processes" if self.processes else "threads",
            self.channels,
            self.prefetch,
        )
        return self

    def _start_now(self) -> None:
        conn = self._conn
        if self._owns_conn and not conn.is_open:
            conn.open(self.timeout)
        # one inbox per channel, shared by its workers (partitions: one inbox per worker)
        inboxes: list[Mailbox[Any] | None] = [
            None if self._partitioned is not None else Mailbox() for _ in range(self.channels)
        ]
        with self._stats_lock:
            self._workers = [
                Worker(i, c, self._crew, inboxes[c])
                for i in range(self.concurrency)
                for c in [i * self.channels // self.concurrency]
            ]
        for _ in range(self.channels):
            # raises at once if the connection was closed or failed for good
            self._channels.append(conn.channel())
        # events before this are ignored anyway (not running yet); run() covers a close
        conn.add_listener(self._on_connection_event)
        self._channels[0].declare(
            [self.queue]
            if self.partitions is None
            else partition_topology(self.queue, self.partitions),
            timeout=self.timeout,
        )
        self._router.open()
        if self.processes:
            for w in self._workers:
                w.child = Child(
                    f"hutch-worker-{self.name}-{w.index}", self.handler, self.model, self._retry_on
                )
                w.child.spawn()
            for w in self._workers:
                assert w.child is not None
                w.child.wait_ready(max(self.timeout, 60.0))
        for w in self._workers:
            w.thread = threading.Thread(
                target=w.run,
                name=f"hutch-worker-{self.name}-{w.index}",
                daemon=True,
            )
            w.thread.start()
        if self._partitioned is not None:
            self._consume_partitions(self._partitioned)
            return
        for c, ch in enumerate(self._channels):
            crew = [w for w in self._workers if w.channel_index == c]
            ch.qos(window(len(crew), self.prefetch), timeout=self.timeout)  # global_qos=False
            tag = ch.consume(
                self.queue, crew[0].inbox.put, on_cancel=self._on_cancel, timeout=self.timeout
            )
            for w in crew:
                w.channel, w.consumer_tag = ch, tag

    def _consume_partitions(self, partitioned: PartitionConsumers) -> None:
        """One consumer (prefetch 1) per partition; partition ``p`` feeds worker ``p % n``.

        A worker empties its inbox one message at a time, so each partition's messages
        run in queue order and never two at once, whichever worker serves it. A probe
        thread counts the pools, and partitions beyond this pool's fair share are handed
        back between tasks (see :mod:`hutch._worker_pool.rebalance`).
        """
        for p in range(len(partitioned.names)):
            partitioned.consume(p, self._workers[p % self.concurrency].inbox.put)
        partitioned.start_probe(self._conn.channel())

    def run(
        self,
        *,
        timeout: float | None = None,
        stop_timeout: float = 30.0,
        handle_signals: bool = True,
    ) -> None:
        """Start (if needed) and block until stopped, then stop gracefully.

        On the main thread, the first SIGTERM or SIGINT stops the pool gracefully (no
        new messages, those in hand finish and are acked, ``run`` returns); a second one
        raises :class:`KeyboardInterrupt` at once (see :mod:`hutch._signals`). The
        previous handlers are restored on return. Elsewhere, call :meth:`stop` from
        another thread.

        Args:
            timeout: Stop by itself after this many seconds. None (the default) serves
                until stopped, as a worker process should.
            stop_timeout: Seconds the graceful stop waits for handlers in hand.
            handle_signals: False leaves SIGTERM/SIGINT to the caller.

        Raises:
            ConnectionLost: The connection was lost for good.
            ConsumerCancelled: The broker cancelled a consumer (the queue was deleted).
            WorkerError: A worker process could not be replaced.
            ClosedError: The pool was stopped before, or its connection was closed under
                it (from another thread, a handler, a ``with`` block's exit).
            ValueError: A timeout that is not a finite number of seconds greater than 0.
            KeyboardInterrupt: A second SIGTERM/SIGINT while stopping.
        """
        check_timeout("timeout", timeout, allow_none=True)
        check_timeout("stop_timeout", stop_timeout)
        check_bool("handle_signals", handle_signals)
        self.start()
        with graceful_signals(
            self._stop_requested.set, f"worker pool {self.name!r}", enabled=handle_signals
        ):
            clock, stop = self._conn.clock, self._stop_requested
            deadline = clock.deadline(timeout)
            while not stop.is_set():
                left = clock.left(deadline)
                if left is not None and left <= 0:
                    break
                clock.wait(stop.is_set, stop.wait, deadline, poll=0.5)
                if not self._conn.is_open and not self._stop_requested.is_set():
                    # closed before the pool's listener was in place: same as "closed"
                    ch = self._channels[0] if self._channels else None
                    failure = ch.connection_failure if ch is not None else None
                    self._fail(failure or ClosedError("the pool's connection was closed"))
            self.stop(stop_timeout)
        if self._failure is not None:
            raise self._failure

    def stop(self, timeout: float = 30.0) -> None:
        """Stop gracefully: take no new messages, finish and ack those in hand, close.

        Consumers are cancelled first; messages prefetched but not started are requeued.
        A handler still running after ``timeout`` is abandoned: its message stays unacked
        and the broker redelivers it when the channel closes. Idempotent; any thread.
        Called from a handler, it only starts the stop and returns at once (the handler's
        own message is acked as usual when it returns).

        Args:
            timeout: Seconds to wait for handlers in hand.

        Raises:
            ValueError: A timeout that is not a finite number of seconds greater than 0.
        """
        check_timeout("timeout", timeout)
        if any(w.thread is threading.current_thread() for w in self._workers):
            self._stopping.set()  # no worker starts another message from now on
            self._stop_requested.set()
            threading.Thread(
                target=self.stop, args=(timeout,), name=f"hutch-stop-{self.name}", daemon=True
            ).start()
            return
        with self._lock:
            if self._life.state is Lifecycle.NEW:
                self._life.move(Lifecycle.CLOSED)
                self._stopped.set()
                if self._owns_conn:
                    self._conn.close()
                return
            if self._life.state is Lifecycle.OPEN:
                self._life.move(Lifecycle.CLOSING)
                owner = True
            else:
                owner = False
        if not owner:
            self._stopped.wait(timeout)
            return
        self._stopping.set()
        self._stop_requested.set()
        log.info("hutch: stopping worker pool %r", self.name)
        try:
            self._shutdown(time.monotonic() + timeout)
        finally:
            with self._lock:
                self._life.move(Lifecycle.CLOSED)
            self._stopped.set()

    def close(self) -> None:
        """Same as :meth:`stop` with its default timeout. Idempotent."""
        self.stop()

    def _shutdown(self, deadline: float) -> None:
        def left() -> float:
            return max(0.1, deadline - time.monotonic())

        # a stopped pool leaves nothing registered on a shared connection
        self._conn.remove_listener(self._on_connection_event)

        cancelled: set[str] = set()
        for w in self._workers:
            if w.channel is not None and w.consumer_tag and self._conn.is_open:
                if w.consumer_tag in cancelled:
                    continue  # workers of one channel share its consumer
                cancelled.add(w.consumer_tag)
                try:
                    w.channel.cancel(w.consumer_tag, timeout=min(left(), self.timeout))
                except HutchError as exc:
                    log.debug("hutch: cancelling consumer %s failed: %s", w.consumer_tag, exc)
        if self._partitioned is not None:
            self._partitioned.close()  # no cancel: see hutch._worker_pool.rebalance
        # every delivery for a cancelled consumer is in its inbox now: the sentinel comes last
        for w in self._workers:
            w.finish()
        for w in self._workers:
            if w.thread is not None:
                join_thread(w.thread, left())
                if w.thread.is_alive():
                    log.warning(
                        "hutch: a handler of worker %d did not finish in time; its message "
                        "will be redelivered",
                        w.index,
                    )
        for w in self._workers:
            if w.child is not None:
                w.child.stop(left() if w.thread is None or not w.thread.is_alive() else 0.0)
        if self._partitioned is not None:
            self._partitioned.join(min(left(), self.timeout))
        for ch in self._channels:
            ch.close(timeout=min(left(), self.timeout))  # after the queued acks (FIFO)
        self._router.close(min(left(), self.timeout))
        if self._tasks is not None:
            self._tasks.close()
        if self._owns_conn:
            self._conn.close()
        log.info("hutch: worker pool %r stopped: %s", self.name, summary(self.stats))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc is None and self._failure is not None:
            raise self._failure

    # ----------------------------------------------------------------- failures of the pool
    def _fail(self, error: HutchError) -> None:
        if self._failure is None and not self._stopping.is_set():
            self._failure = error
            log.error("hutch: worker pool %r failed: %s", self.name, error)
            self._stop_requested.set()
            # never stop on the I/O thread or a worker thread (stop joins them)
            threading.Thread(target=self.stop, name=f"hutch-stop-{self.name}", daemon=True).start()

    def _on_connection_event(self, event: str, error: BaseException | None) -> None:  # I/O thread
        if event in ("failed", "closed") and self._life.state is Lifecycle.OPEN:
            # "closed": the shared connection was closed under the pool (by another thread,
            # a handler, a with block's exit): run() raises ClosedError
            self._fail(error if isinstance(error, HutchError) else ClosedError(str(error)))

    def _on_cancel(self, queue: str) -> None:  # I/O thread
        if self._life.state is Lifecycle.OPEN:
            self._fail(ConsumerCancelled(queue))

    # ----------------------------------------------------------------- submitting
    def _task_queue(self) -> TaskQueue[T]:
        with self._lock:
            if self._life.state is Lifecycle.CLOSED:
                raise ClosedError("the worker pool is stopped")
            if self._tasks is None:
                if self._owns_conn and not self._conn.is_open:
                    self._conn.open(self.timeout)
                self._tasks = cast(
                    "TaskQueue[T]",
                    TaskQueue(
                        self._conn,
                        queue=self.queue,
                        model=self.model,
                        timeout=self.timeout,
                        partitions=self.partitions,
                    ),
                )
            return self._tasks

    def submit(
        self,
        body: T,
        *,
        headers: Mapping[str, FieldValue] | None = None,
        timeout: float | None = None,
        **properties: Any,
    ) -> str:
        """Publish a task to this pool's queue (persistent, confirmed), from any thread.

        Args:
            body: The task, of the pool's model type.
            headers: Application headers.
            timeout: Seconds to wait for the broker's confirm (default: the pool's).
            **properties: AMQP basic properties (``message_id``, ``priority``...).

        Returns:
            The message id.

        Raises:
            PublishError: The broker did not take the message.
            OperationTimeout: No confirm within ``timeout``.
            ClosedError: The pool was stopped.
        """
        return self._task_queue().submit(body, headers=headers, timeout=timeout, **properties)

    def submit_many(
        self,
        bodies: Iterable[T],
        *,
        headers: Mapping[str, FieldValue] | None = None,
        timeout: float | None = None,
        **properties: Any,
    ) -> BatchResult:
        """Publish many tasks with pipelined confirms; return once all are settled.

        Args:
            bodies: The tasks.
            headers: Headers for all of them.
            timeout: Seconds to wait for the whole batch.
            **properties: AMQP basic properties for all of them.

        Returns:
            Which tasks were confirmed and which failed.

        Raises:
            OperationTimeout: The batch was not settled within ``timeout``.
            ClosedError: The pool was stopped.
        """
        return self._task_queue().submit_many(
            bodies, headers=headers, timeout=timeout, **properties
        )
