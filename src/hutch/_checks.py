"""Argument checks: the one place where hutch decides whether an argument is acceptable.

Every public constructor and method checks its arguments with these helpers, so the same
mistake gets the same error everywhere: a :class:`TypeError` for a wrong type, a
:class:`ValueError` for a wrong value, each naming the argument and saying what is allowed.

Numbers:
    * ``bool`` is never taken for an ``int`` or a ``float`` (``prefetch=True`` is a mistake).
    * Timeouts are finite, greater than zero and at most :data:`MAX_TIMEOUT` (2**32 - 1
      milliseconds, about 49.7 days: the longest per-message TTL RabbitMQ accepts, which an
      RPC request's ``expiration`` is); ``None`` only where the method documents "no
      limit". NaN and infinity are refused (pika's timers and Python's locks cannot hold
      them).

AMQP values (what pika 1.x can put on the wire, checked *before* anything is sent):
    * ``shortstr`` properties (``correlation_id``, ``message_id``, ``reply_to``,
      ``content_type``...): a ``str`` of at most 255 bytes of UTF-8.
    * field tables (``headers``, queue and exchange arguments): a ``dict`` with ``str`` keys
      of at most 255 bytes of UTF-8; values ``None``, ``bool``, ``int`` in the signed 64-bit
      range, ``str`` (UTF-8 encodable), ``bytes``, a finite :class:`~decimal.Decimal` with
      at most 255 decimals and at most 9 significant digits (an AMQP decimal is a signed
      32-bit integer and a scale), a :class:`~datetime.datetime` from 1970 on (whole
      seconds, as AMQP timestamps are; naive values are taken as UTC, as pika does), a
      ``list`` of values, or a nested ``dict`` table; at most 64 levels deep. pika cannot
      encode ``float``, ``tuple``, ``set``, ``date`` or other mappings.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import decimal
import math
from collections.abc import Mapping
from typing import Any, Literal, overload

__all__ = [
    "MAX_TABLE_DEPTH",
    "MAX_TIMEOUT",
    "check_basic_properties",
    "check_bool",
    "check_field_table",
    "check_field_value",
    "check_float",
    "check_int",
    "check_shortstr",
    "check_str",
    "check_timeout",
]

#: Longest timeout accepted, in seconds: 2**32 - 1 ms (about 49.7 days), RabbitMQ's limit
#: for a message's ``expiration``.
MAX_TIMEOUT = 4_294_967.295
#: Deepest nesting of tables and arrays a header table may have.
MAX_TABLE_DEPTH = 64
_INT64 = (-(2**63), 2**63 - 1)
_INT32 = (-(2**31), 2**31 - 1)
_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1


def _type(value: object) -> str:
    return type(value).__name__


def check_bool(name: str, value: object) -> bool:
    """Check a flag.

    Args:
        name: The argument's name, for the message.
        value: The value; must be a ``bool``.

    Returns:
        The value.

    Raises:
        TypeError: Not a ``bool``.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {_type(value)} {value!r}")
    return value


def check_int(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """Check an integer count or size, optionally within ``[low, high]``.

    Args:
        name: The argument's name, for the message.
        value: The value; an ``int`` but not a ``bool``.
        low: Smallest value allowed, if any.
        high: Largest value allowed, if any.

    Returns:
        The value, as a plain ``int``.

    Raises:
        TypeError: Not an ``int`` (a ``bool``, a ``float`` or a string is refused).
        ValueError: Out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {_type(value)} {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be {_range(low, high)}, got {value}")
    return int(value)


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    if low is not None:
        return f"at least {low}"
    return f"at most {high}"


def check_float(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    positive: bool = False,
) -> float:
    """Check a finite number (``int`` or ``float``, not ``bool``), optionally in range.

    Args:
        name: The argument's name, for the message.
        value: The value.
        low: Smallest value allowed, if any.
        high: Largest value allowed, if any.
        positive: The value must be greater than zero.

    Returns:
        The value as a ``float``.

    Raises:
        TypeError: Not a number.
        ValueError: NaN, infinite, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {_type(value)} {value!r}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be a finite number, got an int too large") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and not number > 0:
        raise ValueError(f"{name} must be greater than 0, got {value!r}")
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValueError(f"{name} must be {_range(low, high)}, got {value!r}")
    return number


@overload
def check_timeout(name: str, value: object, *, allow_none: Literal[False] = False) -> float: ...


@overload
def check_timeout(name: str, value: object, *, allow_none: bool) -> float | None: ...


def check_timeout(name: str, value: object, *, allow_none: bool = False) -> float | None:
    """Check a timeout in seconds: finite, > 0 and <= MAX_TIMEOUT (or None, if allowed).

    Args:
        name: The argument's name, for the message.
        value: The value.
        allow_none: ``None`` means "no limit" (or "the default") here.

    Returns:
        The timeout as a ``float``, or None.

    Raises:
        TypeError: Not a number (or None where it is not allowed).
        ValueError: NaN, infinite, zero, negative or over :data:`MAX_TIMEOUT`.
    """
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a number of seconds, got None")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {_type(value)} {value!r}")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT):
        hint = " or None for no limit" if allow_none else ""
        raise ValueError(
            f"{name} must be a finite number of seconds greater than 0 and at most "
            f"{MAX_TIMEOUT} (about 49.7 days){hint}, got {value!r}"
        )
    return seconds


