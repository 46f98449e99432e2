"""The channel layer: one pika channel, used from any thread (see hutch._connection).

A :class:`Channel` remembers what it declared, its QoS, its consumers and its unconfirmed
publishes, so that after a reconnect it can re-create all of it on a new pika channel.
Delivery tags belong to one pika channel: each reopen starts a new *generation*, and acks
for deliveries of an older generation are dropped (the broker redelivers those messages).

This module and :mod:`hutch._connection` are the only ones that import pika.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import logging
import struct
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, cast

import pika
import pika.exceptions as pex
from pika.adapters.blocking_connection import BlockingChannel

from hutch._connection import IoLoop, map_pika_error
from hutch._exceptions import (
    ChannelClosed,
    ClosedError,
    ConnectionLost,
    HutchError,
    Nacked,
    NotFound,
    PublishError,
    Unroutable,
)
from hutch._message import Properties
from hutch._topology import Binding, Exchange, Queue, TopologyItem, ordered

if TYPE_CHECKING:
    import pika.channel
    import pika.spec

__all__ = [
    "RAW_HEADERS",
    "Channel",
    "Delivery",
    "OutgoingMessage",
    "UndecodableHeaders",
    "basic_properties",
    "decode_properties",
]

log = logging.getLogger("hutch")

_UTC = _dt.timezone.utc
# how long a reply waits for the connection held briefly by another thread before it is
# queued for the I/O thread instead
_BRIEF = 0.002
# publish_many hands what it framed so far to the socket every this many messages
SEND_EVERY = 200


def _async_channel(ch: BlockingChannel) -> pika.channel.Channel:
    """The asynchronous pika channel under a BlockingChannel (private pika API).

    hutch publishes, acks and tracks confirms on it directly so that confirms can be
    pipelined; ``tests/unit/test_pika_private_api.py`` fails loudly if pika changes it.
    """
    return ch._impl  # type: ignore[attr-defined,no-any-return]


def to_pika_properties(p: Properties) -> pika.BasicProperties:
    """Convert hutch properties to pika's."""
    ts = p.timestamp
    return pika.BasicProperties(
        content_type=p.content_type,
        content_encoding=p.content_encoding,
        headers=cast("dict[str, Any]", dict(p.headers)) if p.headers is not None else None,
        delivery_mode=cast("Any", p.delivery_mode),
        priority=p.priority,
        correlation_id=p.correlation_id,
        reply_to=p.reply_to,
        expiration=p.expiration,
        message_id=p.message_id,
        timestamp=int(ts.timestamp()) if ts is not None else None,
        type=p.type,
        user_id=p.user_id,
        app_id=p.app_id,
        cluster_id=p.cluster_id,
    )


def basic_properties(**fields: Any) -> pika.BasicProperties:
    """Build pika properties from already-valid fields (the publisher's fast path)."""
    return pika.BasicProperties(**fields)


# --------------------------------------------------------------- inbound properties
#: Header of a dead-lettered message that keeps the bytes of a headers table hutch could
#: not take as it was (undecodable, or with values AMQP cannot carry back).
RAW_HEADERS = "x-hutch-raw-headers"
#: Prefix of the headers that keep other undecodable property values (e.g.
#: ``x-hutch-raw-timestamp``, ``x-hutch-raw-correlation-id``).
RAW_PREFIX = "x-hutch-raw-"

_SHORT_STRINGS = (
    "content_type",
    "content_encoding",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
)
# bounds, not a range: pika decodes AMQP longs as pika.compat.long, an int subclass, and
# `in range(...)` scans a range item by item for anything but an exact int
_INT64_MIN, _INT64_END = -(2**63), 2**63


class UndecodableHeaders:
    """Stands in for a headers table pika could not decode (internal).

    The guarded decoder (see :func:`_install_guarded_properties_decoder`) puts it in the
    ``headers`` property instead of letting the frame kill the connection; consumers
    dead-letter such a message with :attr:`reason` and keep :attr:`raw` in
    ``x-hutch-raw-headers``.

    Attributes:
        raw: The table's bytes as received (without its length prefix).
        reason: Why it could not be decoded.
    """

    __slots__ = ("raw", "reason")

    def __init__(self, raw: bytes, reason: str) -> None:
        self.raw = raw
        self.reason = reason

    def __repr__(self) -> str:
        return f"<UndecodableHeaders {len(self.raw)} bytes: {self.reason}>"


def _headers_span(data: bytes) -> tuple[int, int, int] | None:
    """Where the headers table lies in encoded basic properties, or None if there is none.

    Returns ``(flags_at, start, end)``: the offset of the flag word holding the headers
    flag, and the table's bytes (length prefix included) as ``data[start:end]``. Raises
    ``struct.error`` or ``IndexError`` on truncated data.
    """
    first = struct.unpack_from(">H", data, 0)[0]
    offset = 2
    word = first
    while word & 1:  # continuation bit: another flag word follows
        word = struct.unpack_from(">H", data, offset)[0]
        offset += 2
    if not first & pika.spec.BasicProperties.FLAG_HEADERS:
        return None
    for flag in (
        pika.spec.BasicProperties.FLAG_CONTENT_TYPE,
        pika.spec.BasicProperties.FLAG_CONTENT_ENCODING,
    ):
        if first & flag:  # a short string: one length octet, then the bytes
            offset += 1 + data[offset]
    size = struct.unpack_from(">I", data, offset)[0]
    end = offset + 4 + size
    if end > len(data):
        raise IndexError("the headers table runs past the end of the properties")
    return 0, offset, end


