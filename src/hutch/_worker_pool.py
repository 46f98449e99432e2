"""WorkerPool[T]: competing consumers with fair dispatch, retries and graceful shutdown.

Layout
------
A pool runs ``concurrency`` workers. Each worker is one AMQP consumer of the work queue
(its own ``basic.consume`` after ``basic.qos(prefetch, global=False)``) feeding one worker
thread through a private in-memory inbox. The consumers are spread over ``channels``
channels of one connection (one channel per consumer by default). Because prefetch is
per consumer and a message is acked only after its handler returned, the broker never
gives a busy worker more than ``prefetch`` messages: a worker stuck on a long task gets
nothing new, the idle ones take the rest (fair dispatch).

The connection's I/O thread only moves bytes: it puts deliveries into the inboxes and
sends the acks the workers hand back, so heartbeats keep flowing however long a handler
runs. With ``processes=True`` each worker thread drives one child process (``spawn``
start method) that imports the handler by its qualified name and runs it, so CPU-bound
handlers are not serialized by the GIL; only the raw body bytes and plain delivery
information (as JSON) cross the process boundary, and only the parent speaks AMQP.

Failures
--------
See :class:`~hutch.RetryPolicy`: a retry is a confirmed publish to a delay queue
``<queue>.retry.<ms>`` (``x-message-ttl`` = the delay, dead-lettering back to the work
queue through the default exchange) followed by the ack of the original, so the worker
moves on at once and nothing is lost. After the last attempt the message goes to the
dead-letter queue with ``x-hutch-*`` headers saying why.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import queue as _queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler
from types import FrameType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Union, cast, overload

from hutch._channel import Channel, Delivery, OutgoingMessage, to_pika_properties
from hutch._checks import check_bool, check_int, check_timeout
from hutch._connection import Connection, resolve_connection
from hutch._dead_letter import (
    REQUEUE_DELAY,
    DeadLetters,
    Disposition,
    publish_to_queue,
    requeue_later,
    retry_headers,
)
from hutch._exceptions import (
    ClosedError,
    ConsumerCancelled,
    HutchError,
    MessageError,
    WorkerError,
)
from hutch._loading import load_callable
from hutch._message import Message, Properties
from hutch._publisher import BatchResult, Publisher
from hutch._resource import Resource
from hutch._retry import Reject, Retry, RetryPolicy, attempts_made
from hutch._serialization import Codec, codec_for, decode_any
from hutch._subscriber import decode_delivery, wants_message
from hutch._topology import Queue

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess
    from types import TracebackType

    from typing_extensions import Self

    from hutch._topology import FieldValue

__all__ = [
    "PoolStats",
    "TaskQueue",
    "WorkerPool",
    "WorkerStats",
    "load_handler",
]

log = logging.getLogger("hutch")
#: One INFO line per task handled (``hutch worker -v`` shows them).
task_log = logging.getLogger("hutch.task")

T = TypeVar("T")

Handler = Union[Callable[[T], object], Callable[[T, Message[T]], object]]

#: A delay queue lives this long (seconds) past its TTL once no pool uses it any more.
DELAY_QUEUE_GRACE = 600.0

_STOP = object()
_DEFAULT_RETRY = RetryPolicy()
_MAX_REASON = 2000


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


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class WorkerStats:
    """What one worker (one consumer) of a pool did so far.

    Attributes:
        worker: The worker's index, 0 to ``concurrency - 1``.
        channel: Index of the channel its consumer is on.
        consumer_tag: Its consumer tag (also :attr:`Message.consumer_tag` in handlers).
        pid: The child process running its handlers (``processes=True``), else None.
        processed: Messages handled successfully and acked.
        failed: Failed attempts (handler raised, body invalid, child process died).
        retried: Messages sent to a delay queue for another attempt.
        dead_lettered: Messages sent to the dead-letter queue.
        requeued: Messages handed back to the broker: unstarted (shutdown, child crash),
            or failed but their copy for the dead-letter or a delay queue could not be
            placed (requeued after a pause, never acked).
        crashed: Child processes that died under this worker.
        busy_seconds: Time spent handling messages.
    """

    worker: int
    channel: int
    consumer_tag: str
    pid: int | None
    processed: int
    failed: int
    retried: int
    dead_lettered: int
    requeued: int
    crashed: int
    busy_seconds: float


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of a pool's counters; the totals sum over :attr:`workers`.

    Attributes:
        workers: One entry per worker.
    """

    workers: tuple[WorkerStats, ...] = ()

    @property
    def processed(self) -> int:
        """Messages handled successfully and acked."""
        return sum(w.processed for w in self.workers)

    @property
    def failed(self) -> int:
        """Failed attempts."""
        return sum(w.failed for w in self.workers)

    @property
    def retried(self) -> int:
        """Messages sent to a delay queue for another attempt."""
        return sum(w.retried for w in self.workers)

    @property
    def dead_lettered(self) -> int:
        """Messages sent to the dead-letter queue."""
        return sum(w.dead_lettered for w in self.workers)

    @property
    def requeued(self) -> int:
        """Messages handed back to the broker unstarted."""
        return sum(w.requeued for w in self.workers)

    @property
    def crashed(self) -> int:
        """Child processes that died mid-task."""
        return sum(w.crashed for w in self.workers)