def check_str(
    name: str, value: object, *, allow_none: bool = False, non_empty: bool = False
) -> str | None:
    """Check a string argument.

    Args:
        name: The argument's name, for the message.
        value: The value.
        allow_none: None is accepted.
        non_empty: The empty string is refused.

    Returns:
        The value.

    Raises:
        TypeError: Not a ``str``.
        ValueError: Empty where it must not be.
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {_type(value)}")
    if non_empty and not value:
        raise ValueError(f"{name} must not be empty")
    return value


def _utf8(name: str, value: str) -> bytes:
    try:
        return value.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{name} cannot be encoded as UTF-8 ({exc.reason} at position {exc.start}); "
            "remove lone surrogates"
        ) from None


def check_shortstr(name: str, value: object) -> str:
    """Check an AMQP ``shortstr`` (a property such as ``correlation_id``, or a name).

    Args:
        name: The argument's name, for the message.
        value: The value.

    Returns:
        The value.

    Raises:
        TypeError: Not a ``str``.
        ValueError: Not UTF-8 encodable, or longer than 255 bytes of UTF-8.
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str (an AMQP short string), got {_type(value)}")
    if len(value) > 63:  # (only a string over 63 characters can be over 255 bytes)
        size = len(_utf8(name, value))
        if size > 255:
            raise ValueError(f"{name} is {size} bytes of UTF-8; AMQP allows at most 255")
    elif not value.isascii():
        _utf8(name, value)
    return value


def check_field_table(name: str, table: object) -> None:
    """Check that pika can encode ``table`` as an AMQP 0-9-1 field table.

    See the module docstring for the rules. Nothing is converted: a value that passes is
    encoded by pika as it is, and decodes to an equal value (datetimes to whole seconds,
    in UTC).

    Args:
        name: The argument's name (e.g. ``"headers"``), for the message.
        table: The table; a mapping with ``str`` keys at the top level, ``dict`` within.

    Raises:
        TypeError: A key or value of a type AMQP tables cannot hold; names the field.
        ValueError: A value out of range (e.g. an int beyond 64 bits, a datetime before
            1970, a key over 255 bytes); names the field.
    """
    if not isinstance(table, Mapping):
        raise TypeError(f"{name} must be a dict with str keys, got {_type(table)}")
    _check_table(name, table, 1)


def check_field_value(name: str, value: object) -> None:
    """Check that pika can encode ``value`` as one AMQP field-table value.

    Args:
        name: The field's name (path), for the message.
        value: The value.

    Raises:
        TypeError: A type AMQP tables cannot hold.
        ValueError: A value out of range.
    """
    _check_value(name, value, 1)


def _check_table(path: str, table: Mapping[Any, Any], depth: int) -> None:
    if depth > MAX_TABLE_DEPTH:
        raise ValueError(f"{path} is nested more than {MAX_TABLE_DEPTH} levels deep")
    for key, value in table.items():
        if not isinstance(key, str):
            raise TypeError(
                f"{path} has a key {key!r} of type {_type(key)}; table keys must be str"
            )
        where = f"{path}[{key!r}]"
        if len(key) > 63 or not key.isascii():
            size = len(_utf8(f"{path} has a key {key!r} that", key))
            if size > 255:
                raise ValueError(f"{path} has a key of {size} bytes; AMQP allows at most 255")
        _check_value(where, value, depth)


