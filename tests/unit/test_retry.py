"""RetryPolicy, the Retry/Reject signals and the attempts header: pure logic, no broker."""

from __future__ import annotations

import pytest

from hutch import HutchError, Reject, Retry, RetryPolicy
from hutch._retry import ATTEMPTS_HEADER, attempts_made


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


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, 0),
        ({}, 0),
        ({ATTEMPTS_HEADER: 2}, 2),
        ({ATTEMPTS_HEADER: "3"}, 3),
        ({ATTEMPTS_HEADER: b"4"}, 4),
        ({ATTEMPTS_HEADER: "junk"}, 0),
        ({ATTEMPTS_HEADER: -5}, 0),
        ({ATTEMPTS_HEADER: True}, 0),
        ({ATTEMPTS_HEADER: [1]}, 0),
    ],
)
def test_attempts_made_reads_the_header_tolerantly(
    headers: dict[str, object] | None, expected: int
) -> None:
    assert attempts_made(headers) == expected
