"""hutch._checks: argument helpers and the AMQP field-table check, against pika's own encoder."""

from __future__ import annotations

import calendar
import datetime as dt
import decimal
import math
from typing import Any

import pika.data
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hutch._amqp.properties import aware_timestamps
from hutch._checks import (
    MAX_TIMEOUT,
    check_bool,
    check_field_table,
    check_float,
    check_int,
    check_shortstr,
    check_str,
    check_timeout,
)

pytestmark = pytest.mark.timeout(120)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------- strategies
_text = st.text(alphabet=st.characters(codec=None), max_size=40)  # lone surrogates included
_long_text = st.integers(60, 300).map(lambda n: "é" * n)
_ints = st.one_of(
    st.integers(-(2**31), 2**31),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64]),
)
_decimals = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(places=2, min_value=-(10**7), max_value=10**7),
    st.builds(
        lambda digits, exp: decimal.Decimal(f"{digits}E{exp}"),
        st.integers(-(10**12), 10**12),
        st.integers(-300, 20),
    ),
)
_datetimes = st.one_of(
    st.datetimes(),
    st.datetimes(timezones=st.just(dt.timezone.utc)),
    st.datetimes(timezones=st.sampled_from([dt.timezone(dt.timedelta(hours=h)) for h in (-12, 5)])),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    _ints,
    st.floats(allow_nan=True),
    _text,
    _long_text,
    st.binary(max_size=20),
    _decimals,
    _datetimes,
    st.dates(),
    st.builds(bytearray, st.binary(max_size=4)),
)
_keys = st.one_of(_text, _long_text, st.integers(), st.binary(max_size=4), st.none())


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(_text, children, max_size=4),
        st.dictionaries(_keys, children, max_size=3),
        st.tuples(children),
        st.frozensets(st.integers(), max_size=2),
    )


_values = st.recursive(_scalars, _containers, max_leaves=12)
_tables = st.one_of(
    st.dictionaries(_text, _values, max_size=5),
    st.dictionaries(_keys, _values, max_size=3),
)