class _GuardedBasicProperties(pika.spec.BasicProperties):
    """pika's BasicProperties whose decoding never raises (see the installer below)."""

    # a slot, not an instance attribute: pika's repr and == look at __dict__ only
    __slots__ = ("_hutch_encoded",)

    def decode(self, encoded: bytes, offset: int = 0) -> _GuardedBasicProperties:
        data = bytes(encoded[offset:])
        self._hutch_encoded = data  # a reference: the raw table is cut out only if needed
        try:
            super().decode(data, 0)
        except Exception as exc:  # any failure of pika's decoder is contained
            self._decode_without_headers(data, f"{type(exc).__name__}: {exc}")
        return self

    def _decode_without_headers(self, data: bytes, reason: str) -> None:
        try:
            span = _headers_span(data)
            if span is None:
                raise ValueError("the failure is not in the headers table")
            flags_at, start, end = span
            first = struct.unpack_from(">H", data, flags_at)[0]
            cleared = struct.pack(">H", first & ~pika.spec.BasicProperties.FLAG_HEADERS)
            rest = data[:flags_at] + cleared + data[flags_at + 2 : start] + data[end:]
            super().decode(rest, 0)
            # the marker where pika's typing expects a table: decode_properties looks for it
            self.headers = cast("Any", UndecodableHeaders(data[start + 4 : end], reason))
        except Exception:  # nothing usable: keep all of it as raw bytes
            for name in (*_SHORT_STRINGS, "delivery_mode", "priority", "timestamp"):
                setattr(self, name, None)
            self.headers = cast(
                "Any",
                UndecodableHeaders(data, f"the basic properties cannot be decoded: {reason}"),
            )


def _install_guarded_properties_decoder() -> None:
    """Make pika decode every content header with :class:`_GuardedBasicProperties`.

    Private pika API: ``pika.frame.decode_frame`` builds a content header's properties as
    ``pika.spec.props[class_id]()`` and calls ``.decode(...)`` on them, on whichever thread
    reads the socket. A field value pika cannot decode (an AMQP timestamp past year 9999,
    say) raises there and kills the connection, with every publisher and consumer on it,
    and again on each redelivery. Registering a subclass whose ``decode`` contains the
    failure lets the delivery through with an :class:`UndecodableHeaders` marker instead,
    which consumers dead-letter with the reason. The registry is process-wide, so other
    pika users in the process get the same protection; frames that pika decodes are
    decoded exactly as before. ``tests/unit/test_pika_private_api.py`` checks by
    behaviour that pika still routes content headers through it.
    """
    pika.spec.props[pika.spec.BasicProperties.INDEX] = _GuardedBasicProperties


_install_guarded_properties_decoder()


def raw_headers_table(p: pika.BasicProperties) -> bytes | None:
    """The headers table of ``p`` as received (no length prefix), if pika decoded ``p``."""
    if isinstance(p.headers, UndecodableHeaders):
        return p.headers.raw
    data = getattr(p, "_hutch_encoded", b"")
    if not data:
        return None
    try:
        span = _headers_span(data)
    except (struct.error, IndexError):
        return None
    return None if span is None else data[span[1] + 4 : span[2]]


def _value_problem(value: object, where: str, depth: int = 0) -> str | None:
    # a value pika decoded that hutch does not take as it is
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if not _INT64_MIN <= value < _INT64_END:
            # pika decodes AMQP floats as int; a large one cannot be encoded back
            return f"header {where} is an integer out of AMQP's range (a float decoded as int?)"
        return None
    if isinstance(value, dict):
        return _table_problem(value, where + ".", depth + 1)
    if isinstance(value, list):
        for i, item in enumerate(value):
            problem = _value_problem(item, f"{where}[{i}]", depth + 1)
            if problem is not None:
                return problem
    return None


def _table_problem(table: Mapping[Any, object], prefix: str = "", depth: int = 0) -> str | None:
    for key, value in table.items():
        if not isinstance(key, str):
            return f"header name {prefix}{key!r} is not valid UTF-8"
        problem = _value_problem(value, repr(prefix + key), depth)
        if problem is not None:
            return problem
    return None


def decode_properties(p: pika.BasicProperties) -> tuple[Properties, str | None]:
    """Convert pika properties to hutch's, and say what could not be decoded.

    Never raises. A value that cannot be taken as it is (a timestamp that is no time in
    seconds, a short string that is not UTF-8, a headers table pika could not decode or
    whose values could not be sent on) is left out of the properties and kept as raw
    value in an ``x-hutch-raw-*`` header, so a dead-lettered copy loses nothing.

    Args:
        p: The properties as pika decoded them.

    Returns:
        The properties, and None or the reason (for ``x-hutch-error``) why the message
        must be dead-lettered.
    """
    problems: list[str] = []
    raw: dict[str, Any] = {}
    headers = p.headers
    table: dict[str, Any] | None
    if isinstance(headers, UndecodableHeaders):
        problems.append(f"the headers table cannot be decoded ({headers.reason})")
        raw[RAW_HEADERS] = headers.raw
        table = None
    elif isinstance(headers, dict):
        table = cast("dict[str, Any]", headers)
        problem = _table_problem(headers)
        if problem is not None:
            problems.append(problem)
            table_bytes = raw_headers_table(p)
            if table_bytes is not None:
                raw[RAW_HEADERS] = table_bytes
                table = None
    else:
        table = None
    values: dict[str, Any] = {}
    for name in _SHORT_STRINGS:
        value = getattr(p, name)
        if isinstance(value, bytes):
            problems.append(f"the {name} property is not valid UTF-8")
            raw[RAW_PREFIX + name.replace("_", "-")] = value
            value = None
        values[name] = value
    expiration = values["expiration"]
    if expiration is not None and not (isinstance(expiration, str) and expiration.isdigit()):
        problems.append(f"the expiration property {expiration!r} is not a number of milliseconds")
        raw[RAW_PREFIX + "expiration"] = str(expiration)
        values["expiration"] = None
    delivery_mode = p.delivery_mode
    if delivery_mode not in (None, 1, 2):
        problems.append(f"the delivery_mode property {delivery_mode!r} is neither 1 nor 2")
        raw[RAW_PREFIX + "delivery-mode"] = delivery_mode
        delivery_mode = None
    priority = p.priority
    if priority is not None and not (isinstance(priority, int) and 0 <= priority <= 255):
        problems.append(f"the priority property {priority!r} is not between 0 and 255")
        priority = None
    ts = p.timestamp
    timestamp: _dt.datetime | None = None
    if ts is not None:
        try:
            timestamp = _dt.datetime.fromtimestamp(ts, _UTC)
        except (ValueError, OverflowError, OSError, TypeError):
            problems.append(
                f"the timestamp property {ts!r} is not a time in seconds since 1970 "
                "(milliseconds or nanoseconds?)"
            )
            raw[RAW_PREFIX + "timestamp"] = str(ts)
    if raw:
        table = {**(table or {}), **raw}
    properties = Properties(
        headers=table,
        delivery_mode=delivery_mode,
        priority=priority,
        timestamp=timestamp,
        **values,
    )
    return properties, "; ".join(problems) if problems else None


