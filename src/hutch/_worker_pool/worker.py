"""One worker of a pool: its consumer's inbox, its thread, its counters.

A worker thread takes deliveries from its inbox (filled by the connection's I/O thread),
runs the handler (in the thread, or in the worker's child process), routes the outcome
with :func:`~hutch._worker_pool.routing.decide` and counts what really happened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hutch._amqp import ChannelApi, Delivery
from hutch._clock import REAL_CLOCK, Clock, Mailbox
from hutch._dead_letter import Disposition
from hutch._exceptions import HutchError, MessageError, WorkerError
from hutch._message import Message
from hutch._retry import RetryPolicy, attempts_made
from hutch._serialization import Codec
from hutch._subscriber import decode_delivery
from hutch._telemetry import NOOP_SCOPE, NOOP_TELEMETRY, Scope, Settlement, Telemetry
from hutch._worker_pool.outcome import Outcome, OutcomeKind, call_handler
from hutch._worker_pool.process import Child, delivery_meta
from hutch._worker_pool.routing import FailureRouter, Route, decide
from hutch._worker_pool.stats import WorkerStats

__all__ = ["Crew", "Worker"]

log = logging.getLogger("hutch")
#: One INFO line per task handled (``hutch worker -v`` shows them).
task_log = logging.getLogger("hutch.task")

_STOP = object()


@dataclass(frozen=True)
class Crew:
    """What every worker of one pool shares.

    Attributes:
        name: The pool's name, for logs.
        queue: The work queue's name.
        handler: The task handler.
        call_with_message: Call it as ``handler(body, message)``.
        codec: Decodes bodies; None decodes by content type.
        retry: The retry policy, None to dead-letter every failure at once.
        retry_on: The exception types the policy retries.
        processes: Handlers run in child processes.
        timeout: Seconds allowed for broker operations and process start-up.
        router: Carries out retries and dead letters.
        stopping: Set once the pool starts nothing new.
        stats_lock: Guards every worker's counters.
        fail: Stops the pool with an error.
        telemetry: The connection's telemetry (the process span runs in the worker
            thread, around the handler or around the child process's work).
        before_settle: Called with each delivery once its handler ran, before it is
            settled (a partitioned pool hands partitions back there).
        after_settle: Called with each delivery once it was settled (a partitioned pool
            consumes a handed-back partition again there).
        clock_of: The clock the workers wait on (the connection's, once it is open).
    """

    name: str
    queue: str
    handler: Callable[..., object]
    call_with_message: bool
    codec: Codec[Any] | None
    retry: RetryPolicy | None
    retry_on: tuple[type[BaseException], ...]
    processes: bool
    timeout: float
    router: FailureRouter
    stopping: threading.Event
    stats_lock: threading.Lock
    fail: Callable[[HutchError], None]
    telemetry: Telemetry = NOOP_TELEMETRY
    before_settle: Callable[[Delivery], None] | None = None
    after_settle: Callable[[Delivery], None] | None = None
    clock_of: Callable[[], Clock] = lambda: REAL_CLOCK


def _recording(handler: Callable[..., object], span: Scope) -> Callable[..., object]:
    """``handler``, recording what it raises on ``span`` (telemetry on, thread workers)."""

    def call(*args: object) -> object:
        try:
            return handler(*args)
        except Exception as exc:
            span.fail(exc)
            raise

    return call


class Worker:
    """An inbox, the thread that empties it, and its counters (internal).

    Workers may share one inbox (the pool's consumer on their channel fills it; whichever
    worker is free takes the next delivery) or have their own (a partition's consumer).

    Args:
        index: The worker's index in its pool.
        channel_index: Index of the channel its consumer is on.
        crew: What the pool's workers share.
        inbox: The inbox it takes deliveries from; None gives it its own.
    """

    __slots__ = (
        "busy_seconds",
        "channel",
        "channel_index",
        "child",
        "consumer_tag",
        "crashed",
        "crew",
        "dead_lettered",
        "failed",
        "inbox",
        "index",
        "processed",
        "requeued",
        "retried",
        "thread",
    )

    def __init__(
        self,
        index: int,
        channel_index: int,
        crew: Crew,
        inbox: Mailbox[Any] | None = None,
    ) -> None:
        self.index = index
        self.channel_index = channel_index
        self.crew = crew
        self.inbox: Mailbox[Any] = Mailbox() if inbox is None else inbox
        self.thread: threading.Thread | None = None
        self.channel: ChannelApi | None = None
        self.consumer_tag = ""
        self.child: Child | None = None
        self.processed = 0
        self.failed = 0
        self.retried = 0
        self.dead_lettered = 0
        self.requeued = 0
        self.crashed = 0
        self.busy_seconds = 0.0

    def snapshot(self) -> WorkerStats:
        """Return the counters (call with the crew's ``stats_lock`` held)."""
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

    def finish(self) -> None:
        """Tell one thread of the inbox to return once the deliveries in it are dealt with.

        Each worker of a shared inbox takes exactly one sentinel, so calling this once per
        worker after the consumer was cancelled ends them all.
        """
        self.inbox.put(_STOP)

    def run(self) -> None:
        """Handle deliveries until :meth:`finish` (the worker thread's target)."""
        crew = self.crew
        # Prefetched messages that will not be started are held until the consumer is
        # cancelled (the sentinel), then requeued: releasing them earlier would only make
        # the broker send the next one to this worker again.
        held: list[Delivery] = []
        clock = crew.clock_of()
        clock.enter()
        while True:
            item = self.inbox.get(clock, None)
            if item is _STOP or item is None:  # None: no deadline, so never
                for d in held:
                    d.nack(requeue=True)
                with crew.stats_lock:
                    self.requeued += len(held)
                return
            delivery: Delivery = item
            try:
                if crew.stopping.is_set() or (crew.processes and self.child is None):
                    held.append(delivery)  # prefetched, never started
                    continue
                if not delivery.channel.is_current(delivery):
                    continue  # its channel is gone (reconnect, closed): the broker redelivers it
                self._handle(delivery)
            except BaseException:
                log.exception(
                    "hutch: worker %d of pool %r failed on a message; requeueing it",
                    self.index,
                    crew.name,
                )
                try:
                    delivery.nack(requeue=True)
                except Exception:
                    log.debug("hutch: nack failed", exc_info=True)

    def _handle(self, delivery: Delivery) -> None:
        crew = self.crew
        attempt = attempts_made(delivery.headers, crew.queue) + 1
        tel = crew.telemetry
        if not tel.enabled:
            self._attempt(delivery, attempt, NOOP_SCOPE)
            return
        # a consumer span, child of the publisher's context in the headers; whatever the
        # handler publishes or calls (in this thread) is its child
        with tel.delivery_span(delivery, crew.queue, attempt) as span:
            self._attempt(delivery, attempt, span)

    def _attempt(self, delivery: Delivery, attempt: int, span: Scope) -> None:
        crew = self.crew
        started = time.monotonic()
        problem = delivery.problem
        if problem is not None:
            # a property or header that cannot be decoded: no attempt can succeed
            outcome = Outcome(OutcomeKind.INVALID, "DecodeError", problem)
        elif self.child is not None:
            outcome = self.child.run(delivery_meta(delivery), delivery.body)
        else:
            try:
                message: Message[Any] = decode_delivery(crew.codec, delivery)
            except MessageError as exc:
                outcome = Outcome(OutcomeKind.INVALID, type(exc).__name__, exc.reason)
            else:
                handler = crew.handler if span is NOOP_SCOPE else _recording(crew.handler, span)
                outcome = call_handler(handler, crew.call_with_message, message, crew.retry_on)
        recorded = outcome.kind is OutcomeKind.OK or (
            self.child is None and problem is None and outcome.kind is not OutcomeKind.INVALID
        )
        if not recorded and span is not NOOP_SCOPE:
            # no exception object here (a child process's, or a decoding problem): the
            # semantic conventions' exception event, from what the outcome says
            span.event(
                "exception",
                {"exception.type": outcome.error_type, "exception.message": outcome.reason},
            )
        busy = time.monotonic() - started
        if crew.before_settle is not None:
            crew.before_settle(delivery)
        self._settle(delivery, attempt, outcome, span)
        if crew.after_settle is not None:
            crew.after_settle(delivery)
        # one line per task (the CLI shows them with -v), as dramatiq's workers print
        task_log.info(
            "task %s on %r: %s in %.3f s (attempt %d)%s",
            delivery.properties.message_id or "-",
            crew.queue,
            outcome.kind.value,
            busy,
            attempt,
            "" if outcome.kind is OutcomeKind.OK else f": {outcome.reason}",
        )
        with crew.stats_lock:
            self.busy_seconds += busy
        if outcome.kind is OutcomeKind.CRASH:
            self._replace_child()

    def _settle(
        self, delivery: Delivery, attempt: int, outcome: Outcome, span: Scope = NOOP_SCOPE
    ) -> None:
        crew = self.crew
        decision = decide(
            outcome, attempt=attempt, redelivered=delivery.redelivered, policy=crew.retry
        )
        if decision.route is Route.ACK:
            delivery.ack()
            with crew.stats_lock:
                self.processed += 1
            if span is not NOOP_SCOPE:  # no call per message when telemetry is off
                span.settle(Settlement.ACKED)
            return
        with crew.stats_lock:
            self.failed += 1
            if outcome.kind is OutcomeKind.CRASH:
                self.crashed += 1
        if decision.route is Route.REQUEUE:
            log.warning("hutch: %s; requeueing its message", outcome.reason)
            delivery.nack(requeue=True)
            with crew.stats_lock:
                self.requeued += 1
            span.settle(Settlement.REQUEUED, reason=outcome.reason, error_type=outcome.error_type)
            return
        went = crew.router.send(delivery, attempt, outcome, decision)
        # count what really happened: a copy the broker did not confirm is no dead letter
        with crew.stats_lock:
            if went is Disposition.RETRIED:
                self.retried += 1
            elif went is Disposition.DEAD_LETTERED:
                self.dead_lettered += 1
            else:
                self.requeued += 1
        if went is Disposition.RETRIED:
            span.settle(
                Settlement.RETRIED,
                reason=decision.reason or outcome.reason,
                error_type=outcome.error_type,
                attempt=attempt + 1,
                delay=decision.delay,
            )
        else:
            span.settle(
                Settlement.DEAD_LETTERED
                if went is Disposition.DEAD_LETTERED
                else Settlement.REQUEUED,
                reason=decision.reason or outcome.reason,
                error_type=outcome.error_type,
            )

    def _replace_child(self) -> None:
        crew = self.crew
        child = self.child
        if child is None or crew.stopping.is_set():
            return
        old = child.pid
        try:
            child.kill()
            child.spawn()
            child.wait_ready(max(crew.timeout, 60.0))
        except (WorkerError, OSError) as exc:
            with crew.stats_lock:
                self.child = None
            error = (
                exc
                if isinstance(exc, WorkerError)
                else WorkerError(f"cannot start a worker process: {exc}")
            )
            crew.fail(error)
            return
        log.warning("hutch: worker process %s of pool %r replaced by %s", old, crew.name, child.pid)
