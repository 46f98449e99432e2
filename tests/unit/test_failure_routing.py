"""Failure routing of the worker pool: the pure decision table, no broker."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hutch import Message, Reject, Retry, RetryPolicy
from hutch._dead_letter import failure_headers
from hutch._message import Properties
from hutch._retry import attempts_made
from hutch._worker_pool.outcome import Outcome, OutcomeKind, call_handler
from hutch._worker_pool.routing import Decision, Route, decide, retryable


class Transient(Exception):
    pass


class Permanent(Exception):
    pass


def _message() -> Message[object]:
    return Message(body=b"x", raw_body=b"x", properties=Properties())


# what a handler does: return, raise Reject/Retry (with or without a delay), or raise
# an exception that the policy does or does not retry
raises = st.one_of(
    st.none(),
    st.builds(Reject, st.text(max_size=20)),
    st.builds(
        Retry,
        st.one_of(st.none(), st.floats(0, 3600, allow_nan=False)),
        st.text(max_size=20),
    ),
    st.builds(Transient, st.text(max_size=20)),
    st.builds(Permanent, st.text(max_size=20)),
)
policies = st.one_of(
    st.none(),
    st.builds(
        RetryPolicy,
        max_attempts=st.integers(1, 8),
        backoff=st.floats(0.001, 10),
        multiplier=st.floats(1, 4),
        max_delay=st.just(300.0),
        retry_on=st.sampled_from([(Transient,), (Exception,), ()]),
    ),
)


def _wants_retry(exc: BaseException, policy: RetryPolicy | None) -> bool:
    """The rule as RetryPolicy documents it: Reject never, Retry always, else retry_on."""
    if policy is None or isinstance(exc, Reject):
        return False
    return isinstance(exc, (Retry, *policy.retry_on))


def _outcome_of(exc: BaseException | None, policy: RetryPolicy | None) -> Outcome:
    def handler(_body: object) -> None:
        if exc is not None:
            raise exc

    retry_on = policy.retry_on if policy is not None else ()
    return call_handler(handler, False, _message(), retry_on)


@settings(max_examples=60, deadline=None)
@given(
    exc=raises,
    attempt=st.integers(1, 12),
    redelivered=st.booleans(),
    policy=policies,
)
def test_decision_table(
    exc: BaseException | None, attempt: int, redelivered: bool, policy: RetryPolicy | None
) -> None:
    outcome = _outcome_of(exc, policy)
    decision = decide(outcome, attempt=attempt, redelivered=redelivered, policy=policy)
    if exc is None:
        assert outcome.kind is OutcomeKind.OK
        assert decision == Decision(Route.ACK)
        return
    assert decision.route is not Route.ACK
    # a failure never comes back to the worker at once: requeue is for crashes only
    assert decision.route is not Route.REQUEUE
    wants_retry = _wants_retry(exc, policy)
    assert not isinstance(exc, Reject) or decision.route is Route.DEAD_LETTER
    if decision.route is Route.RETRY:
        assert policy is not None and wants_retry
        # the next run is attempt + 1: never more runs than max_attempts
        assert attempt + 1 <= policy.max_attempts
        assert decision.delay is not None and math.isfinite(decision.delay)
        if isinstance(exc, Retry) and exc.delay is not None:
            assert decision.delay == exc.delay
        else:
            assert decision.delay == policy.delay_for(attempt)
        assert decision.reason == outcome.reason
    else:
        assert decision.route is Route.DEAD_LETTER
        if wants_retry:
            assert policy is not None and attempt >= policy.max_attempts
            assert decision.reason == f"{outcome.reason} (gave up after {attempt} attempts)"
        else:
            assert decision.reason == outcome.reason


@settings(max_examples=40, deadline=None)
@given(exc=raises, policy=policies, redelivered_first=st.booleans())
def test_a_message_runs_at_most_max_attempts_times(
    exc: BaseException | None, policy: RetryPolicy | None, redelivered_first: bool
) -> None:
    """Follow one message through its retries: the headers of each retry copy carry the
    count that the next attempt reads back."""
    queue = "jobs"
    headers: dict[str, object] | None = None
    runs = 0
    while True:
        attempt = attempts_made(headers, queue) + 1
        runs += 1
        outcome = _outcome_of(exc, policy)
        decision = decide(outcome, attempt=attempt, redelivered=redelivered_first, policy=policy)
        if decision.route is not Route.RETRY:
            break
        headers = failure_headers(
            headers,
            reason=decision.reason,
            error_type=outcome.error_type,
            attempts=attempt,
            retry_of=queue,
        )
        assert runs <= 100
    limit = 1 if policy is None else policy.max_attempts
    assert runs <= limit
    if exc is None or not _wants_retry(exc, policy):
        assert runs == 1
    else:
        assert policy is not None
        assert runs == policy.max_attempts
        assert decision.route is Route.DEAD_LETTER


@pytest.mark.parametrize("attempt", [1, 2, 5])
@pytest.mark.parametrize("redelivered", [False, True])
@pytest.mark.parametrize("max_attempts", [1, 3])
def test_a_crash(attempt: int, redelivered: bool, max_attempts: int) -> None:
    crash = Outcome(OutcomeKind.CRASH, "WorkerError", "worker process 7 was killed", retryable=True)
    policy = RetryPolicy(max_attempts=max_attempts)
    decision = decide(crash, attempt=attempt, redelivered=redelivered, policy=policy)
    if attempt == 1 and not redelivered:
        # the first crash on a fresh message: back to the broker, any worker may take it
        assert decision.route is Route.REQUEUE
    elif attempt < max_attempts:
        assert decision == Decision(Route.RETRY, crash.reason, policy.delay_for(attempt))
    else:
        assert decision.route is Route.DEAD_LETTER
        assert decision.reason.endswith(f"(gave up after {attempt} attempts)")
    # without a policy a crash after the first is dead-lettered at once
    no_policy = decide(crash, attempt=attempt, redelivered=redelivered, policy=None)
    expected = Route.REQUEUE if attempt == 1 and not redelivered else Route.DEAD_LETTER
    assert no_policy.route is expected


@pytest.mark.parametrize("kind", [OutcomeKind.INVALID, OutcomeKind.REJECT])
def test_no_attempt_can_fix_invalid_or_rejected(kind: OutcomeKind) -> None:
    outcome = Outcome(kind, "ValidationError", "bad body", retryable=True)
    assert not retryable(outcome)
    policy = RetryPolicy(max_attempts=10)
    assert decide(outcome, attempt=1, redelivered=False, policy=policy) == Decision(
        Route.DEAD_LETTER, "bad body"
    )


def test_attempt_numbers_start_at_1() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        decide(Outcome(OutcomeKind.OK), attempt=0, redelivered=False, policy=None)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(OutcomeKind),
    error_type=st.text(max_size=30),
    reason=st.text(max_size=3000),
    delay=st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False)),
    retryable_=st.booleans(),
)
def test_outcomes_cross_the_process_boundary_as_json(
    kind: OutcomeKind, error_type: str, reason: str, delay: float | None, retryable_: bool
) -> None:
    outcome = Outcome(kind, error_type, reason, delay, retryable_)
    data = outcome.to_json()
    assert json.loads(data)["kind"] == kind.value  # the wire keeps today's strings
    back = Outcome.from_json(data)
    assert back == Outcome(kind, error_type, reason[:2000], delay, retryable_)


def test_retry_and_dead_letter_headers_come_from_one_builder() -> None:
    original = {"x-death": [{"count": 1}], "x-first-death-queue": "q", "app": 1}
    retry = failure_headers(original, reason="r", error_type="E", attempts=2, retry_of="jobs")
    dead = failure_headers(
        original, reason="r", error_type="E", attempts=3, origin=("ex", "rk", "jobs")
    )
    assert "x-death" not in retry and "x-first-death-queue" not in retry
    assert retry["x-hutch-retry-of"] == "jobs" and retry["x-hutch-attempts"] == 2
    assert attempts_made(retry, "jobs") == 2
    assert "x-hutch-retry-of" not in dead and dead["x-death"] == [{"count": 1}]
    assert attempts_made(dead, "jobs") == 0  # replayed, a dead letter starts afresh
    assert dead["x-hutch-original-queue"] == "jobs" and retry["app"] == dead["app"] == 1