def _expected(value: Any) -> Any:
    """What pika decodes ``value`` back to."""
    if isinstance(value, dt.datetime):
        return dt.datetime.fromtimestamp(calendar.timegm(value.utctimetuple()), dt.timezone.utc)
    if isinstance(value, dict):
        return {k: _expected(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expected(v) for v in value]
    return value


def _has_bytes_key(value: Any) -> bool:
    if isinstance(value, dict):
        return any(isinstance(k, bytes) or _has_bytes_key(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_bytes_key(v) for v in value)
    return False


#: pika before 1.4 writes an int of 2**63 or more as an *unsigned* ``l`` and reads it back
#: itself, but RabbitMQ and every other client read ``l`` as signed (a negative number):
#: hutch refuses such ints, and that pika's own round trip succeeds proves nothing.
_PIKA_UNSIGNED_LONGS = tuple(int(p) for p in pika.__version__.split(".")[:2]) < (1, 4)


def _has_uint64(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_uint64(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_uint64(v) for v in value)
    return isinstance(value, int) and not isinstance(value, bool) and value >= 2**63


def _round_trip(table: dict[Any, Any]) -> Any:
    """What a consumer gets: pika's encoding and decoding, then hutch's (aware timestamps)."""
    pieces: list[bytes] = []
    pika.data.encode_table(pieces, table)
    decoded, _ = pika.data.decode_table(b"".join(pieces), 0)
    return aware_timestamps(decoded)


@SETTINGS
@given(_tables)
def test_field_table_check_agrees_with_pika(table: dict[Any, Any]) -> None:
    error: Exception | None = None
    try:
        check_field_table("headers", table)
    except (TypeError, ValueError) as exc:
        error = exc
    if error is None:
        assert _round_trip(table) == _expected(table)
        return
    assert str(error).startswith("headers"), error  # names the argument, then the field
    # and pika indeed cannot carry it: it fails, or what comes back is not the same
    # (except bytes keys: pika sends them, but hutch's tables have str keys only)
    if _has_bytes_key(table) or (_PIKA_UNSIGNED_LONGS and _has_uint64(table)):
        return
    try:
        decoded = _round_trip(table)
    except Exception:
        return
    assert decoded != _expected(table), f"refused a table pika round-trips: {error}"


@pytest.mark.parametrize(
    ("table", "error", "words"),
    [
        ({"n": 2**63}, ValueError, ["headers['n']", "64-bit"]),
        ({"n": -(2**63) - 1}, ValueError, ["headers['n']"]),
        ({"d": decimal.Decimal("1.2345678901")}, ValueError, ["headers['d']", "decimal"]),
        ({"d": decimal.Decimal("NaN")}, ValueError, ["headers['d']", "finite"]),
        ({"t": dt.datetime(1969, 12, 31, 23, 59, 59)}, ValueError, ["headers['t']", "1970"]),
        ({1: "x"}, TypeError, ["key 1", "str"]),
        ({"a": {"b": [1, {2: 3}]}}, TypeError, ["headers['a']['b'][1]", "key 2"]),
        ({"f": 1.5}, TypeError, ["headers['f']", "float", "Decimal"]),
        ({"t": (1, 2)}, TypeError, ["headers['t']", "list"]),
        ({"k" * 256: 1}, ValueError, ["256 bytes", "255"]),
        ({"s": "\ud800"}, ValueError, ["headers['s']", "UTF-8"]),
    ],
)
def test_field_table_check_names_the_field(
    table: dict[Any, Any], error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as info:
        check_field_table("headers", table)
    for word in words:
        assert word in str(info.value)


def test_field_table_edges_that_pika_encodes_pass() -> None:
    table = {
        "max": 2**63 - 1,
        "min": -(2**63),
        "dec": decimal.Decimal("-2147483.648"),
        "big_dec": decimal.Decimal("2147483647"),
        "epoch": dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc),
        "zero": decimal.Decimal("0E-300"),
        "k" * 255: [None, True, b"\x00", {"n": {"m": []}}],
    }
    check_field_table("headers", table)
    assert _round_trip(table) == _expected(table)


def test_nesting_is_bounded() -> None:
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(100):
        inner["x"] = {}
        inner = inner["x"]
    with pytest.raises(ValueError, match="nested more than"):
        check_field_table("headers", deep)
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    with pytest.raises(ValueError, match="nested more than"):
        check_field_table("headers", cyclic)


# ----------------------------------------------------------------------- scalars
_anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.lists(st.integers(), max_size=2),
)


@SETTINGS
@given(_anything, st.booleans())
def test_check_timeout(value: Any, allow_none: bool) -> None:
    ok = (value is None and allow_none) or (
        isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= MAX_TIMEOUT
    )
    if ok:
        result = check_timeout("timeout", value, allow_none=allow_none)
        assert result is None or (result > 0 and math.isfinite(result))
    else:
        with pytest.raises((TypeError, ValueError), match=r"^timeout must be"):
            check_timeout("timeout", value, allow_none=allow_none)


@pytest.mark.parametrize(
    "bad", [math.nan, math.inf, -math.inf, 0, 0.0, -1, -1e-9, 10**400, 1e300, MAX_TIMEOUT + 1]
)
def test_timeouts_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="finite number of seconds greater than 0 and at most"):
        check_timeout("timeout", bad)


@pytest.mark.parametrize("bad", [True, "1", b"1", [1], None])
def test_timeout_types_refused(bad: object) -> None:
    with pytest.raises(TypeError, match="timeout must be a number of seconds"):
        check_timeout("timeout", bad)


@SETTINGS
@given(_anything)
def test_check_int(value: Any) -> None:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if is_int and 1 <= value <= 65535:
        assert check_int("prefetch", value, 1, 65535) == value
    elif is_int:
        with pytest.raises(ValueError, match="prefetch must be between 1 and 65535"):
            check_int("prefetch", value, 1, 65535)
    else:
        with pytest.raises(TypeError, match="prefetch must be an int"):
            check_int("prefetch", value, 1, 65535)


@SETTINGS
@given(_anything)
def test_check_float(value: Any) -> None:
    is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_num:
        with pytest.raises(TypeError, match="jitter must be a number"):
            check_float("jitter", value, 0, 1)
    elif abs(value) > 1e300 or not math.isfinite(value) or not 0 <= value <= 1:
        with pytest.raises(ValueError, match="jitter must be"):
            check_float("jitter", value, 0, 1)
    else:
        assert check_float("jitter", value, 0, 1) == float(value)


def test_check_str_bool_shortstr() -> None:
    assert check_str("name", "x") == "x"
    assert check_str("name", None, allow_none=True) is None
    with pytest.raises(TypeError, match="name must be a str"):
        check_str("name", 3)
    with pytest.raises(ValueError, match="must not be empty"):
        check_str("name", "", non_empty=True)
    assert check_bool("durable", False) is False
    with pytest.raises(TypeError, match="durable must be True or False"):
        check_bool("durable", 1)
    assert check_shortstr("correlation_id", "é" * 127) == "é" * 127
    with pytest.raises(ValueError, match="256 bytes"):
        check_shortstr("correlation_id", "é" * 128)
    with pytest.raises(TypeError, match="correlation_id must be a str"):
        check_shortstr("correlation_id", 123)
    with pytest.raises(ValueError, match="UTF-8"):
        check_shortstr("message_id", "\udc80")