# --------------------------------------------------------------------------- outcomes


@dataclass
class _Outcome:
    kind: str  # ok | invalid | reject | retry | error | crash
    error_type: str = ""
    reason: str = ""
    delay: float | None = None
    retryable: bool = False

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "kind": self.kind,
                "error_type": self.error_type,
                "reason": self.reason[:_MAX_REASON],
                "delay": self.delay,
                "retryable": self.retryable,
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> _Outcome:
        raw = json.loads(data)
        delay = raw.get("delay")
        return cls(
            kind=str(raw["kind"]),
            error_type=str(raw.get("error_type", "")),
            reason=str(raw.get("reason", "")),
            delay=float(delay) if isinstance(delay, (int, float)) else None,
            retryable=bool(raw.get("retryable", False)),
        )


_OK = _Outcome("ok")


def _call_handler(
    handler: Callable[..., object],
    call_with_message: bool,
    message: Message[Any],
    retry_on: tuple[type[BaseException], ...],
) -> _Outcome:
    """Run the handler and classify what happened (worker thread or child process)."""
    try:
        if call_with_message:
            handler(message.body, message)
        else:
            handler(message.body)
    except Reject as exc:
        return _Outcome("reject", "Reject", exc.reason)
    except Retry as exc:
        return _Outcome("retry", "Retry", exc.reason, delay=exc.delay, retryable=True)
    except Exception as exc:
        log.debug("hutch: handler raised", exc_info=True)
        return _Outcome(
            "error",
            type(exc).__name__,
            str(exc) or type(exc).__name__,
            retryable=isinstance(exc, retry_on),
        )
    return _OK


# --------------------------------------------------------------------------- child processes