def from_pika_properties(p: pika.BasicProperties) -> Properties:
    """Convert pika properties to hutch's (never raises; see :func:`decode_properties`)."""
    return decode_properties(p)[0]


class Delivery:
    """A message as delivered on a channel, before decoding (internal)."""

    __slots__ = (
        "_pika_props",
        "_problem",
        "_props",
        "body",
        "channel",
        "consumer_tag",
        "delivery_tag",
        "exchange",
        "generation",
        "redelivered",
        "routing_key",
    )

    def __init__(
        self,
        channel: Channel,
        generation: int,
        method: Any,
        props: pika.BasicProperties,
        body: bytes,
    ) -> None:
        self.channel = channel
        self.generation = generation
        self.delivery_tag: int = method.delivery_tag
        self.consumer_tag: str = getattr(method, "consumer_tag", "") or ""
        self.exchange: str = method.exchange
        self.routing_key: str = method.routing_key
        self.redelivered: bool = bool(method.redelivered)
        self.body = body
        self._pika_props = props
        self._props: Properties | None = None
        self._problem: str | None = None

    @property
    def content_type(self) -> str | None:
        """The content type property (cheap)."""
        return self._pika_props.content_type

    @property
    def headers(self) -> dict[str, Any]:
        """The application headers (cheap; empty if they could not be decoded)."""
        headers = self._pika_props.headers
        return cast("dict[str, Any]", headers) if type(headers) is dict else {}

    @property
    def correlation_id(self) -> str | None:
        """The correlation id property (cheap; RPC's hot path)."""
        return self._pika_props.correlation_id

    @property
    def reply_to(self) -> str | None:
        """The reply_to property (cheap)."""
        return self._pika_props.reply_to

    @property
    def expiration(self) -> str | None:
        """The expiration property, milliseconds as a string (cheap)."""
        return self._pika_props.expiration

    @property
    def properties(self) -> Properties:
        """All basic properties as hutch :class:`~hutch.Properties` (converted once).

        Values that cannot be decoded are left out and kept as raw ``x-hutch-raw-*``
        headers instead (see :attr:`problem`).
        """
        if self._props is None:
            self._props, self._problem = decode_properties(self._pika_props)
        return self._props

    @property
    def problem(self) -> str | None:
        """Why the properties cannot be decoded, or None if they can (converted once).

        A message with a problem is dead-lettered with this reason, never handled.
        """
        if self._props is None:
            self._props, self._problem = decode_properties(self._pika_props)
        return self._problem

    def ack(self) -> None:
        """Acknowledge (thread-safe; dropped if the channel was reopened since)."""
        self.channel.ack(self)

    def nack(self, *, requeue: bool) -> None:
        """Reject, requeueing or dead-lettering (thread-safe)."""
        self.channel.nack(self, requeue=requeue)


class Batch:
    """Settles the messages of one ``publish_many`` together (internal).

    One future for the whole batch instead of one per message: a batch of thousands
    settles with one wake-up, and no per-message future to create and resolve.
    """

    __slots__ = ("_cond", "_left", "_low", "_sealed", "errors", "future")

    def __init__(self, size: int = 0, *, sealed: bool = True) -> None:
        self._left = size
        self._sealed = False
        self._low: int | None = None
        self._cond = threading.Condition(threading.Lock())
        #: index -> why that message was not confirmed
        self.errors: dict[int, BaseException] = {}
        #: resolves once the batch is sealed and every message in it settled
        self.future: Future[None] = Future()
        if sealed:
            self.seal()

    @property
    def unsettled(self) -> int:
        """Messages added but not settled yet."""
        return self._left

    def add(self, count: int = 1) -> None:
        """Count ``count`` more messages in (before publishing them)."""
        with self._cond:
            if self._sealed:
                raise RuntimeError("the batch is sealed")
            self._left += count

    def seal(self) -> None:
        """No more messages: the future resolves once those added are settled."""
        with self._cond:
            self._sealed = True
            done = self._left == 0
        if done and not self.future.done():
            self.future.set_result(None)

    def wait_below(self, count: int, timeout: float) -> bool:
        """Wait until fewer than ``count`` messages are unsettled (any thread)."""
        with self._cond:
            self._low = count
            try:
                return self._cond.wait_for(lambda: self._left < count, timeout)
            finally:
                self._low = None

    def settle(self, index: int, error: BaseException | None) -> None:
        with self._cond:
            if error is not None:
                self.errors[index] = error
            self._left -= 1
            last = self._left == 0 and self._sealed
            if self._low is not None and self._left < self._low:
                self._cond.notify_all()
        if last:
            self.future.set_result(None)


