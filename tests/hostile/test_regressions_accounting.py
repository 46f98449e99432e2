"""Issue 10, rows 4-6: every consumed or published message is accounted for.

* Row 4: the dead-letter queue deleted while messages fail. A dead letter is a mandatory,
  confirmed publish; a returned one makes hutch declare the queue again; if it still cannot
  be placed the original is requeued after a pause, never acked. Counters say which.
* Row 5: two mandatory publishes in flight with the same ``message_id``, one routable, one
  not: the outcome follows the publish sequence, never the message id.
* Row 6: foreign ``x-death`` (and ``x-hutch-*``) headers on a failing task: retries run
  exactly ``max_attempts`` times and end in the dead-letter queue; RabbitMQ's ``x-death``
  is never copied into a delay queue.

The foreign producer is raw pika; every message is counted (sent, handled, dead-lettered,
requeued, lost = 0).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hutch import (
    Connection,
    Message,
    Publisher,
    Queue,
    RetryPolicy,
    Subscriber,
    Unroutable,
    WorkerPool,
)
from tests.waits import wait_for

pytestmark = pytest.mark.timeout(240)


# --------------------------------------------------------------------------- helpers
class Raw:
    """A foreign producer and inspector: raw pika, no hutch."""

    def __init__(self, url: str) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()

    def publish(self, queue: str, body: bytes, headers: dict[str, Any] | None = None) -> None:
        self.ch.basic_publish(
            "",
            queue,
            body,
            pika.BasicProperties(headers=headers, delivery_mode=2, content_type="text/plain"),
            mandatory=True,
        )

    def count(self, queue: str) -> int:
        """Ready messages in ``queue``; -1 if it does not exist."""
        ch = self.conn.channel()
        try:
            ok = ch.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return -1
        ch.close()
        return int(ok.method.message_count)

    def exists(self, queue: str) -> bool:
        return self.count(queue) >= 0

    def drain(self, queue: str) -> list[tuple[bytes, dict[str, Any]]]:
        got: list[tuple[bytes, dict[str, Any]]] = []
        while True:
            method, props, body = self.ch.basic_get(queue, auto_ack=True)
            if method is None or props is None or body is None:
                return got
            got.append((body, dict(props.headers or {})))

    def delete(self, *queues: str) -> None:
        for q in queues:
            self.ch.queue_delete(q)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def raw(amqp_url: str) -> Iterator[Raw]:
    r = Raw(amqp_url)
    yield r
    r.close()


@pytest.fixture
def work(raw: Raw, unique_name: str) -> Iterator[str]:
    """A work queue name; it, its dead-letter queue and its delay queues are deleted after."""
    yield unique_name
    raw.delete(unique_name, f"{unique_name}.dead")
    for ms in (1, 10, 20, 50, 100):
        raw.delete(f"{unique_name}.retry.{ms}")


def failing(body: object) -> None:
    """A handler that always fails (module level: worker processes import it by name)."""
    raise ValueError(f"cannot handle {body!r}")


# ----------------------------------------------------------------------------- row 4
@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_row_deleted_dead_letter_queue_loses_nothing(
    conn: Connection, raw: Raw, work: str, processes: bool
) -> None:
    dead = f"{work}.dead"
    sent = 10
    pool = WorkerPool(
        conn,
        queue=Queue(work, expires=120),
        handler=failing,
        model=bytes,
        concurrency=2,
        retry=None,
        processes=processes,
    )
    with pool:
        wait_for(lambda: raw.exists(dead), 30, "the dead-letter queue")
        raw.delete(dead)  # deleted by an operator while the pool runs
        for i in range(sent):
            raw.publish(work, f"task {i}".encode())
        wait_for(lambda: pool.stats.failed == sent, 30, "every task to fail")
        wait_for(lambda: raw.count(dead) == sent, 30, "the dead letters")
    stats = pool.stats
    dead_letters = raw.drain(dead)
    left = raw.count(work)
    lost = sent - len(dead_letters) - left
    assert (len(dead_letters), left, lost) == (sent, 0, 0)
    assert sorted(b for b, _ in dead_letters) == sorted(f"task {i}".encode() for i in range(sent))
    assert all(h["x-hutch-error-type"] == "ValueError" for _, h in dead_letters)
    assert (stats.processed, stats.dead_lettered, stats.requeued) == (0, sent, 0)


def test_row_dead_letter_that_cannot_be_placed_is_requeued_and_counted(
    conn: Connection, raw: Raw, work: str
) -> None:
    # The dead-letter queue is replaced by one that refuses every message (max-length 0,
    # reject-publish): the broker nacks the copies. The originals must not be acked but
    # requeued after a pause and counted as requeued; once the queue is back to normal
    # they end there, each counted once as dead-lettered.
    dead = f"{work}.dead"
    sent = 4
    pool = WorkerPool(
        conn, queue=Queue(work, expires=120), handler=failing, model=bytes, retry=None
    )
    with pool:
        raw.delete(dead)
        raw.ch.queue_declare(
            dead, durable=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
        )
        for i in range(sent):
            raw.publish(work, f"task {i}".encode())
        wait_for(lambda: pool.stats.requeued >= sent, 30, "the refused dead letters")
        assert pool.stats.dead_lettered == 0
        assert raw.count(dead) == 0
        raw.delete(dead)  # hutch declares it again (as a normal queue) on the next failure
        wait_for(lambda: pool.stats.dead_lettered == sent, 60, "the dead letters")
    stats = pool.stats
    dead_letters = raw.drain(dead)
    assert sorted(b for b, _ in dead_letters) == sorted(f"task {i}".encode() for i in range(sent))
    assert raw.count(work) == 0
    assert stats.dead_lettered == sent and stats.requeued >= sent
    assert stats.failed == stats.dead_lettered + stats.requeued


def test_row_deleted_dead_letter_queue_loses_nothing_subscriber(
    conn: Connection, raw: Raw, work: str
) -> None:
    dead = f"{work}.dead"
    sent = 10
    sub = Subscriber(conn, queue=Queue(work, expires=120), dead_letter_queue=dead)
    with sub:
        raw.publish(work, b"first")
        sub.run(failing, timeout=1.0)  # the first dead letter declares the queue
        assert raw.count(dead) == 1
        raw.delete(dead)
        for i in range(sent):
            raw.publish(work, f"task {i}".encode())
        sub.run(failing, timeout=1.0)
    dead_letters = raw.drain(dead)
    left = raw.count(work)
    assert (len(dead_letters), left) == (sent, 0)
    assert (sub.handled, sub.dead_lettered, sub.requeued) == (0, sent + 1, 0)


# ----------------------------------------------------------------------------- row 5
def test_row_returns_matched_by_sequence_not_message_id(
    conn: Connection, raw: Raw, unique_name: str
) -> None:
    # Pairs of in-flight mandatory publishes with the same message id, one routable and
    # one not, in both orders: the unroutable one fails with Unroutable, the routable one
    # is confirmed and really arrives.
    raw.ch.queue_declare(unique_name, arguments={"x-expires": 60_000})
    nowhere = f"{unique_name}-nowhere"
    pairs = 100
    mismatches = 0
    with Publisher(conn, mandatory=True) as pub:
        for i in range(pairs):
            mid = f"same-{i}"
            keys = [unique_name, nowhere] if i % 2 == 0 else [nowhere, unique_name]
            futures = [
                pub.publish_async(f"{i} {k == unique_name}", routing_key=k, message_id=mid)
                for k in keys
            ]
            for key, fut in zip(keys, futures, strict=True):
                error = fut.exception(10)
                if key == unique_name and error is not None:
                    mismatches += 1
                if key == nowhere and not isinstance(error, Unroutable):
                    mismatches += 1
    arrived = raw.drain(unique_name)
    raw.delete(unique_name)
    assert mismatches == 0
    assert sorted(b for b, _ in arrived) == sorted(f"{i} True".encode() for i in range(pairs))


def test_row_returns_matched_by_sequence_on_every_path(
    conn: Connection, raw: Raw, unique_name: str
) -> None:
    # direct publish() from two threads sharing one channel, same message id on both;
    # publish_many and batch() mixing routable and unroutable messages
    raw.ch.queue_declare(unique_name, arguments={"x-expires": 60_000})
    nowhere = f"{unique_name}-nowhere"
    rounds = 50
    outcomes: dict[str, Counter[str]] = {unique_name: Counter(), nowhere: Counter()}
    lock = threading.Lock()
    with Publisher(conn, mandatory=True) as pub:
        start = threading.Barrier(2)

        def direct(key: str) -> None:
            start.wait()
            for i in range(rounds):
                try:
                    pub.publish(f"direct {i} {key == unique_name}", routing_key=key, message_id="x")
                    result = "confirmed"
                except Unroutable:
                    result = "unroutable"
                with lock:
                    outcomes[key][result] += 1

        threads = [threading.Thread(target=direct, args=(k,)) for k in (unique_name, nowhere)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert outcomes[unique_name] == Counter(confirmed=rounds)
        assert outcomes[nowhere] == Counter(unroutable=rounds)

        with pub.batch() as batch:
            keys = [unique_name if i % 3 else nowhere for i in range(60)]
            for i, k in enumerate(keys):
                batch.publish(f"batch {i} {k == unique_name}", routing_key=k)
        assert batch.result is not None
        assert {i for i, _ in batch.result.failed} == {
            i for i, k in enumerate(keys) if k == nowhere
        }
        assert all(isinstance(e, Unroutable) for _, e in batch.result.failed)

        many_ok = pub.publish_many([f"many {i} True" for i in range(20)], routing_key=unique_name)
        many_bad = pub.publish_many([f"many {i}" for i in range(20)], routing_key=nowhere)
        assert many_ok.ok and len(many_bad.failed) == 20
    arrived = sorted(b for b, _ in raw.drain(unique_name))
    raw.delete(unique_name)
    expected = [f"direct {i} True" for i in range(rounds)]
    expected += [f"batch {i} True" for i, k in enumerate(keys) if k == unique_name]
    expected += [f"many {i} True" for i in range(20)]
    assert arrived == sorted(e.encode() for e in expected)


# ----------------------------------------------------------------------------- row 6
def foreign_x_death(count: object, queue: str) -> list[dict[str, Any]]:
    """An ``x-death`` as a foreign tool might rewrite it: counts that are no integer.

    One entry names ``queue`` with reason ``expired``: when RabbitMQ dead-letters a copy
    carrying it from that queue, it updates that entry's count.
    """
    return [
        {
            "count": count,
            "reason": "expired",
            "queue": queue,
            "exchange": "",
            "routing-keys": [queue],
            "time": _dt.datetime(2024, 5, 1, tzinfo=_dt.timezone.utc),
        },
        {
            "count": count,
            "reason": "rejected",
            "queue": "somebody-elses-queue",
            "exchange": "",
            "routing-keys": ["somebody-elses-queue"],
            "time": _dt.datetime(2024, 5, 1, tzinfo=_dt.timezone.utc),
        },
    ]


class RunCounter:
    def __init__(self) -> None:
        self.runs: Counter[bytes] = Counter()
        self.lock = threading.Lock()

    def __call__(self, body: bytes, message: Message[bytes]) -> None:
        with self.lock:
            self.runs[body] += 1
        raise ValueError("fails every time")


def test_row_foreign_x_death_does_not_break_retries(conn: Connection, raw: Raw, work: str) -> None:
    sent = 20
    max_attempts = 3
    dead = f"{work}.dead"
    counter = RunCounter()
    pool = WorkerPool(
        conn,
        queue=Queue(work, expires=120),
        handler=counter,
        model=bytes,
        concurrency=2,
        retry=RetryPolicy(max_attempts=max_attempts, backoff=0.02, multiplier=1.0),
    )
    with pool:
        for i in range(sent):
            count: object = ["three", decimal.Decimal("2.5"), -1, {"n": 1}, b"x"][i % 5]
            x_death = foreign_x_death(count, f"{work}.retry.20")  # hutch's delay queue
            raw.publish(work, f"task {i}".encode(), {"x-death": x_death})
        wait_for(lambda: raw.count(dead) == sent, 60, "every task in the dead-letter queue")
        time.sleep(0.3)  # a task that would run once more too often has had time to
    stats = pool.stats
    dead_letters = raw.drain(dead)
    assert sorted(b for b, _ in dead_letters) == sorted(f"task {i}".encode() for i in range(sent))
    assert all(h["x-hutch-attempts"] == max_attempts for _, h in dead_letters)
    assert dict(counter.runs) == {f"task {i}".encode(): max_attempts for i in range(sent)}
    assert raw.count(work) == 0
    assert (stats.failed, stats.retried, stats.dead_lettered, stats.requeued) == (
        sent * max_attempts,
        sent * (max_attempts - 1),
        sent,
        0,
    )


# hypothesis: any foreign x-death / x-first-death-* / x-last-death-* / x-hutch-* values
# that a producer can send (pika encodes no floats; decimals and timestamps within AMQP's)
_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    _ints,
    st.text(max_size=20),
    st.binary(max_size=20),
    st.decimals(min_value=-1000, max_value=1000, places=2, allow_nan=False),
    st.datetimes(min_value=_dt.datetime(1970, 1, 2), max_value=_dt.datetime(2100, 1, 1)).map(
        lambda d: d.replace(microsecond=0, tzinfo=_dt.timezone.utc)
    ),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
#: stands for the pool's delay queue in generated x-death entries (RabbitMQ updates the
#: entry naming the queue a message is dead-lettered from)
DELAY = "@delay-queue"
_death_entry = st.fixed_dictionaries(
    {},
    optional={
        "count": _values,
        "reason": st.one_of(st.just("expired"), _values),
        "queue": st.one_of(st.just(DELAY), _values),
        "exchange": _values,
        "routing-keys": _values,
        "time": _values,
    },
)


def _placed(value: Any, queue: str) -> Any:
    """``value`` with :data:`DELAY` replaced by ``queue``, at any depth."""
    if value == DELAY:
        return queue
    if isinstance(value, list):
        return [_placed(v, queue) for v in value]
    if isinstance(value, dict):
        return {k: _placed(v, queue) for k, v in value.items()}
    return value


_hutch_keys = st.sampled_from(
    [
        "x-hutch-attempts",
        "x-hutch-retry-of",
        "x-hutch-error",
        "x-hutch-error-type",
        "x-hutch-original-queue",
        "x-hutch-failed-at",
    ]
)
_foreign_headers = st.fixed_dictionaries(
    {},
    optional={
        "x-death": st.one_of(st.lists(_death_entry, max_size=3), _values),
        "x-first-death-reason": _values,
        "x-first-death-queue": _values,
        "x-last-death-reason": _values,
        "x-last-death-exchange": _values,
    },
).flatmap(lambda d: st.dictionaries(_hutch_keys, _values, max_size=4).map(lambda h: {**d, **h}))


def test_foreign_retry_headers_never_break_retries(conn: Connection, raw: Raw, work: str) -> None:
    max_attempts = 2
    dead = f"{work}.dead"
    counter = RunCounter()
    pool = WorkerPool(
        conn,
        queue=Queue(work, expires=120),
        handler=counter,
        model=bytes,
        concurrency=2,
        retry=RetryPolicy(max_attempts=max_attempts, backoff=0.01, multiplier=1.0),
    )
    sent: list[bytes] = []

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(headers=_foreign_headers)
    def one(headers: dict[str, Any]) -> None:
        body = f"task {uuid.uuid4().hex}".encode()
        raw.publish(work, body, _placed(headers, f"{work}.retry.10"))
        sent.append(body)
        wait_for(lambda: raw.count(dead) == 1, 15, f"the dead letter of {headers!r}")
        ((got, got_headers),) = raw.drain(dead)
        assert got == body
        assert counter.runs[body] == max_attempts, headers
        assert got_headers["x-hutch-attempts"] == max_attempts
        assert "x-hutch-retry-of" not in got_headers

    with pool:
        one()
        time.sleep(0.2)
    stats = pool.stats
    assert raw.count(work) == 0
    assert dict(counter.runs) == dict.fromkeys(sent, max_attempts)
    assert (stats.dead_lettered, stats.requeued, stats.processed) == (len(sent), 0, 0)