def _jsonable(value: Any) -> Any:
    """Header values as JSON types (bytes and odd types become strings)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def _delivery_meta(delivery: Delivery) -> dict[str, Any]:
    props = delivery.properties.as_dict()
    ts = props.get("timestamp")
    if isinstance(ts, _dt.datetime):
        props["timestamp"] = ts.isoformat()
    if "headers" in props:
        props["headers"] = _jsonable(props["headers"])
    return {
        "properties": props,
        "exchange": delivery.exchange,
        "routing_key": delivery.routing_key,
        "redelivered": delivery.redelivered,
        "delivery_tag": delivery.delivery_tag,
        "consumer_tag": delivery.consumer_tag,
    }


def _message_from_meta(codec: Codec[Any] | None, meta: dict[str, Any], body: bytes) -> Message[Any]:
    props: dict[str, Any] = dict(meta.get("properties") or {})
    ts = props.get("timestamp")
    if isinstance(ts, str):
        try:
            props["timestamp"] = _dt.datetime.fromisoformat(ts)
        except ValueError:
            props.pop("timestamp")
    try:
        properties = Properties(**props)
    except (TypeError, ValueError):
        properties = Properties(
            content_type=props.get("content_type"), headers=props.get("headers")
        )
    content_type = properties.content_type
    value = decode_any(body, content_type) if codec is None else codec.decode(body, content_type)
    return Message(
        body=value,
        raw_body=body,
        properties=properties,
        exchange=str(meta.get("exchange", "")),
        routing_key=str(meta.get("routing_key", "")),
        redelivered=bool(meta.get("redelivered", False)),
        delivery_tag=int(meta.get("delivery_tag", 0)),
        consumer_tag=str(meta.get("consumer_tag", "")),
    )


def _child_main(
    conn: multiprocessing.connection.Connection,
    handler: Callable[..., object],
    model: Any,
    retry_on: tuple[type[BaseException], ...],
) -> None:
    """Entry point of a worker process: run tasks from the pipe until told to stop."""
    # The parent decides when to stop and finishes the tasks in hand first; a terminal's
    # Ctrl-C or a service manager's SIGTERM to the whole process group must not kill us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    codec: Codec[Any] | None = codec_for(model) if model is not None else None
    call_with_message = wants_message(handler)
    conn.send_bytes(json.dumps({"ready": os.getpid()}).encode())
    while True:
        try:
            meta = json.loads(conn.recv_bytes())
            body = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent went away
        if meta.get("stop"):
            return
        try:
            message = _message_from_meta(codec, meta, body)
        except MessageError as exc:
            outcome = _Outcome("invalid", type(exc).__name__, exc.reason)
        else:
            outcome = _call_handler(handler, call_with_message, message, retry_on)
        try:
            conn.send_bytes(outcome.to_json())
        except (EOFError, OSError):
            return


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "is unresponsive"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class _Child:
    """One worker process and the pipe to it (used by one worker thread only)."""

    def __init__(
        self,
        name: str,
        handler: Callable[..., object],
        model: Any,
        retry_on: tuple[type[BaseException], ...],
    ) -> None:
        self.name = name
        self._args = (handler, model, retry_on)
        self._ctx = multiprocessing.get_context("spawn")
        self.process: SpawnProcess | None = None
        self.conn: multiprocessing.connection.Connection | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def spawn(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_child_main, args=(child, *self._args), name=self.name, daemon=True
        )
        process.start()
        child.close()
        self.process, self.conn = process, parent

    def wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        assert self.conn is not None
        ready = multiprocessing.connection.wait([self.conn, self.process.sentinel], timeout)
        if self.conn in ready:
            try:
                json.loads(self.conn.recv_bytes())
                return
            except (EOFError, OSError):
                pass
        self.process.join(1.0)
        exitcode = self.process.exitcode
        if not ready:
            self.kill()
        raise WorkerError(
            f"worker process {self.process.pid} {_describe_exit(exitcode)} before it was ready "
            f"(within {timeout} s): can it import the handler? see its traceback above",
            pid=self.process.pid,
            exitcode=exitcode,
        )

    def run(self, meta: dict[str, Any], body: bytes) -> _Outcome:
        assert self.process is not None
        assert self.conn is not None
        try:
            self.conn.send_bytes(json.dumps(meta).encode())
            self.conn.send_bytes(body)
        except (EOFError, OSError):
            return self._crashed()
        while True:
            ready = multiprocessing.connection.wait([self.conn, self.process.sentinel])
            if self.conn in ready:
                try:
                    return _Outcome.from_json(self.conn.recv_bytes())
                except (EOFError, OSError):
                    return self._crashed()
            if self.process.sentinel in ready:
                return self._crashed()

    def _crashed(self) -> _Outcome:
        assert self.process is not None
        self.process.join(2.0)
        text = f"worker process {self.process.pid} {_describe_exit(self.process.exitcode)} mid-task"
        return _Outcome("crash", "WorkerError", text, retryable=True)

    def stop(self, timeout: float) -> None:
        process, conn = self.process, self.conn
        if process is None or conn is None:
            return
        try:
            conn.send_bytes(b'{"stop": true}')
            conn.send_bytes(b"")
        except (EOFError, OSError):
            pass
        process.join(max(0.0, timeout))
        if process.is_alive():
            log.warning(
                "hutch: worker process %s did not stop in time; terminating it", process.pid
            )
            self.kill()
        conn.close()

    def kill(self) -> None:
        process = self.process
        if process is None:
            return
        if process.is_alive():
            process.terminate()
            process.join(2.0)
        if process.is_alive():
            process.kill()
            process.join(2.0)


# --------------------------------------------------------------------------- the pool


class _Worker:
    __slots__ = (
        "busy_seconds",
        "channel",
        "channel_index",
        "child",
        "consumer_tag",
        "crashed",
        "dead_lettered",
        "failed",
        "inbox",
        "index",
        "processed",
        "requeued",
        "retried",
        "thread",
    )

    def __init__(self, index: int, channel_index: int) -> None:
        self.index = index
        self.channel_index = channel_index
        self.inbox: _queue.SimpleQueue[Any] = _queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.channel: Channel | None = None
        self.consumer_tag = ""
        self.child: _Child | None = None
        self.processed = 0
        self.failed = 0
        self.retried = 0
        self.dead_lettered = 0
        self.requeued = 0
        self.crashed = 0
        self.busy_seconds = 0.0

    def snapshot(self) -> WorkerStats:
        return WorkerStats(
            worker=self.index,
            channel=self.channel_index,
            consumer_tag=self.consumer_tag,
            pid=self.child.pid if self.child is not None else None,
            processed=self.processed,
            failed=self.failed,
            retried=self.retried,
            dead_lettered=self.dead_lettered,
            requeued=self.requeued,
            crashed=self.crashed,
            busy_seconds=self.busy_seconds,
        )


@dataclass
class _DelayQueue:
    queue: Queue
    declared_at: float | None = None


def _work_queue(queue: object) -> Queue:
    if isinstance(queue, Queue):
        if queue.server_named:
            raise ValueError("a work queue needs a name that every worker and publisher agrees on")
        return queue
    if isinstance(queue, str):
        if not queue:
            raise ValueError("queue must be a non-empty queue name")
        return Queue(queue)  # named queues are durable by default
    raise TypeError(f"queue must be a queue name or a hutch.Queue, got {type(queue).__name__}")


def _check_picklable_by_name(what: str, obj: object) -> None:
    try:
        ForkingPickler.dumps(obj)
    except Exception as exc:
        raise ValueError(
            f"processes=True runs the handler in worker processes, which import the {what} by "
            f"its qualified name; {obj!r} cannot be referenced that way ({exc}). Use a "
            "module-level function (or pass 'package.module:function')"
        ) from None


class WorkerPool(Generic[T]):
    """Competing workers on one durable queue: fair dispatch, retries, graceful shutdown.

    Each of the ``concurrency`` workers is its own consumer with
    ``basic.qos(prefetch, global=False)``, so the broker sends a worker at most
    ``prefetch`` unacked messages: with the default ``prefetch=1`` a busy worker gets no
    new message until it acks, and the others take the load. Several pools on several
    hosts can consume the same queue (run the same ``hutch worker`` command on each).

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
        prefetch: Unacked messages the broker may send to each worker.
        channels: Channels to spread the consumers over (default: one per consumer).
        processes: Run handlers in ``concurrency`` worker processes (for CPU-bound work).
            The handler and model must then be importable by qualified name; if they live
            in the main script, guard its entry point with ``if __name__ == "__main__":``.
        retry: The failure policy; None dead-letters every failure at once.
        dead_letter_queue: Where failed messages go (default ``<queue>.dead``, durable).
        timeout: Seconds allowed for each broker operation and publish confirm.
        name: A name for threads, processes and logs (default: the queue's name).

    Raises:
        TypeError: A wrong argument type.
        ValueError: An invalid value, or a handler that processes cannot import.

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
    ) -> None:
        self.queue = _work_queue(queue)
        if isinstance(handler, str):
            handler = load_handler(handler)
        if not callable(handler):
            raise TypeError(
                "handler must be a callable or a 'module:function' string, "
                f"got {type(handler).__name__}"
            )
        self.concurrency = check_int("concurrency", concurrency, 1, 10_000)
        self.prefetch = check_int("prefetch", prefetch, 1, 65535)
        self.channels = (
            self.concurrency
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
        self._call_with_message = wants_message(handler)
        self.processes = processes
        self.retry = retry
        self._retry_on: tuple[type[BaseException], ...] = (
            retry.retry_on if retry is not None else ()
        )
        if processes:
            _check_picklable_by_name("handler", handler)
            _check_picklable_by_name("model", model)
            _check_picklable_by_name("retry_on exception types", self._retry_on)
        self.dead_letter_queue = dead_letter_queue
        self.timeout = float(timeout)
        self.name = name or self.queue.name
        self._conn, self._owns_conn = resolve_connection(connection)
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._state = "new"  # new -> running -> stopping -> stopped
        self._stopping = threading.Event()  # workers start nothing new
        self._stop_requested = threading.Event()  # run() should return
        self._stopped = threading.Event()
        self._failure: HutchError | None = None
        self._workers: list[_Worker] = []
        self._channels: list[Channel] = []
        self._retry_channel: Channel | None = None
        self._dead: DeadLetters | None = None
        self._delay_lock = threading.Lock()
        self._delay_queues: dict[int, _DelayQueue] = {}
        self._tasks: TaskQueue[T] | None = None
        self._signals_seen = 0

    def __repr__(self) -> str:
        mode = "processes" if self.processes else "threads"
        return (
            f"<WorkerPool queue={self.queue.name!r} {self._state} concurrency={self.concurrency} "
            f"channels={self.channels} prefetch={self.prefetch} {mode}>"
        )

    # ----------------------------------------------------------------- state
    @property
    def is_running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._state == "running"

    @property
    def failure(self) -> HutchError | None:
        """The error that stopped the pool by itself (connection failed, queue deleted...)."""
        return self._failure

    @property
    def delay_queues(self) -> tuple[str, ...]:
        """Names of the delay queues this pool has declared for retries so far."""
        with self._delay_lock:
            return tuple(d.queue.name for d in self._delay_queues.values())

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
            if self._state == "running":
                return self
            if self._state != "new":
                raise ClosedError("the worker pool was stopped; create a new one")
            try:
                self._start_now()
            except BaseException:
                self._state = "stopping"
                self._stopping.set()
                try:
                    self._shutdown(time.monotonic() + self.timeout)
                finally:
                    self._state = "stopped"
                    self._stopped.set()
                raise
            self._state = "running"
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
        conn.io.check_usable()
        conn.add_listener(self._on_connection_event)
        with self._stats_lock:
            self._workers = [
                _Worker(i, i * self.channels // self.concurrency) for i in range(self.concurrency)
            ]
        for _ in range(self.channels):
            self._channels.append(conn.channel())
        self._channels[0].declare([self.queue], timeout=self.timeout)
        self._dead = DeadLetters(conn, self.dead_letter_queue, self.queue.name)
        self._dead.declare()
        if self.retry is not None:
            self._retry_channel = conn.channel(confirms=True)
        if self.processes:
            for w in self._workers:
                w.child = _Child(
                    f"hutch-worker-{self.name}-{w.index}", self.handler, self.model, self._retry_on
                )
                w.child.spawn()
            for w in self._workers:
                assert w.child is not None
                w.child.wait_ready(max(self.timeout, 60.0))
        for w in self._workers:
            w.thread = threading.Thread(
                target=self._work,
                args=(w,),
                name=f"hutch-worker-{self.name}-{w.index}",
                daemon=True,
            )
            w.thread.start()
        for w in self._workers:
            ch = self._channels[w.channel_index]
            w.channel = ch
            ch.qos(self.prefetch, timeout=self.timeout)  # per consumer: global_qos=False
            w.consumer_tag = ch.consume(
                self.queue, w.inbox.put, on_cancel=self._on_cancel, timeout=self.timeout
            )

    def run(self, *, timeout: float | None = None, stop_timeout: float = 30.0) -> None:
        """Start (if needed) and block until stopped, then stop gracefully.

        On the main thread, SIGTERM and SIGINT stop the pool gracefully (the previous
        handlers are restored on return). Elsewhere, call :meth:`stop` from another thread.

        Args:
            timeout: Stop by itself after this many seconds. None (the default) serves
                until stopped, as a worker process should.
            stop_timeout: Seconds the graceful stop waits for handlers in hand.

        Raises:
            ConnectionLost: The connection was lost for good.
            ConsumerCancelled: The broker cancelled a consumer (the queue was deleted).
            WorkerError: A worker process could not be replaced.
            ClosedError: The pool was stopped before, or its connection was closed under
                it (from another thread, a handler, a ``with`` block's exit).
            ValueError: A timeout that is not a finite number of seconds greater than 0.
        """
        check_timeout("timeout", timeout, allow_none=True)
        check_timeout("stop_timeout", stop_timeout)
        self.start()
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._stop_requested.is_set():
                wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if wait <= 0:
                    break
                self._stop_requested.wait(wait)
                if not self._conn.is_open and not self._stop_requested.is_set():
                    # closed before the pool's listener was in place: same as "closed"
                    failure = self._conn.io.failure
                    self._fail(failure or ClosedError("the pool's connection was closed"))
            self.stop(stop_timeout)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if self._failure is not None:
            raise self._failure

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals_seen += 1
        name = signal.Signals(signum).name
        if self._signals_seen == 1:
            log.info("hutch: %s received: finishing the messages in hand, then stopping", name)
        else:
            log.warning("hutch: %s received again: still finishing the messages in hand", name)
        self._stop_requested.set()

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
            if self._state == "new":
                self._state = "stopped"
                self._stopped.set()
                if self._owns_conn:
                    self._conn.close()
                return
            if self._state == "running":
                self._state = "stopping"
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
                self._state = "stopped"
            self._stopped.set()

    def close(self) -> None:
        """Same as :meth:`stop` with its default timeout. Idempotent."""
        self.stop()

    def _shutdown(self, deadline: float) -> None:
        def left() -> float:
            return max(0.1, deadline - time.monotonic())

        # a stopped pool leaves nothing registered on a shared connection
        self._conn.remove_listener(self._on_connection_event)

        for w in self._workers:
            if w.channel is not None and w.consumer_tag and self._conn.is_open:
                try:
                    w.channel.cancel(w.consumer_tag, timeout=min(left(), self.timeout))
                except HutchError as exc:
                    log.debug("hutch: cancelling consumer %s failed: %s", w.consumer_tag, exc)
        # every delivery for a cancelled consumer is in its inbox now: the sentinel comes last
        for w in self._workers:
            w.inbox.put(_STOP)
        for w in self._workers:
            if w.thread is not None:
                w.thread.join(left())
                if w.thread.is_alive():
                    log.warning(
                        "hutch: a handler of worker %d did not finish in time; its message "
                        "will be redelivered",
                        w.index,
                    )
        for w in self._workers:
            if w.child is not None:
                w.child.stop(left() if w.thread is None or not w.thread.is_alive() else 0.0)
        for ch in self._channels:
            ch.close(timeout=min(left(), self.timeout))  # after the queued acks (FIFO)
        if self._retry_channel is not None:
            self._retry_channel.close(timeout=min(left(), self.timeout))
        if self._dead is not None:
            self._dead.close()
        if self._tasks is not None:
            self._tasks.close()
        if self._owns_conn:
            self._conn.close()
        log.info("hutch: worker pool %r stopped: %s", self.name, _summary(self.stats))

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
        if event in ("failed", "closed") and self._state == "running":
            # "closed": the shared connection was closed under the pool (by another thread,
            # a handler, a with block's exit): run() raises ClosedError
            self._fail(error if isinstance(error, HutchError) else ClosedError(str(error)))

    def _on_cancel(self, queue: str) -> None:  # I/O thread
        if self._state == "running":
            self._fail(ConsumerCancelled(queue))

    # ----------------------------------------------------------------- submitting
    def _task_queue(self) -> TaskQueue[T]:
        with self._lock:
            if self._state == "stopped":
                raise ClosedError("the worker pool is stopped")
            if self._tasks is None:
                if self._owns_conn and not self._conn.is_open:
                    self._conn.open(self.timeout)
                self._tasks = cast(
                    "TaskQueue[T]",
                    TaskQueue(self._conn, queue=self.queue, model=self.model, timeout=self.timeout),
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

    # ----------------------------------------------------------------- worker threads
    def _work(self, w: _Worker) -> None:
        # Prefetched messages that will not be started are held until the consumer is
        # cancelled (the sentinel), then requeued: releasing them earlier would only make
        # the broker send the next one to this worker again.
        held: list[Delivery] = []
        while True:
            item = w.inbox.get()
            if item is _STOP:
                for d in held:
                    d.nack(requeue=True)
                with self._stats_lock:
                    w.requeued += len(held)
                return
            delivery: Delivery = item
            try:
                if self._stopping.is_set() or (self.processes and w.child is None):
                    held.append(delivery)  # prefetched, never started
                    continue
                if delivery.generation != delivery.channel.generation:
                    continue  # from before a reconnect: the broker redelivers it
                self._handle(w, delivery)
            except BaseException:
                log.exception(
                    "hutch: worker %d of pool %r failed on a message; requeueing it",
                    w.index,
                    self.name,
                )
                try:
                    delivery.nack(requeue=True)
                except Exception:
                    log.debug("hutch: nack failed", exc_info=True)

    def _handle(self, w: _Worker, delivery: Delivery) -> None:
        attempt = attempts_made(delivery.headers, self.queue.name) + 1
        started = time.monotonic()
        problem = delivery.problem
        if problem is not None:
            # a property or header that cannot be decoded: no attempt can succeed
            outcome = _Outcome("invalid", "DecodeError", problem)
        elif w.child is not None:
            outcome = w.child.run(_delivery_meta(delivery), delivery.body)
        else:
            try:
                message: Message[T] = decode_delivery(self._codec, delivery)
            except MessageError as exc:
                outcome = _Outcome("invalid", type(exc).__name__, exc.reason)
            else:
                outcome = _call_handler(
                    self.handler, self._call_with_message, message, self._retry_on
                )
        busy = time.monotonic() - started
        self._settle(w, delivery, attempt, outcome)
        # one line per task (the CLI shows them with -v), as dramatiq's workers print
        task_log.info(
            "task %s on %r: %s in %.3f s (attempt %d)%s",
            delivery.properties.message_id or "-",
            self.queue.name,
            outcome.kind,
            busy,
            attempt,
            "" if outcome.kind == "ok" else f": {outcome.reason}",
        )
        with self._stats_lock:
            w.busy_seconds += busy
        if outcome.kind == "crash":
            self._replace_child(w)

    def _settle(self, w: _Worker, delivery: Delivery, attempt: int, outcome: _Outcome) -> None:
        if outcome.kind == "ok":
            delivery.ack()
            with self._stats_lock:
                w.processed += 1
            return
        with self._stats_lock:
            w.failed += 1
            if outcome.kind == "crash":
                w.crashed += 1
        if outcome.kind == "crash" and attempt == 1 and not delivery.redelivered:
            # the first crash on a fresh message: give it back so any worker can take it
            # (with redelivered=True); if it crashes a worker again it is retried with
            # backoff like any failure, so a message that kills workers cannot loop hot
            log.warning("hutch: %s; requeueing its message", outcome.reason)
            delivery.nack(requeue=True)
            with self._stats_lock:
                w.requeued += 1
            return
        retryable = outcome.kind in ("retry", "crash") or (
            outcome.kind == "error" and outcome.retryable
        )
        policy = self.retry
        went: Disposition | None = None
        if retryable and policy is not None and attempt < policy.max_attempts:
            delay = outcome.delay if outcome.delay is not None else policy.delay_for(attempt)
            went = self._retry_later(delivery, attempt, delay, outcome)
        elif retryable and policy is not None:
            outcome.reason = f"{outcome.reason} (gave up after {attempt} attempts)"
        if went is None:
            went = self._dead_letter(delivery, attempt, outcome)
        # count what really happened: a copy the broker did not confirm is no dead letter
        with self._stats_lock:
            if went is Disposition.RETRIED:
                w.retried += 1
            elif went is Disposition.DEAD_LETTERED:
                w.dead_lettered += 1
            else:
                w.requeued += 1

    def _dead_letter(self, delivery: Delivery, attempt: int, outcome: _Outcome) -> Disposition:
        assert self._dead is not None
        try:
            return self._dead.send(
                delivery,
                reason=outcome.reason,
                error_type=outcome.error_type,
                attempts=attempt,
                timeout=self.timeout,
            )
        except Exception:
            log.exception(
                "hutch: dead-lettering failed; requeueing the message in %.0f s", REQUEUE_DELAY
            )
            requeue_later(delivery)
            return Disposition.REQUEUED

    def _delay_queue(self, delay: float, *, again: bool = False) -> str:
        """Declare (or renew) the delay queue for ``delay`` seconds; return its name.

        With ``again``, declare it even if it was declared recently (it was deleted).
        """
        ms = max(1, round(delay * 1000))
        now = time.monotonic()
        with self._delay_lock:
            entry = self._delay_queues.get(ms)
            if entry is None:
                entry = _DelayQueue(
                    Queue(
                        f"{self.queue.name}.retry.{ms}",
                        durable=bool(self.queue.durable),
                        message_ttl=ms / 1000,
                        expires=ms / 1000 + DELAY_QUEUE_GRACE,
                        dead_letter_exchange="",
                        dead_letter_routing_key=self.queue.name,
                    )
                )
            # an idle queue expires after DELAY_QUEUE_GRACE past its TTL even with messages
            # in it: renew the lease well before that
            if (
                again
                or entry.declared_at is None
                or now - entry.declared_at > DELAY_QUEUE_GRACE / 2
            ):
                assert self._retry_channel is not None
                self._retry_channel.declare([entry.queue], timeout=self.timeout)
                entry.declared_at = now
                self._delay_queues[ms] = entry
            return entry.queue.name

    def _retry_channel_now(self) -> Channel:
        assert self._retry_channel is not None
        return self._retry_channel

    def _retry_later(
        self, delivery: Delivery, attempt: int, delay: float, outcome: _Outcome
    ) -> Disposition | None:
        """Publish a copy to a delay queue, then ack the original.

        The copy carries hutch's own attempt count and none of RabbitMQ's ``x-death``
        headers (see :func:`~hutch._dead_letter.retry_headers`); it is mandatory and
        confirmed, and a deleted delay queue is declared again.

        Returns:
            ``RETRIED``; ``REQUEUED`` when the copy could not be placed (the original is
            requeued after a pause); None when no delay queue can be declared at all (the
            caller dead-letters the message instead).
        """
        try:
            target = self._delay_queue(delay)
        except HutchError as exc:
            log.error("hutch: cannot declare the delay queue for a retry (%s); dead-lettering", exc)
            outcome.reason = f"{outcome.reason} (retry impossible: {exc})"
            return None
        try:
            props = delivery.properties
            headers = retry_headers(
                props.headers,
                reason=outcome.reason,
                error_type=outcome.error_type,
                attempts=attempt,
                queue=self.queue.name,
            )
            out = props.merged(headers=headers, delivery_mode=2, expiration=None)
            pika_props = to_pika_properties(out)
        except (ValueError, TypeError, OverflowError) as exc:
            # properties hutch cannot send again: retrying cannot work, dead-letter it
            outcome.reason = f"{outcome.reason} (retry impossible: {exc})"
            return None

        def build() -> OutgoingMessage:
            return OutgoingMessage("", target, delivery.body, pika_props, mandatory=True)

        def redeclare() -> None:
            self._delay_queue(delay, again=True)

        log.info(
            "hutch: retrying message %s of queue %r in %.3f s (attempt %d failed: %s: %s)",
            out.message_id,
            self.queue.name,
            delay,
            attempt,
            outcome.error_type,
            outcome.reason,
        )
        try:
            publish_to_queue(
                self._retry_channel_now,
                target,
                build,
                redeclare,
                self.timeout,
            )
        except (HutchError, FutureTimeout, OSError) as exc:
            log.error(
                "hutch: could not publish a retry (%s); requeueing the message in %.0f s",
                exc,
                REQUEUE_DELAY,
            )
            requeue_later(delivery)
            return Disposition.REQUEUED
        delivery.ack()
        return Disposition.RETRIED

    def _replace_child(self, w: _Worker) -> None:
        child = w.child
        if child is None or self._stopping.is_set():
            return
        old = child.pid
        try:
            child.kill()
            child.spawn()
            child.wait_ready(max(self.timeout, 60.0))
        except (WorkerError, OSError) as exc:
            with self._stats_lock:
                w.child = None
            error = (
                exc
                if isinstance(exc, WorkerError)
                else WorkerError(f"cannot start a worker process: {exc}")
            )
            self._fail(error)
            return
        log.warning("hutch: worker process %s of pool %r replaced by %s", old, self.name, child.pid)


def _summary(stats: PoolStats) -> str:
    return (
        f"{stats.processed} processed, {stats.retried} retried, "
        f"{stats.dead_lettered} dead-lettered, {stats.requeued} requeued, "
        f"{stats.failed} failed attempts"
    )


# --------------------------------------------------------------------------- submitting work


class TaskQueue(Resource, Generic[T]):
    """Submits tasks of type ``T`` to a work queue: persistent, confirmed, mandatory.

    Publishes on the default exchange with the queue's name as routing key, after
    declaring the queue (durable by default, the same declaration a
    :class:`WorkerPool` makes), so tasks submitted before any worker starts wait in the
    queue. :meth:`submit` returns once the broker confirmed the task. Any thread may
    submit; calls are pipelined over one channel.

    Args:
        connection: A :class:`~hutch.Connection` (shared) or a URL (owned); None (the
            default) is ``HUTCH_URL``'s broker.
        queue: The work queue: a name (durable) or a :class:`~hutch.Queue`.
        model: The body type; None accepts bytes, str, pydantic models and JSON values.
        timeout: Default seconds to wait for a confirm.
        app_id: Default ``app_id`` property.

    Raises:
        TypeError: A wrong argument type.
        ValueError: An invalid queue.

    Example:
        >>> with TaskQueue(conn, queue="images", model=Job) as tasks:  # doctest: +SKIP
        ...     tasks.submit(Job(url="https://example.com/cat.png"))
    """

    @overload
    def __init__(
        self: TaskQueue[object],
        connection: Connection | str | None = None,
        *,
        queue: str | Queue,
        model: None = None,
        timeout: float = 30.0,
        app_id: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        connection: Connection | str | None = None,
        *,
        queue: str | Queue,
        model: type[T],
        timeout: float = 30.0,
        app_id: str | None = None,
    ) -> None: ...

    def __init__(
        self,
        connection: Connection | str | None = None,
        *,
        queue: str | Queue,
        model: type[T] | None = None,
        timeout: float = 30.0,
        app_id: str | None = None,
    ) -> None:
        self.queue = _work_queue(queue)
        self._publisher = cast(
            "Publisher[T]",
            Publisher(
                connection,
                exchange="",
                routing_key=self.queue.name,
                model=model,
                mandatory=True,
                declare=[self.queue],
                timeout=timeout,
                app_id=app_id,
            ),
        )

    def __repr__(self) -> str:
        return f"<TaskQueue queue={self.queue.name!r}>"

    def open(self) -> Self:
        """Open the channel and declare the queue (done on first submit otherwise).

        Returns:
            This task queue.

        Raises:
            PreconditionFailed: The queue exists with other settings.
            ClosedError: The task queue was closed.
        """
        self._publisher.open()
        return self

    def submit(
        self,
        body: T,
        *,
        headers: Mapping[str, FieldValue] | None = None,
        timeout: float | None = None,
        **properties: Any,
    ) -> str:
        """Publish one task and wait for the broker's confirm.

        Args:
            body: The task.
            headers: Application headers.
            timeout: Seconds to wait for the confirm (default: the task queue's).
            **properties: AMQP basic properties (``message_id``, ``priority``...).

        Returns:
            The message id.

        Raises:
            Unroutable: The queue does not exist (it was deleted after the declare).
            Nacked: The broker refused the task.
            OperationTimeout: No confirm within ``timeout``.
        """
        return self._publisher.publish(body, headers=headers, timeout=timeout, **properties)

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
        """
        return self._publisher.publish_many(bodies, headers=headers, timeout=timeout, **properties)

    def close(self) -> None:
        """Close the channel (and an owned connection). Idempotent."""
        self._publisher.close()