class OutgoingMessage:
    """A message to publish (internal).

    It settles either its own :attr:`future` or, as part of a :class:`Batch`, the batch.
    """

    __slots__ = (
        "_batch",
        "_future",
        "_index",
        "_settled",
        "body",
        "exchange",
        "mandatory",
        "message_id",
        "properties",
        "routing_key",
    )

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: pika.BasicProperties,
        mandatory: bool = False,
        *,
        batch: Batch | None = None,
        index: int = 0,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.properties = properties
        self.mandatory = mandatory
        self.message_id: str | None = properties.message_id
        self._batch = batch
        self._index = index
        self._settled = False
        self._future: Future[None] | None = None if batch is not None else Future()

    @property
    def future(self) -> Future[None]:
        """Resolves when the broker confirmed the message (not for batch members)."""
        if self._future is None:
            raise TypeError("a message of a batch has no future of its own; see Batch")
        return self._future

    def done(self) -> bool:
        """True once confirmed or failed."""
        return self._settled if self._future is None else self._future.done()

    def succeed(self) -> None:
        """Settle as confirmed (no effect if already settled)."""
        self._settle(None)

    def fail(self, error: BaseException) -> None:
        """Settle as failed (no effect if already settled)."""
        self._settle(error)

    def _settle(self, error: BaseException | None) -> None:
        future = self._future
        if future is not None:
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
            return
        if not self._settled and self._batch is not None:
            self._settled = True
            self._batch.settle(self._index, error)


class _Pending:
    """A publish awaiting its confirm: sequence number (delivery tag) and any return."""

    __slots__ = ("message", "returned", "seq")

    def __init__(self, message: OutgoingMessage, seq: int) -> None:
        self.message = message
        self.seq = seq
        self.returned: tuple[int, str] | None = None


# how many same-route candidates a return is compared with before the oldest one is taken
_RETURN_SCAN = 1000


def _same_content(m: OutgoingMessage, props: pika.BasicProperties, body: bytes) -> bool:
    """Whether a returned message is a copy of ``m`` (same body and identifying fields)."""
    return (
        m.message_id == props.message_id
        and m.properties.correlation_id == props.correlation_id
        and m.body == body
    )


class _Consumer:
    __slots__ = ("arguments", "exclusive", "on_cancel", "on_message", "queue", "tag")

    def __init__(
        self,
        queue: Queue | str,
        on_message: Callable[[Delivery], None],
        exclusive: bool,
        arguments: Mapping[str, Any] | None,
        on_cancel: Callable[[str], None] | None,
        tag: str,
    ) -> None:
        self.queue = queue
        self.on_message = on_message
        self.exclusive = exclusive
        self.arguments = dict(arguments or {})
        self.on_cancel = on_cancel
        self.tag = tag


_tags = itertools.count(1)


