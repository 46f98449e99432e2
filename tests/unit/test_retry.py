"""RetryPolicy, the Retry/Reject signals and the attempts header: pure logic, no broker."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hutch import HutchError, Reject, Retry, RetryPolicy
from hutch._retry import ATTEMPTS_HEADER, RETRY_OF_HEADER, attempts_made


def test_backoff_grows_by_the_multiplier_up_to_max_delay() -> None:
    policy = RetryPolicy(max_attempts=6, backoff=0.5, multiplier=3, max_delay=10)
    assert policy.delays() == [0.5, 1.5, 4.5, 10.0, 10.0]
    assert policy.delay_for(1) == 0.5
    assert policy.delay_for(10_000) == 10.0  # no overflow for huge attempt numbers


def test_one_attempt_means_no_retry() -> None:
    assert RetryPolicy(max_attempts=1).delays() == []


def test_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.backoff, policy.multiplier) == (3, 1.0, 2.0)
    assert policy.retry_on == (Exception,)
    assert policy.delays() == [1.0, 2.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_attempts": 0}, "at least 1"),
        ({"backoff": 0}, "at least 0.001"),
        ({"backoff": float("inf")}, "finite"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"backoff": 5, "max_delay": 1}, "max_delay"),
    ],
)
def test_bad_values_raise_value_error(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_bad_types_raise_type_error() -> None:
    with pytest.raises(TypeError, match="max_attempts"):
        RetryPolicy(max_attempts=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exception types"):
        RetryPolicy(retry_on=(ValueError, "KeyError"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="number"):
        RetryPolicy(backoff="1")  # type: ignore[arg-type]


def test_retry_on_accepts_a_single_type() -> None:
    policy = RetryPolicy(retry_on=TimeoutError)  # type: ignore[arg-type]
    assert policy.retry_on == (TimeoutError,)


def test_should_retry() -> None:
    policy = RetryPolicy(retry_on=(TimeoutError, ConnectionError))
    assert policy.should_retry(TimeoutError())
    assert policy.should_retry(ConnectionRefusedError())  # a subclass
    assert not policy.should_retry(ValueError())
    assert policy.should_retry(Retry())  # explicit, whatever retry_on says
    assert not RetryPolicy().should_retry(Reject("no"))  # even though Reject is an Exception


def test_signals() -> None:
    r = Retry(2.5, "busy")
    assert (r.delay, r.reason, str(r)) == (2.5, "busy", "busy")
    assert Retry().delay is None and Retry().reason
    assert Reject("bad total").reason == "bad total"
    # control flow for handlers, not hutch run-time errors
    assert not issubclass(Retry, HutchError) and not issubclass(Reject, HutchError)
    with pytest.raises(TypeError, match="reason="):
        Retry("try later")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        Retry(-1)


_MINE = {RETRY_OF_HEADER: "work"}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, 0),
        ({}, 0),
        ({**_MINE, ATTEMPTS_HEADER: 2}, 2),
        ({RETRY_OF_HEADER: b"work", ATTEMPTS_HEADER: 2}, 2),
        ({**_MINE, ATTEMPTS_HEADER: 2**63 - 1}, 1_000_000),
        # hutch writes an int; anything else is not its count
        ({**_MINE, ATTEMPTS_HEADER: "3"}, 0),
        ({**_MINE, ATTEMPTS_HEADER: b"4"}, 0),
        ({**_MINE, ATTEMPTS_HEADER: "junk"}, 0),
        ({**_MINE, ATTEMPTS_HEADER: -5}, 0),
        ({**_MINE, ATTEMPTS_HEADER: True}, 0),
        ({**_MINE, ATTEMPTS_HEADER: [1]}, 0),
        # without the marker naming this queue the count is somebody else's
        ({ATTEMPTS_HEADER: 2}, 0),
        ({RETRY_OF_HEADER: "other", ATTEMPTS_HEADER: 2}, 0),
        ({RETRY_OF_HEADER: 7, ATTEMPTS_HEADER: 2}, 0),
        ({RETRY_OF_HEADER: b"\xff", ATTEMPTS_HEADER: 2}, 0),
        # RabbitMQ's x-death is never consulted
        ({"x-death": [{"count": 5, "queue": "work.retry.100", "reason": "expired"}]}, 0),
    ],
)
def test_attempts_made_counts_only_hutchs_own_header(
    headers: dict[str, object] | None, expected: int
) -> None:
    assert attempts_made(headers, "work") == expected


_header_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=10),
        st.binary(max_size=10),
        st.decimals(),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(
    headers=st.dictionaries(
        st.sampled_from([ATTEMPTS_HEADER, RETRY_OF_HEADER, "x-death", "x-hutch-error"]),
        _header_values,
    ),
    queue=st.sampled_from(["work", ""]),
)
def test_attempts_made_never_raises_and_stays_in_range(
    headers: dict[str, object], queue: str
) -> None:
    n = attempts_made(headers, queue)
    assert 0 <= n <= 1_000_000
    mine = headers.get(RETRY_OF_HEADER) in (queue, queue.encode())
    value = headers.get(ATTEMPTS_HEADER)
    if not mine or isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        assert n == 0
    else:
        assert n == min(value, 1_000_000)
