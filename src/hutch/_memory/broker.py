"""The in-memory broker: vhosts of exchanges, queues and bindings, and every operation on them.

One lock per broker guards everything; callbacks (deliveries, returns, confirms, consumer
cancellations) are put on the receiving connection's outbox under the lock and run by that
connection, never under the lock. Time comes from an injectable clock (seconds): with the
default, ``time.monotonic()`` as RabbitMQ times TTLs on Erlang's monotonic time (a wall
clock that NTP or a VM host steps would expire messages early or late), a timer thread
expires messages and queues on time;
with an injected one, expiry happens when an operation (or :meth:`Broker.tick`) finds the
clock past a deadline, in deadline order, as if the timers had fired then.

Named brokers: :func:`get_broker` keeps one broker per name for ``memory://`` and
``memory://NAME``.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from hutch._clock import REAL_CLOCK, VIRTUAL_CLOCK, Clock
from hutch._exceptions import AuthenticationError, ChannelClosed
from hutch._memory import errors
from hutch._memory.arguments import (
    check_queue_arguments,
    inequivalent,
    queue_arguments_equivalent,
)
from hutch._memory.consumers import Consumer, pick_consumer
from hutch._memory.consuming import REPLY_TO, Consuming, Unacked, server_name
from hutch._memory.dead_letter import DeathReason, dead_letter, without_cycles
from hutch._memory.errors import describe
from hutch._memory.exchange_ops import ExchangeOperations
from hutch._memory.exchanges import BUILTIN_EXCHANGES, MemoryExchange
from hutch._memory.expiry import BrokerLock, Expiring
from hutch._memory.message import Message, Properties, header_routes
from hutch._memory.queues import Entry, MemoryQueue
from hutch._topology import Overflow

if TYPE_CHECKING:
    from hutch._memory.connection import MemoryChannel, MemoryConnection

__all__ = ["REPLY_TO", "Broker", "Returned", "Unacked", "Vhost", "forget_broker", "get_broker"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class Returned:
    """A mandatory message that no queue took (``basic.return``).

    Attributes:
        reply_code: 312.
        reply_text: ``"NO_ROUTE"``.
        exchange: Where it was published.
        routing_key: With which key.
        body: The payload.
        properties: Its properties.
    """

    reply_code: int
    reply_text: str
    exchange: str
    routing_key: str
    body: bytes
    properties: Properties


@dataclass
class Vhost:
    """A virtual host: its exchanges and queues."""

    name: str
    exchanges: dict[str, MemoryExchange] = field(default_factory=dict)
    queues: dict[str, MemoryQueue] = field(default_factory=dict)
    #: The queues that may hold something to expire (a TTL, ``x-expires``, or a message
    #: that came with an expiration): the only ones the broker looks at for expiry.
    timed: list[MemoryQueue] = field(default_factory=list)

    def time(self, queue: MemoryQueue) -> None:
        """Count ``queue`` among :attr:`timed` (until it is deleted or :meth:`untime_idle`)."""
        if not queue.timed:
            queue.timed = True
            self.timed.append(queue)

    def untime_idle(self) -> None:
        """Drop from :attr:`timed` the queues that can expire nothing.

        That is: no TTL, no ``x-expires``, nothing ready. A message with an expiration
        enqueued or requeued there counts the queue again (:meth:`time`).
        """
        kept = []
        for queue in self.timed:
            if queue.may_expire:
                kept.append(queue)
            else:
                queue.timed = False
        self.timed = kept

    def __post_init__(self) -> None:
        for name, kind in BUILTIN_EXCHANGES.items():
            self.exchanges[name] = MemoryExchange(
                name, kind, durable=True, internal=name == "amq.rabbitmq.trace"
            )


class Broker(Consuming, ExchangeOperations, Expiring):
    """An in-process broker with RabbitMQ 3.10's semantics for what hutch uses.

    Thread-safe: any thread may call any method. Built by :func:`get_broker` (named) or
    directly (private to the caller, e.g. a unit test with a fake clock).

    Args:
        clock: A clock in seconds since the epoch (a test's fake one). Default:
            ``time.monotonic()`` (``x-death`` times then read the wall clock), with a
            timer thread that expires messages and queues on time. A test passes its own
            clock and moves it;
            expiry then happens at the next operation or :meth:`tick`. The broker's time
            is this clock plus what :meth:`wait_quiet` and jumps have brought forward.
        name: For reprs.
        virtual_time: Run on the process's virtual time (``memory://NAME?clock=virtual``,
            :data:`hutch._clock.VIRTUAL_CLOCK`), which jumps to the next deadline whenever
            every thread waits inside hutch for one.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] | None = None,
        name: str = "",
        virtual_time: bool = False,
    ) -> None:
        self.name = name
        self._lock = BrokerLock()
        self._clock = clock or time.monotonic
        #: The clock that hutch's waits on this broker's connections read.
        self.clock: Clock = VIRTUAL_CLOCK if virtual_time else REAL_CLOCK
        #: How far :meth:`wait_quiet` has moved the broker's time ahead of ``clock``.
        self._ahead = 0.0
        self._timed = clock is None
        self._wake = threading.Condition(self._lock.raw)
        self._timer: threading.Thread | None = None
        self._closed = False
        self._vhosts: dict[str, Vhost] = {"/": Vhost("/")}
        self._created = itertools.count()  # queues' creation order
        self._reply_to: dict[str, Consumer] = {}
        self._connections: set[MemoryConnection] = set()
        #: The threads alive at its creation: one of them counts for virtual time's jumps
        #: only once it uses this broker (see :class:`hutch._clock.VirtualClock`).
        self.threads_before = frozenset(threading.enumerate()) if virtual_time else frozenset()
        if virtual_time:
            VIRTUAL_CLOCK.add_source(self)

    def __repr__(self) -> str:
        return f"<hutch memory broker {self.name or '(unnamed)'}>"

    # ------------------------------------------------------------------ administration
    def add_vhost(self, name: str) -> None:
        """Create a virtual host (``/`` always exists)."""
        with self._lock:
            self._vhosts.setdefault(name, Vhost(name))

    def connect(self, vhost: str = "/", *, threaded: bool = True) -> MemoryConnection:
        """Open a connection to ``vhost``.

        Args:
            vhost: The virtual host.
            threaded: Run callbacks on the connection's own thread (default); with False
                they wait until :meth:`MemoryConnection.run_pending` is called (tests).

        Returns:
            The connection.

        Raises:
            AuthenticationError: No such vhost (RabbitMQ refuses with 530 NOT_ALLOWED).
        """
        from hutch._memory.connection import MemoryConnection

        with self._lock:
            if vhost not in self._vhosts:
                raise AuthenticationError(
                    f"the broker refused the connection: NOT_ALLOWED - vhost {vhost} not found"
                )
            conn = MemoryConnection(self, self._vhosts[vhost], threaded=threaded)
            self._connections.add(conn)
            return conn

    def queue_names(self, vhost: str = "/") -> list[str]:
        """The names of the queues of ``vhost`` (for tests and ``hutch`` tooling)."""
        with self._lock:
            self._expire_due(self._now())
            return sorted(self._vhosts[vhost].queues)

    def exchange_names(self, vhost: str = "/") -> list[str]:
        """The names of the exchanges of ``vhost``."""
        with self._lock:
            return sorted(self._vhosts[vhost].exchanges)

    def tick(self) -> None:
        """Expire what is due by the clock now (done by every operation too)."""
        self.run(None, lambda now: None)

    def close(self) -> None:
        """Stop the timer thread and close every connection. Idempotent."""
        with self._lock:
            self._closed = True
            conns = list(self._connections)
            self._wake.notify_all()
        if self.clock.virtual:
            VIRTUAL_CLOCK.remove_source(self)
        for conn in conns:
            conn.close()

    def wait_quiet(
        self, quiet: float = 0.0, *, handled: bool = False, timeout: float = 30.0
    ) -> bool:
        """Let ``quiet`` seconds pass for the broker, without sleeping them; True when done.

        Done means: every delivery, return, confirm and cancellation the broker has made
        has been run by its connection's callback thread, and nothing more expires within
        ``quiet`` seconds of the call. A message or queue expiry due inside that window is
        not slept for: once the broker is otherwise quiet, its time moves forward to the
        expiry, which happens at once, and then what it causes (a dead letter delivered,
        a retry handled). With ``handled``, every delivered message must also have been
        acked, nacked or rejected (handlers that settle each message have finished). On
        RabbitMQ the same needs a sleep of ``quiet`` seconds.

        The broker's time stays ahead of the clock by what was brought forward; every
        expiry is relative (a TTL counts from when its message was queued), so nothing
        after this call falls due early. Only the broker's own activity is covered: a
        thread of the caller's that has not published yet is not waited for.

        Args:
            quiet: The window in seconds, of the broker's time.
            handled: Also wait until no delivery is left unacknowledged.
            timeout: Give up after this many seconds of real time (returns False).
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            window_end = self._now() + quiet
        while True:
            with self._lock:
                busy = any(conn.pending for conn in self._connections) or (
                    handled
                    and any(ch.unacked for conn in self._connections for ch in conn.channels)
                )
                if not busy:
                    due = self._next_deadline()
                    if due is None or due > window_end:
                        return True
                    # due inside the window: bring it forward rather than sleep until it
                    now = self._now()
                    if due > now:
                        self._forward(due - now)
                        now = due
                    self._expire_due(now)
                    if self._timed:
                        self._arm_timer()
            if time.monotonic() >= deadline:
                return False
            if busy:
                time.sleep(0.001)

    def _now(self) -> float:
        """The broker's time: the clock, plus what :meth:`wait_quiet` and jumps brought forward."""
        if self.clock.virtual:
            return self._clock() + self._ahead + VIRTUAL_CLOCK.offset
        return self._clock() + self._ahead

    def _epoch(self, now: float) -> float:
        """The broker's time ``now`` as seconds since the epoch (for ``x-death``'s ``time``)."""
        if self._timed:  # the default monotonic clock: the wall clock, moved as time was
            return now - self._clock() + time.time()
        return now

    def _forward(self, seconds: float) -> None:
        """Move the broker's time ``seconds`` ahead (virtual time: the process's)."""
        if self.clock.virtual:
            VIRTUAL_CLOCK.advance(seconds)
        else:
            self._ahead += seconds

    def quiet_until(self) -> tuple[bool, float | None]:
        """For virtual time's jumps: whether no callback waits, and seconds to the next expiry.

        Returns:
            ``(False, None)`` while a callback waits to run; else True and the seconds
            until the next message or queue expiry (None if none).
        """
        with self._lock.raw:  # a question: it keeps the remembered calm
            if any(conn.pending for conn in self._connections):
                return False, None
            due = self._next_deadline()
            return True, None if due is None else due - self._now()

    def catch_up(self) -> None:
        """After a jump of virtual time: expire what is due."""
        with self._lock:
            self._expire_due(self._now())
            if self._timed:
                self._arm_timer()

    # ------------------------------------------------------------------ the one entry point
    def run(self, channel: MemoryChannel | None, operation: Callable[[float], _T]) -> _T:
        """Run ``operation(now)`` under the lock, with expiry before and after.

        A :class:`~hutch.ChannelClosed` from the operation closes ``channel`` first, as
        RabbitMQ does (its unacked messages are requeued, its consumers cancelled).
        """
        self.clock.enter()
        lock = self._lock
        with lock.raw:  # the one path that keeps lock.calm_until (see hutch._memory.expiry)
            if channel is not None:
                channel.check_open()
            now = self._now()
            if lock.calm_until is None or now >= lock.calm_until:
                self._expire_due(now)
            try:
                result = operation(now)
            except ChannelClosed as exc:
                if channel is not None:
                    self.close_channel(channel, now, error=exc)
                raise
            finally:
                self._expire_due(now)
                if self._timed:
                    self._arm_timer()
            return result

    # ------------------------------------------------------------------ timers
    def _arm_timer(self) -> None:
        if self._timer is None and not self._closed:
            self._timer = threading.Thread(
                target=self._timer_loop, name="hutch-memory-timer", daemon=True
            )
            # its expiries on real time are what jumps bring forward (quiet_until)
            VIRTUAL_CLOCK.ignore(self._timer)
            self._timer.start()
        self._wake.notify_all()

    def _timer_loop(self) -> None:
        with self._lock:
            while not self._closed:
                deadline = self._next_deadline()
                now = self._now()
                if deadline is not None and deadline <= now:
                    self._expire_due(now)
                    continue
                self._wake.wait(None if deadline is None else min(deadline - now, 1.0))

    # ------------------------------------------------------------------ queues
    def queue_declare(
        self,
        ch: MemoryChannel,
        name: str,
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> tuple[str, int, int]:
        """``queue.declare``.

        Returns:
            The queue's name (a new ``amq.gen-...`` one for ``""``), its ready messages and
            its consumers.
        """
        vhost, conn = ch.vhost, ch.connection
        args = dict(arguments or {})
        durable = durable and not exclusive  # RabbitMQ: an exclusive queue is never durable

        def op(now: float) -> tuple[str, int, int]:
            qname = name
            if qname.startswith(REPLY_TO):
                # RabbitMQ answers for the pseudo-queue (one consumer, passive or not) and
                # for a reply name whose channel still consumes replies; else 404
                token = qname[len(REPLY_TO) + 1 :] if qname.startswith(REPLY_TO + ".") else None
                if qname == REPLY_TO or (token is not None and token in self._reply_to):
                    return qname, 0, 1
                raise errors.no_queue(qname, vhost.name)
            existing = vhost.queues.get(qname)
            if passive:
                if existing is None:
                    raise errors.no_queue(qname, vhost.name)
                self._check_access(existing, conn)
                existing.last_used = now
                return qname, existing.ready, len(existing.consumers)
            if qname == "":
                qname = server_name("amq.gen-")
            elif existing is None and qname.startswith("amq."):
                raise errors.channel_error(
                    errors.ACCESS_REFUSED, f"queue name '{qname}' contains reserved prefix 'amq.*'"
                )
            if existing is not None:
                self._check_access(existing, conn, strict=True, exclusive=exclusive)
                entity = describe("queue", qname, vhost.name)
                for key, old, new in (
                    ("durable", existing.durable, durable),
                    ("auto_delete", existing.auto_delete, auto_delete),
                ):
                    if old != new:
                        raise inequivalent(key, entity, new, old, typed=False)
                queue_arguments_equivalent(existing.arguments, args, entity)
                existing.last_used = now
                return qname, existing.ready, len(existing.consumers)
            check_queue_arguments(args, qname, vhost.name)
            queue = vhost.queues[qname] = MemoryQueue(
                qname,
                durable,
                exclusive,
                conn if exclusive else None,
                auto_delete,
                args,
                last_used=now,
                created=next(self._created),
            )
            if queue.settings.timed:
                vhost.time(queue)
            return qname, 0, 0

        return self.run(ch, op)

    def _check_access(
        self,
        queue: MemoryQueue,
        conn: MemoryConnection,
        *,
        strict: bool = False,
        exclusive: bool = False,
    ) -> None:
        # RabbitMQ's check_exclusive_access: 'lax' for use, 'strict' for redeclaration
        if queue.owner is not None and queue.owner is not conn:
            raise errors.locked(queue.name, conn.vhost.name)
        if strict and queue.exclusive != exclusive:
            raise errors.locked(queue.name, conn.vhost.name)

    def _queue(self, ch: MemoryChannel, name: str) -> MemoryQueue:
        queue = ch.vhost.queues.get(name)
        if queue is None:
            raise errors.no_queue(name, ch.vhost.name)
        self._check_access(queue, ch.connection)
        return queue

    def queue_delete(
        self, ch: MemoryChannel, name: str, *, if_unused: bool = False, if_empty: bool = False
    ) -> int:
        """``queue.delete``: returns the ready messages it held (0 for a missing queue)."""

        def op(now: float) -> int:
            queue = ch.vhost.queues.get(name)
            if queue is None:
                return 0
            self._check_access(queue, ch.connection)
            entity = describe("queue", name, ch.vhost.name)
            if if_unused and queue.consumers:
                raise errors.channel_error(errors.PRECONDITION_FAILED, f"{entity} in use")
            if if_empty and queue.ready:
                raise errors.channel_error(errors.PRECONDITION_FAILED, f"{entity} not empty")
            count = queue.ready
            self._delete_queue(ch.vhost, queue, now)
            return count

        return self.run(ch, op)

    def _delete_queue(self, vhost: Vhost, queue: MemoryQueue, now: float) -> None:
        if vhost.queues.get(queue.name) is not queue:
            return
        del vhost.queues[queue.name]
        if queue.timed:
            vhost.timed.remove(queue)
        # each channel is told in its consumer tags' order (RabbitMQ's channel keeps the
        # queue's tags in a sorted set), not in the order the consumers came
        for consumer in sorted(queue.consumers, key=lambda c: c.tag):
            consumer.channel.consumers.pop(consumer.tag, None)
            if consumer.on_cancel is not None:
                consumer.channel.connection.emit(
                    functools.partial(consumer.on_cancel, consumer.tag)
                )
        queue.consumers.clear()
        queue.purge()
        for exchange in list(vhost.exchanges.values()):
            gone = {
                b for b in exchange.bindings if not b.to_exchange and b.destination == queue.name
            }
            if gone:
                exchange.bindings -= gone
                self._maybe_auto_delete_exchange(vhost, exchange)

    def queue_purge(self, ch: MemoryChannel, name: str) -> int:
        """``queue.purge``: removes the ready messages; returns how many."""
        return self.run(ch, lambda now: len(self._queue(ch, name).purge()))

    # ------------------------------------------------------------------ routing
    def _route(self, vhost: Vhost, exchange: MemoryExchange, message: Message) -> list[str]:
        """The names of the queues ``message`` goes to (e2e bindings and alternates followed)."""
        if exchange.name == "":
            keys = message.routing_keys
            if len(keys) == 1:
                return [keys[0]] if keys[0] in vhost.queues else []
            return [k for k in dict.fromkeys(keys) if k in vhost.queues]
        queues: dict[str, None] = {}
        seen: set[str] = set()
        todo = [exchange]
        headers = message.properties.headers
        while todo:
            current = todo.pop(0)
            if current.name in seen:
                continue
            seen.add(current.name)
            matched = current.match(message.routing_keys, headers)
            for binding in matched:
                if binding.to_exchange:
                    target = vhost.exchanges.get(binding.destination)
                    if target is not None:
                        todo.append(target)
                elif binding.destination in vhost.queues:
                    queues[binding.destination] = None
            if not matched and current.alternate is not None:
                alternate = vhost.exchanges.get(current.alternate)
                if alternate is not None:
                    todo.append(alternate)
        return list(queues)

    def publish(
        self,
        ch: MemoryChannel,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties | None = None,
        *,
        mandatory: bool = False,
    ) -> int | None:
        """``basic.publish``.

        A mandatory message no queue takes is returned (``on_return``) before it is
        confirmed. In confirm mode the confirm (ack, or nack if a ``reject-publish`` queue
        refused it) follows on the channel's ``on_confirm``.

        Returns:
            The publish sequence number in confirm mode, else None.
        """
        props = properties or Properties()

        def op(now: float) -> int | None:
            vhost = ch.vhost
            target = vhost.exchanges.get(exchange)
            if target is None:
                raise errors.no_exchange(exchange, vhost.name)
            if target.internal:
                raise errors.channel_error(
                    errors.ACCESS_REFUSED,
                    f"cannot publish to internal {describe('exchange', exchange, vhost.name)}",
                )
            final = props
            if props.expiration is not None:
                _check_expiration(props.expiration)
            if props.reply_to == REPLY_TO:
                if ch.reply_token is None:
                    raise errors.channel_error(
                        errors.PRECONDITION_FAILED, "fast reply consumer does not exist"
                    )
                final = props.replace(reply_to=f"{REPLY_TO}.{ch.reply_token}")
            seq = ch.next_publish_seq()
            message = Message(exchange, (routing_key, *header_routes(final.headers)), body, final)
            routed = False
            accepted = True
            if exchange == "" and routing_key.startswith(REPLY_TO + "."):
                consumer = self._reply_to.get(routing_key[len(REPLY_TO) + 1 :])
                if consumer is not None:
                    routed = True
                    self._hand_over(consumer, None, Entry(message, None), now)
            else:
                names = self._route(vhost, target, message)
                routed = bool(names)
                for name in names:
                    accepted = self._deliver(vhost, vhost.queues[name], message, now) and accepted
            no_route = (312, "NO_ROUTE") if mandatory and not routed else None
            if no_route is not None and ch.on_return is not None:
                returned = Returned(*no_route, exchange, routing_key, body, final)
                callback = ch.on_return
                ch.connection.emit(lambda: callback(returned))
            if seq is not None:
                ch.last_publish = (accepted, no_route)
                if ch.on_confirm is not None:
                    confirm = ch.on_confirm
                    ch.connection.emit(lambda: confirm(seq, accepted))
            return seq

        return self.run(ch, op)

    def _deliver(self, vhost: Vhost, queue: MemoryQueue, message: Message, now: float) -> bool:
        """Offer ``message`` to ``queue``; False if the queue refused it (``reject-publish``)."""
        s = queue.settings
        if s.overflow is not Overflow.DROP_HEAD and queue.would_overflow(message):
            if s.overflow is Overflow.REJECT_PUBLISH_DLX:
                self._dead_letter(vhost, queue, message, DeathReason.MAXLEN, now)
            return False
        entry = Entry(message, queue.expiry_for(message, now))
        if entry.expiry is not None:
            vhost.time(queue)
        if queue.ready == 0:
            consumer = pick_consumer(queue)
            if consumer is not None:
                self._hand_over(consumer, queue, entry, now)
                return True
        if s.message_ttl == 0 and s.dead_letter_exchange is None:
            return True  # RabbitMQ drops at once what nobody takes from a TTL-0 queue
        if queue.ready == 0:
            queue.head_since = now
        queue.enqueue(entry)
        self._drop_head(vhost, queue, now)
        self._dispatch(queue, now)
        return True

    def _drop_head(self, vhost: Vhost, queue: MemoryQueue, now: float) -> None:
        """``drop-head``: drop (or dead-letter) from the head while over a length limit.

        After an enqueue, and after a requeue too (RabbitMQ's ``requeue_and_run``).
        """
        while queue.settings.overflow is Overflow.DROP_HEAD and queue.over_limit():
            dropped = queue.pop()
            queue.head_since = now
            self._dead_letter(vhost, queue, dropped.message, DeathReason.MAXLEN, now)

    def _dead_letter(
        self, vhost: Vhost, queue: MemoryQueue, message: Message, reason: DeathReason, now: float
    ) -> None:
        exchange_name = queue.settings.dead_letter_exchange
        if exchange_name is None:
            return
        exchange = vhost.exchanges.get(exchange_name)
        if exchange is None:
            return
        letter = dead_letter(
            message,
            reason,
            queue=queue.name,
            exchange=exchange_name,
            routing_key=queue.settings.dead_letter_routing_key,
            now=self._epoch(now),
        )
        for name in without_cycles(reason, letter, self._route(vhost, exchange, letter)):
            target = vhost.queues.get(name)
            if target is not None:
                self._deliver(vhost, target, letter, now)

    # ------------------------------------------------------------------ closing
    def close_channel(
        self, ch: MemoryChannel, now: float | None = None, *, error: ChannelClosed | None = None
    ) -> None:
        """Close a channel: cancel its consumers, requeue its unacked deliveries."""
        with self._lock:
            if ch.closed:
                return
            at = self._now() if now is None else now
            self._drop_consumers(ch, at)
            ch.mark_closed(error)

    def close_connection(self, conn: MemoryConnection) -> None:
        """Close every channel of ``conn`` and delete its exclusive queues."""
        with self._lock:
            now = self._now()
            for ch in list(conn.channels):
                self.close_channel(ch, now)
            vhost = conn.vhost
            for queue in list(vhost.queues.values()):
                if queue.owner is conn:
                    self._delete_queue(vhost, queue, now)
            self._connections.discard(conn)


def _check_expiration(expiration: str) -> None:
    text = expiration.strip()
    try:
        value = int(text)
    except ValueError:
        raise errors.channel_error(
            errors.PRECONDITION_FAILED, f"invalid expiration '{expiration}': no_integer"
        ) from None
    if value < 0:
        raise errors.channel_error(
            errors.PRECONDITION_FAILED,
            f"invalid expiration '{expiration}': {{value_negative,{value}}}",
        )


# ---------------------------------------------------------------------- named brokers

_registry: dict[str, Broker] = {}
_registry_lock = threading.Lock()


def get_broker(name: str = "", *, virtual_time: bool | None = None) -> Broker:
    """The process-wide broker called ``name`` (``memory://NAME``), created on first use.

    Args:
        name: ``""`` for ``memory://``.
        virtual_time: The broker keeps a virtual clock (``?clock=virtual``); False: real
            time (``?clock=real``); None: whichever the broker has (real for a new one).

    Raises:
        ValueError: ``virtual_time`` is not what the existing broker has.

    Returns:
        The same broker for the same name, for the life of the process (or until
        :func:`forget_broker`).
    """
    with _registry_lock:
        broker = _registry.get(name)
        if broker is None:
            broker = _registry[name] = Broker(name=name, virtual_time=bool(virtual_time))
        elif virtual_time is not None and broker.clock.virtual != virtual_time:
            have, want = ("virtual", "real") if broker.clock.virtual else ("real", "virtual")
            raise ValueError(
                f"the memory broker {name!r} already runs on {have} time: connect with "
                f"clock={have}, or use another name for a broker on {want} time"
            )
        return broker


def forget_broker(name: str = "") -> None:
    """Close and drop the named broker: the next :func:`get_broker` makes a fresh one."""
    with _registry_lock:
        broker = _registry.pop(name, None)
    if broker is not None:
        broker.close()
