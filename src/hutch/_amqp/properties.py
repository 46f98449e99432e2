"""hutch's Properties to and from pika's, decoded defensively; the delivered message."""

from __future__ import annotations

import datetime as _dt
import logging
import operator
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import pika
import pika.channel
import pika.spec

from hutch._amqp.pika_private import register_properties_class
from hutch._message import Properties

if TYPE_CHECKING:
    from hutch._amqp.api import ChannelApi

__all__ = [
    "RAW_HEADERS",
    "RAW_PREFIX",
    "Delivery",
    "UndecodableHeaders",
    "aware_timestamps",
    "basic_properties",
    "decode_properties",
    "from_pika_properties",
    "plainly_decodable",
    "raw_headers_table",
    "to_pika_properties",
]

log = logging.getLogger("hutch")


_UTC = _dt.timezone.utc


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


_BLANK = pika.BasicProperties().__dict__  # the 14 properties, every one None


def basic_properties(**fields: Any) -> pika.BasicProperties:
    """Build pika properties from already-valid fields (the publisher's fast path).

    Filled in as ``pika.BasicProperties(**fields)`` would, without running its
    ``__init__`` (14 assignments, on every message). ``fields`` must name properties.
    """
    props: pika.BasicProperties = object.__new__(pika.BasicProperties)
    values = props.__dict__
    values.update(_BLANK)
    values.update(fields)
    return props


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
_short_strings_of = operator.attrgetter(*_SHORT_STRINGS)


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
    register_properties_class(_GuardedBasicProperties)


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
        if type(value) is str:  # the common case, never a problem: no repr of the name
            continue
        problem = _value_problem(value, repr(prefix + key), depth)
        if problem is not None:
            return problem
    return None


def aware_timestamps(value: Any) -> Any:
    """``value`` with every naive datetime in it made aware UTC (tables and arrays too).

    pika 1.3 decodes an AMQP timestamp (``T``) in a headers table as a naive datetime in
    UTC, pika 1.4 as an aware one: hutch hands out aware UTC datetimes on every pika. A
    table without naive datetimes is returned as it is (the same object).

    Args:
        value: A decoded field value or table.

    Returns:
        The value, rebuilt only where a naive datetime was replaced.
    """
    if isinstance(value, _dt.datetime):
        return value.replace(tzinfo=_UTC) if value.tzinfo is None else value
    if isinstance(value, dict):
        fixed = {k: aware_timestamps(v) for k, v in value.items()}
        return value if all(fixed[k] is v for k, v in value.items()) else fixed
    if isinstance(value, list):
        items = [aware_timestamps(v) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


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
    elif isinstance(headers, dict) and all(
        type(k) is str and type(v) is str for k, v in headers.items()
    ):
        table = headers  # strings only (the common case): nothing to fix or to refuse
    elif isinstance(headers, dict):
        table = cast("dict[str, Any]", aware_timestamps(headers))
        problem = _table_problem(headers)
        if problem is not None:
            problems.append(problem)
            table_bytes = raw_headers_table(p)
            if table_bytes is not None:
                raw[RAW_HEADERS] = table_bytes
                table = None
    else:
        table = None
    strings = _short_strings_of(p)
    values: dict[str, Any] = dict(zip(_SHORT_STRINGS, strings, strict=True))
    if bytes in map(type, strings):  # pika left what is not UTF-8 as bytes
        for name, value in values.items():
            if isinstance(value, bytes):
                problems.append(f"the {name} property is not valid UTF-8")
                raw[RAW_PREFIX + name.replace("_", "-")] = value
                values[name] = None
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


_STR = frozenset({str})
_STR_OR_NONE = frozenset({str, type(None)})


def plainly_decodable(p: pika.BasicProperties) -> bool:
    """True when :func:`decode_properties` would certainly find no problem in ``p``.

    A cheap test for the common case (string headers, string or no short strings, no
    priority or timestamp to check), so a hot path (an RPC server's request) can skip
    building :class:`~hutch.Properties` it does not need. False only means "decode to
    know": the full check decides then.
    """
    headers = p.headers
    if headers is not None and not (
        type(headers) is dict
        and _STR.issuperset(map(type, headers))
        and _STR.issuperset(map(type, headers.values()))
    ):
        return False
    expiration = p.expiration
    return (
        _STR_OR_NONE.issuperset(map(type, _short_strings_of(p)))
        and (expiration is None or expiration.isdigit())
        and p.delivery_mode in (None, 1, 2)
        and p.priority is None
        and p.timestamp is None
    )


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
        channel: ChannelApi,
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
            if plainly_decodable(self._pika_props):
                return None  # the properties are built when asked for
            self._props, self._problem = decode_properties(self._pika_props)
        return self._problem

    def ack(self) -> None:
        """Acknowledge (thread-safe; dropped if the channel was reopened since)."""
        self.channel.ack(self)

    def nack(self, *, requeue: bool) -> None:
        """Reject, requeueing or dead-lettering (thread-safe)."""
        self.channel.nack(self, requeue=requeue)