class Channel:
    """One AMQP channel, usable from any thread (internal).

    Synchronous operations (declare, qos, consume) run while holding the connection (on the
    calling thread, or on the I/O thread while it recovers) and block the caller until the
    broker answered. ``ack`` only queues work for the I/O thread; ``publish`` sends on the
    calling thread (``direct``) or queues, and returns a future that resolves when the
    broker confirmed the message (or when it was written, on a channel without confirms).
    """

    def __init__(self, io: IoLoop, *, confirms: bool = False) -> None:
        self._io = io
        self.confirms = confirms
        self._ch: BlockingChannel | None = None
        self.generation = 0
        self._declared: list[TopologyItem] = []
        self._names: dict[int, str] = {}
        self._prefetch: int | None = None
        self._consumers: dict[str, _Consumer] = {}
        self._unconfirmed: OrderedDict[int, _Pending] = OrderedDict()
        self._seq = 0
        # see _on_return: the highest delivery tag of a confirm so far, and the sequence
        # number of the publish the last return was matched to (both on this pika channel)
        self._confirmed_high = 0
        self._returned_seq = 0
        self._closed = False
        self._retry_queue: list[OutgoingMessage] = []
        #: Called (driving the connection) as ``on_return(reply_code, reply_text, properties)`` for
        #: a returned message that no confirm waits for (mandatory publishes on a channel
        #: without confirms, e.g. RPC requests). Must not block.
        self.on_return: Callable[[int, str, Properties], None] | None = None
        # ack coalescing (connection holder only): manual-ack delivery tags in delivery order, acks
        # requested but not yet sent, and tags already settled on the wire one by one
        self._unacked: deque[int] = deque()
        self._acks_pending: set[int] = set()
        self._settled: set[int] = set()
        self._ack_flush_scheduled = False

    # ------------------------------------------------------------- any thread
    @property
    def io(self) -> IoLoop:
        """The I/O loop this channel runs on."""
        return self._io

    def is_current(self, delivery: Delivery) -> bool:
        """False once the pika channel that delivered ``delivery`` is gone (any thread).

        Its ack would be dropped and the broker redelivers the message, so a consumer may
        skip it instead of handling it twice.
        """
        return delivery.generation == self.generation and self._ch is not None

    def open(self, timeout: float | None = 30.0) -> None:
        """Open the pika channel and start tracking it for recovery."""
        self._io.register(self)
        self._call(self._ensure_open, timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Close the channel (idempotent); unconfirmed publishes fail with ClosedError."""
        if self._closed:
            return
        self._closed = True
        self._io.unregister(self)
        if self._io.is_open:
            try:
                self._io.call(self._close_now, timeout)
            except HutchError:
                pass

    def _closed_error(self) -> HutchError:
        # what a publish on a closed channel fails with
        return self._io.failure or ClosedError("the channel is closed")

    def _call(self, fn: Callable[[], Any], timeout: float | None) -> Any:
        if self._closed:
            raise ClosedError("the channel is closed")
        return self._io.call(fn, timeout)

    def declare(self, items: Iterable[TopologyItem], timeout: float | None = 30.0) -> None:
        """Declare exchanges, queues and bindings (in that order) and remember them.

        Raises:
            PreconditionFailed: An entity exists with other settings (names both).
            NotFound: A binding names an exchange that does not exist.
        """
        todo = ordered(items)

        def run() -> None:
            ch = self._ensure_open()
            for item in todo:
                self._declare_one(ch, item)
                if not any(item is d for d in self._declared):
                    self._declared.append(item)

        self._call(run, timeout)

    def queue_name(self, queue: Queue | str) -> str:
        """The broker's name for ``queue`` (server-named queues get theirs when declared)."""
        if isinstance(queue, str):
            return queue
        if queue.server_named:
            name = self._names.get(id(queue))
            if name is None:
                raise ValueError("this server-named queue has not been declared on this channel")
            return name
        return queue.name

    def qos(self, prefetch: int, timeout: float | None = 30.0) -> None:
        """Set the per-consumer prefetch count (``basic.qos`` with ``global=False``)."""

        def run() -> None:
            self._prefetch = prefetch
            self._ensure_open().basic_qos(prefetch_count=prefetch, global_qos=False)

        self._call(run, timeout)

    def consume(
        self,
        queue: Queue | str,
        on_message: Callable[[Delivery], None],
        *,
        exclusive: bool = False,
        arguments: Mapping[str, Any] | None = None,
        on_cancel: Callable[[str], None] | None = None,
        timeout: float | None = 30.0,
    ) -> str:
        """Start a consumer; ``on_message`` runs inside pika's dispatch and must not block.

        Returns:
            The consumer tag.
        """
        consumer = _Consumer(
            queue,
            on_message,
            exclusive,
            arguments,
            on_cancel,
            f"hutch.{self._io.name}.{next(_tags)}",
        )

        def run() -> str:
            self._start_consumer(self._ensure_open(), consumer)
            self._consumers[consumer.tag] = consumer
            return consumer.tag

        return self._call(run, timeout)  # type: ignore[no-any-return]

    def cancel(self, tag: str, timeout: float | None = 30.0) -> None:
        """Stop a consumer: no more deliveries; unacked ones stay ackable."""

        def run() -> None:
            self._consumers.pop(tag, None)
            ch = self._ch
            if ch is not None and ch.is_open:
                ch.basic_cancel(tag)

        self._call(run, timeout)

    def publish(
        self, message: OutgoingMessage, *, direct: bool = False, wait: float = 1.0
    ) -> Future[None]:
        """Publish a message; the future resolves when it is confirmed.

        With ``direct``, the calling thread sends it itself when it can take the connection
        within ``wait`` seconds (see :meth:`IoLoop.run_direct`); otherwise the message is
        queued for the I/O thread.
        """
        if self._closed:
            message.fail(self._closed_error())
            return message.future
        if direct and self._io.run_direct(lambda: self._publish_now(message), wait):
            return message.future
        self._io.submit(lambda: self._publish_now(message))
        return message.future

    def publish_and_wait(
        self,
        message: OutgoingMessage,
        limit: float,
        *,
        until: Future[Any] | None = None,
        wait: float = 1.0,
    ) -> Future[None]:
        """Publish a message, then do this connection's I/O on this thread for a while.

        That is, for up to ``limit`` seconds until ``until`` (default: the message's
        confirm) is done. It may still be pending afterwards (a slow answer, or the
        connection could not be taken within ``wait`` seconds and the message was queued
        for the I/O thread).

        Returns:
            The message's future (see :meth:`publish`).
        """
        if self._closed:
            message.fail(self._closed_error())
            return message.future
        if not self._io.run_and_pump(
            lambda: self._publish_now(message), until or message.future, limit, wait
        ):
            self._io.submit(lambda: self._publish_now(message))
        return message.future

    def publish_many(self, messages: list[OutgoingMessage], *, direct: bool = False) -> None:
        """Publish several messages at once (one hand-over to the I/O thread at most).

        Each settles its own future or its batch (see :class:`OutgoingMessage`).
        """
        if self._closed:
            error = self._closed_error()
            for m in messages:
                m.fail(error)
            return

        def run() -> None:
            for i, m in enumerate(messages, 1):
                self._publish_now(m)
                if i % SEND_EVERY == 0:
                    # let the broker start on the batch while the rest is still being
                    # framed, and take in the confirms that came back meanwhile
                    self._io.send_pending()

        if not (direct and self._io.run_direct(run)):
            self._io.submit(run)

    def publish_then_ack(
        self, message: OutgoingMessage, delivery: Delivery, *, direct: bool = True
    ) -> None:
        """Publish ``message`` (no waiting), then ack ``delivery``: an RPC server's reply.

        With ``direct``, the calling thread sends both itself when the connection is free
        (the quickest reply); otherwise both are queued for the I/O thread, in that order
        (which sends the replies of busy moments in batches: more replies per second).
        """
        gen, tag = delivery.generation, delivery.delivery_tag

        def run() -> None:
            self._publish_now(message)
            if gen == self.generation and self._ch is not None:
                self._acks_pending.add(tag)
                self._flush_acks()

        if self._closed:
            message.fail(self._closed_error())
            self.ack(delivery)
        elif not direct or not self._io.run_direct(run, 0 if self._io.pumping else _BRIEF):
            # a pumping thread (waiting for something else) sends it as soon as it is queued
            self._io.submit(lambda: self._publish_now(message))
            self.ack(delivery)

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge a delivery (thread-safe, asynchronous).

        Acks that reach the I/O thread together are coalesced into one ``basic.ack`` with
        ``multiple=True`` when every earlier delivery on the channel is settled too.
        """
        gen, tag = delivery.generation, delivery.delivery_tag
        self._io.submit(lambda: self._queue_ack(gen, tag))

    def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        """Reject a delivery: requeue it or let it be dead-lettered (thread-safe)."""
        gen, tag = delivery.generation, delivery.delivery_tag
        self._io.submit(lambda: self._settle(gen, tag, ack=False, requeue=requeue))

    def get(self, queue: Queue | str, timeout: float | None = 30.0) -> Delivery | None:
        """Fetch one message with ``basic.get`` (not acked; ack it yourself)."""

        def run() -> Delivery | None:
            ch = self._ensure_open()
            method, props, body = ch.basic_get(self.queue_name(queue), auto_ack=False)
            if method is None:
                return None
            self._unacked.append(cast(int, method.delivery_tag))
            return Delivery(self, self.generation, method, cast("Any", props), cast(bytes, body))

        return self._call(run, timeout)  # type: ignore[no-any-return]

    def message_count(self, queue: str, timeout: float | None = 30.0) -> int:
        """Ready messages in a queue (passive declare)."""

        def run() -> int:
            ok = self._run_sync(
                lambda ch: ch.queue_declare(queue, passive=True), f"queue {queue!r}"
            )
            return int(ok.method.message_count)

        return self._call(run, timeout)  # type: ignore[no-any-return]

    def exists(self, kind: str, name: str, timeout: float | None = 30.0) -> bool:
        """Whether an exchange or a queue exists (a passive declare; used by tools).

        A miss closes the pika channel (404); the next operation opens another one.

        Args:
            kind: ``"exchange"`` or ``"queue"``.
            name: Its name.
            timeout: Seconds to wait for the broker.
        """
        if kind not in ("exchange", "queue"):
            raise ValueError(f"kind must be 'exchange' or 'queue', not {kind!r}")

        def op(ch: BlockingChannel) -> Any:
            if kind == "exchange":
                return ch.exchange_declare(name, passive=True)
            return ch.queue_declare(name, passive=True)

        try:
            self._call(lambda: self._run_sync(op, f"{kind} {name!r}"), timeout)
        except NotFound:
            return False
        return True

    def delete_queue(self, queue: str, timeout: float | None = 30.0) -> None:
        """Delete a queue (used by tests and tools)."""
        self._call(
            lambda: self._run_sync(lambda ch: ch.queue_delete(queue), f"queue {queue!r}"), timeout
        )

    def delete_exchange(self, exchange: str, timeout: float | None = 30.0) -> None:
        """Delete an exchange (used by tests and tools)."""
        self._call(
            lambda: self._run_sync(
                lambda ch: ch.exchange_delete(exchange), f"exchange {exchange!r}"
            ),
            timeout,
        )

    def purge(self, queue: str, timeout: float | None = 30.0) -> int:
        """Remove all ready messages from a queue; returns how many."""

        def run() -> int:
            ok = self._run_sync(lambda ch: ch.queue_purge(queue), f"queue {queue!r}")
            return int(ok.method.message_count)

        return self._call(run, timeout)  # type: ignore[no-any-return]

    # -------------------------------------------- only while holding the connection
    def _ensure_open(self) -> BlockingChannel:
        ch = self._ch
        if ch is not None and ch.is_open:
            return ch
        if self._closed:
            raise ClosedError("the channel is closed")
        conn = self._io.pika_connection()
        ch = conn.channel()
        self.generation += 1
        self._unacked = deque()
        self._acks_pending = set()
        self._settled = set()
        self._ch = ch
        impl = _async_channel(ch)
        impl.add_on_close_callback(self._on_pika_channel_closed)
        impl.add_on_return_callback(self._on_return)
        ch.add_on_cancel_callback(self._on_broker_cancel)
        self._seq = 0
        self._confirmed_high = 0
        self._returned_seq = 0
        if self.confirms:
            # No need to wait for Confirm.SelectOk: the broker handles frames in order, so
            # every publish after this one is confirmed (delivery tags start at 1).
            impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=lambda _f: None)
        return ch

    def _run_sync(self, op: Callable[[BlockingChannel], Any], entity: str) -> Any:
        ch = self._ensure_open()
        try:
            return op(ch)
        except pex.ChannelClosed as exc:
            raise map_pika_error(exc, entity=entity) from exc

    def _declare_one(self, ch: BlockingChannel, item: TopologyItem) -> None:
        if isinstance(item, Exchange):
            if item.is_default:
                return
            self._run_sync(
                lambda c: c.exchange_declare(
                    item.name,
                    exchange_type=item.exchange_type.value,
                    durable=item.durable,
                    auto_delete=item.auto_delete,
                    internal=item.internal,
                    arguments=dict(item.arguments) or None,
                ),
                f"exchange {item.name!r}",
            )
        elif isinstance(item, Queue):
            ok = self._run_sync(
                lambda c: c.queue_declare(
                    item.name,
                    durable=bool(item.durable),
                    exclusive=bool(item.exclusive),
                    auto_delete=bool(item.auto_delete),
                    arguments=item.arguments or None,
                ),
                item.describe(),
            )
            if item.server_named:
                self._names[id(item)] = ok.method.queue
        else:
            binding: Binding = item
            queue = self.queue_name(binding.queue)
            self._run_sync(
                lambda c: c.queue_bind(
                    queue,
                    binding.exchange_name,
                    routing_key=binding.routing_key,
                    arguments=binding.binding_arguments or None,
                ),
                f"binding of queue {queue!r} to exchange {binding.exchange_name!r}",
            )

    def _start_consumer(self, ch: BlockingChannel, consumer: _Consumer) -> None:
        gen = self.generation
        on_message = consumer.on_message
        queue = self.queue_name(consumer.queue)
        auto_ack = queue == "amq.rabbitmq.reply-to"
        unacked = self._unacked

        def deliver(
            _ch: BlockingChannel, method: Any, props: pika.BasicProperties, body: bytes
        ) -> None:
            if not auto_ack:
                unacked.append(method.delivery_tag)
            try:
                on_message(Delivery(self, gen, method, props, body))
            except Exception:
                # runs while driving the connection: a consumer's bug must not take the
                # connection (and everyone on it) down; the message stays unacked, and the
                # broker redelivers it once the channel closes
                log.exception(
                    "hutch: the consumer of queue %r failed on delivery %d; left unacked",
                    queue,
                    method.delivery_tag,
                )

        self._run_sync(
            lambda c: c.basic_consume(
                queue,
                deliver,
                auto_ack=auto_ack,
                exclusive=consumer.exclusive,
                consumer_tag=consumer.tag,
                arguments=consumer.arguments or None,
            ),
            f"queue {queue!r}",
        )

    def _publish_now(self, m: OutgoingMessage) -> None:
        if m.done():
            return
        if self._closed and (self._ch is None or not self._ch.is_open):
            # publishes queued before close() still go out: the close task runs after them
            m.fail(ClosedError("the channel is closed"))
            return
        try:
            ch = self._ensure_open()
            impl = _async_channel(ch)
            impl.basic_publish(m.exchange, m.routing_key, m.body, m.properties, m.mandatory)
        except (pex.AMQPConnectionError, pex.ConnectionWrongStateError, ConnectionLost):
            # connection is going down: keep it for republishing after recovery
            if self.confirms:
                self._retry_queue.append(m)
            else:
                m.fail(ConnectionLost("connection lost before the message was sent"))
            return
        except (pex.ChannelClosed, pex.ChannelWrongStateError) as exc:
            m.fail(map_pika_error(exc))
            return
        except (pex.AMQPError, TypeError, ValueError, OverflowError) as exc:
            # pika could not encode it (a header value AMQP has no type for, say): nothing
            # was sent, and the channel is fine
            m.fail(
                PublishError(
                    f"the message cannot be encoded as AMQP: {type(exc).__name__}: {exc}",
                    exchange=m.exchange,
                    routing_key=m.routing_key,
                    message_id=m.message_id,
                )
            )
            return
        if self.confirms:
            self._seq += 1
            self._unconfirmed[self._seq] = _Pending(m, self._seq)
        else:
            m.succeed()

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag: int = method.delivery_tag
        nack = isinstance(method, pika.spec.Basic.Nack)
        if tag > self._confirmed_high:
            self._confirmed_high = tag
        if method.multiple:
            done = []
            while self._unconfirmed:
                first = next(iter(self._unconfirmed))
                if first > tag:
                    break
                done.append(self._unconfirmed.popitem(last=False)[1])
        else:
            one = self._unconfirmed.pop(tag, None)
            done = [one] if one is not None else []
        for pending in done:
            m = pending.message
            if m.done():
                continue
            if nack:
                m.fail(
                    Nacked(
                        f"broker nacked the message to exchange {m.exchange!r} "
                        f"with routing key {m.routing_key!r}",
                        exchange=m.exchange,
                        routing_key=m.routing_key,
                        message_id=m.message_id,
                    )
                )
            elif pending.returned is not None:
                code, text = pending.returned
                m.fail(
                    Unroutable(
                        exchange=m.exchange,
                        routing_key=m.routing_key,
                        reply_code=code,
                        reply_text=text,
                        message_id=m.message_id,
                    )
                )
            else:
                m.succeed()

    def _match_return(
        self, exchange: str, routing_key: str, props: pika.BasicProperties, body: bytes
    ) -> _Pending | None:
        """The unconfirmed publish a ``basic.return`` belongs to, or None.

        Matched by publish sequence, never by message id alone. The broker handles a
        channel's publishes in order and sends the return of an unroutable mandatory
        publish while handling it, before that publish's confirm (RabbitMQ's "Publisher
        Confirms": ``basic.return`` comes before ``basic.ack``); confirms of later publishes
        can only come later still. So the returned publish:

        * is newer than every confirm received so far (``seq > _confirmed_high``),
        * is newer than the publish the previous return belonged to (``_returned_seq``),
        * is mandatory, and went to the exchange and routing key the return names.

        Among those the oldest wins: the first whose body, message id and correlation id
        are the returned ones, else the first with that exchange and routing key. (Two
        such publishes differ in routability only if the topology changed between them;
        then their content tells them apart.) The scan starts where the previous one
        stopped, so a stream of returns costs one pass over the publishes in flight.
        """
        fallback: _Pending | None = None
        looked = 0
        for seq in range(max(self._confirmed_high, self._returned_seq) + 1, self._seq + 1):
            pending = self._unconfirmed.get(seq)
            if pending is None or pending.returned is not None:
                continue
            m = pending.message
            if not m.mandatory or m.exchange != exchange or m.routing_key != routing_key:
                continue
            if _same_content(m, props, body):
                fallback = pending
                break
            if fallback is None:
                fallback = pending
            looked += 1
            if looked >= _RETURN_SCAN:
                break
        if fallback is not None:
            self._returned_seq = fallback.seq
        return fallback

    def _on_return(self, _ch: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        pending = self._match_return(method.exchange, method.routing_key, props, body)
        if pending is not None:
            pending.returned = (method.reply_code, method.reply_text)
            return
        if self.on_return is not None:
            try:
                properties = from_pika_properties(props)
            except ValueError:
                properties = Properties(
                    correlation_id=props.correlation_id, message_id=props.message_id
                )
            self.on_return(method.reply_code, method.reply_text, properties)
            return
        log.debug(
            "hutch: message returned by broker: exchange=%r routing_key=%r %s %s",
            method.exchange,
            method.routing_key,
            method.reply_code,
            method.reply_text,
        )

    def _settle(self, gen: int, tag: int, *, ack: bool, requeue: bool) -> None:
        ch = self._ch
        if gen != self.generation or ch is None or not ch.is_open:
            log.debug(
                "hutch: dropping %s of delivery %d from a closed channel",
                "ack" if ack else "nack",
                tag,
            )
            return
        impl = _async_channel(ch)
        if ack:
            impl.basic_ack(tag)
        else:
            impl.basic_nack(tag, requeue=requeue)
        self._settled.add(tag)

    def _queue_ack(self, gen: int, tag: int) -> None:
        if gen != self.generation or self._ch is None:
            log.debug("hutch: dropping ack of delivery %d from a closed channel", tag)
            return
        self._acks_pending.add(tag)
        if not self._ack_flush_scheduled:
            self._ack_flush_scheduled = True
            # runs after every task already queued, so acks arriving together coalesce
            self._io.submit(self._flush_acks)

    def _flush_acks(self) -> None:
        self._ack_flush_scheduled = False
        ch = self._ch
        pending = self._acks_pending
        if ch is None or not ch.is_open:
            pending.clear()
            return
        impl = _async_channel(ch)
        unacked, settled = self._unacked, self._settled
        last = 0
        while unacked:
            first = unacked[0]
            if first in pending:
                pending.discard(first)
                last = first
            elif first in settled:
                settled.discard(first)
            else:
                break
            unacked.popleft()
        if last:
            # every outstanding delivery up to `last` is settled: one frame acks them all
            impl.basic_ack(last, multiple=True)
        for tag in pending:
            impl.basic_ack(tag)
            settled.add(tag)
        pending.clear()

    def _on_broker_cancel(self, frame: Any) -> None:
        tag = frame.method.consumer_tag
        consumer = self._consumers.pop(tag, None)
        if consumer is None:
            return
        queue = consumer.queue if isinstance(consumer.queue, str) else consumer.queue.name
        log.warning("hutch: broker cancelled the consumer of queue %r (queue deleted?)", queue)
        if consumer.on_cancel is not None:
            consumer.on_cancel(queue)

    def _on_pika_channel_closed(self, _ch: Any, reason: BaseException) -> None:
        if isinstance(reason, pex.ChannelClosedByBroker):
            error = map_pika_error(reason)
            if self._consumers or self._unconfirmed:
                log.warning("hutch: broker closed channel: %s", error)
            else:
                # nothing in flight: the synchronous caller gets the error raised (e.g. a
                # passive declare of a queue that does not exist yet, polled while waiting)
                log.debug("hutch: broker closed channel: %s", error)
            self._fail_unconfirmed(error)
            self._ch = None
            if self._consumers and not self._closed:
                # an asynchronous channel error (e.g. a bad ack) must not silently end
                # consumption: reopen and restore the consumers
                self._io.submit(self._restore_consumers_after_channel_error)

    def _restore_consumers_after_channel_error(self) -> None:
        if self._ch is not None or self._closed:
            return
        try:
            ch = self._ensure_open()
            if self._prefetch is not None:
                ch.basic_qos(prefetch_count=self._prefetch, global_qos=False)
            for consumer in list(self._consumers.values()):
                self._start_consumer(ch, consumer)
        except (ChannelClosed, pex.ChannelClosed) as exc:
            log.error("hutch: cannot restore consumers after a channel error: %s", exc)
            for consumer in list(self._consumers.values()):
                self._consumers.pop(consumer.tag, None)
                if consumer.on_cancel is not None:
                    consumer.on_cancel(self.queue_name(consumer.queue))

    def _fail_unconfirmed(self, error: BaseException) -> None:
        pending, self._unconfirmed = self._unconfirmed, OrderedDict()
        for p in pending.values():
            p.message.fail(error)

    def _close_now(self) -> None:
        if self._acks_pending:
            # acks requested before the close must reach the broker before it: their
            # coalesced flush may still be queued behind this task
            self._flush_acks()
        self._fail_unconfirmed(ClosedError("the channel was closed before the broker confirmed"))
        ch, self._ch = self._ch, None
        if ch is not None and ch.is_open:
            try:
                ch.close()
            except (pex.AMQPError, OSError):
                pass

    # called by the IoLoop
    def on_connection_lost(self) -> None:
        """The connection died: keep unconfirmed publishes for republishing."""
        self._ch = None
        for seq in list(self._unconfirmed):
            self._retry_queue.append(self._unconfirmed.pop(seq).message)

    def restore(self) -> None:
        """Re-create the channel after a reconnect: topology, QoS, consumers, republish."""
        if self._closed:
            return
        ch = self._ensure_open()
        for item in self._declared:
            try:
                self._declare_one(self._ensure_open(), item)
            except ChannelClosed as exc:
                log.error("hutch: cannot redeclare %r after reconnect: %s", item, exc)
        ch = self._ensure_open()
        if self._prefetch is not None:
            ch.basic_qos(prefetch_count=self._prefetch, global_qos=False)
        for consumer in list(self._consumers.values()):
            try:
                self._start_consumer(self._ensure_open(), consumer)
            except ChannelClosed as exc:
                log.error("hutch: cannot restore consumer of %r: %s", consumer.queue, exc)
                self._consumers.pop(consumer.tag, None)
                if consumer.on_cancel is not None:
                    consumer.on_cancel(self.queue_name(consumer.queue))
        retry, self._retry_queue = self._retry_queue, []
        if retry:
            log.info("hutch: republishing %d unconfirmed messages after reconnect", len(retry))
        for m in retry:
            self._publish_now(m)

    def on_connection_closed(self, reason: BaseException, *, graceful: bool) -> None:
        """The connection is closing for good: fail whatever is still pending."""
        if graceful and self._ch is not None:
            self._close_now()
        self._fail_unconfirmed(reason)
        retry, self._retry_queue = self._retry_queue, []
        for m in retry:
            m.fail(reason)
        self._ch = None
        self._closed = True