def _check_value(path: str, value: object, depth: int) -> None:
    # ordered as pika's encode_value tests the types (bool before int)
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        if not value.isascii() and len(_utf8(path, value)) > _UINT32_MAX:
            raise ValueError(f"{path} is longer than an AMQP long string (4 GiB)")
        return
    if isinstance(value, bytes):
        if len(value) > _UINT32_MAX:
            raise ValueError(f"{path} is longer than an AMQP byte array (4 GiB)")
        return
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(
                f"{path} = {value} does not fit a signed 64-bit integer; "
                "send it as a str or a Decimal"
            )
        return
    if isinstance(value, decimal.Decimal):
        _check_decimal(path, value)
        return
    if isinstance(value, _dt.datetime):
        try:
            seconds = calendar.timegm(value.utctimetuple())
        except (OverflowError, ValueError):
            seconds = -1
        if not 0 <= seconds <= _UINT64_MAX:
            raise ValueError(
                f"{path} = {value.isoformat()} is not an AMQP timestamp: it must be from "
                "1970-01-01 UTC on"
            )
        return
    if isinstance(value, dict):
        _check_table(path, value, depth + 1)
        return
    if isinstance(value, list):
        if depth + 1 > MAX_TABLE_DEPTH:
            raise ValueError(f"{path} is nested more than {MAX_TABLE_DEPTH} levels deep")
        for i, item in enumerate(value):
            _check_value(f"{path}[{i}]", item, depth + 1)
        return
    hint = {
        "float": "send a str or a Decimal (pika cannot encode floats in tables)",
        "tuple": "use a list",
        "set": "use a list",
        "frozenset": "use a list",
        "bytearray": "use bytes",
        "date": "use a datetime",
    }.get(_type(value), "")
    if not hint and isinstance(value, Mapping):
        hint = "use a dict"
    allowed = "None, bool, int, str, bytes, Decimal, datetime, list or dict"
    raise TypeError(
        f"{path} is a {_type(value)}, which an AMQP table cannot hold"
        + (f"; {hint}" if hint else "")
        + f" (allowed: {allowed})"
    )


def _check_decimal(path: str, value: decimal.Decimal) -> None:
    if not value.is_finite():
        raise ValueError(f"{path} = {value} is not finite; an AMQP decimal must be")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    # strip trailing zeros exactly (pika normalizes, which is exact for what passes here)
    n = len(digits)
    while n > 1 and digits[n - 1] == 0:
        n -= 1
        exponent += 1
    if n > 10:  # (more significant digits than a 32-bit integer holds)
        raise ValueError(
            f"{path} = {value} does not fit an AMQP decimal (a signed 32-bit integer "
            "scaled by at most 255 decimal places); send it as a str"
        )
    raw = int("".join(map(str, digits[:n])) or "0")
    if raw == 0:
        exponent = 0
    elif exponent >= 0:
        if exponent > 10:  # (10**10 alone is beyond 32 bits)
            raise ValueError(
                f"{path} = {value} does not fit an AMQP decimal (a signed 32-bit integer "
                "scaled by at most 255 decimal places); send it as a str"
            )
        raw *= 10**exponent
        exponent = 0
    if sign:
        raw = -raw
    if -exponent > 255 or not _INT32[0] <= raw <= _INT32[1]:
        raise ValueError(
            f"{path} = {value} does not fit an AMQP decimal (a signed 32-bit integer "
            "scaled by at most 255 decimal places); send it as a str"
        )


#: The basic properties AMQP carries as a ``shortstr``.
SHORTSTR_PROPERTIES = frozenset(
    {
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
    }
)


def check_basic_properties(properties: Mapping[str, Any]) -> None:
    """Check AMQP basic property values the way pika will encode them (None means unset).

    Names are not checked here (the publisher refuses unknown names first).

    Args:
        properties: Property names and values.

    Raises:
        TypeError: A value of the wrong type (e.g. ``correlation_id=123``); names it.
        ValueError: A value out of range (a string over 255 bytes, ``priority=300``, an
            ``expiration`` that is not a string of digits, a timestamp before 1970).
    """
    for name, value in properties.items():
        if value is None:
            continue
        if name in SHORTSTR_PROPERTIES:
            check_shortstr(name, value)
            if name == "expiration" and not (
                isinstance(value, str)
                and value.isascii()
                and value.isdigit()
                and int(value) <= _UINT32_MAX
            ):
                raise ValueError(
                    "expiration is a TTL in milliseconds as a string of digits, e.g. "
                    f"'60000', or a timedelta, at most {_UINT32_MAX} ms (about 49.7 days, "
                    f"RabbitMQ's limit); got {value[:20]!r}"
                )
        elif name == "headers":
            check_field_table("headers", value)
        elif name == "delivery_mode":
            if check_int("delivery_mode", value) not in (1, 2):
                raise ValueError(
                    f"delivery_mode must be 1 (transient) or 2 (persistent), got {value}"
                )
        elif name == "priority":
            check_int("priority", value, 0, 255)
        elif name == "timestamp":
            if not isinstance(value, _dt.datetime):
                raise TypeError(f"timestamp must be a datetime, got {_type(value)}")
            try:
                seconds = int(value.timestamp())
            except (OverflowError, ValueError, OSError):
                seconds = -1
            if not 0 <= seconds <= _UINT64_MAX:
                raise ValueError(
                    f"timestamp {value.isoformat()} is not an AMQP timestamp: it must be "
                    "from 1970-01-01 UTC on"
                )
