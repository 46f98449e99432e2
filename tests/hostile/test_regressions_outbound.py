"""Issue 10, rows 7-9: what a careless caller hands hutch on the way out.

* Row 7 (invariant 3, typed means typed): a body that is not a ``T`` and does not validate
  as one raises :class:`hutch.ValidationError` at once, on every publishing path, and
  nothing is sent; a stub's arguments are validated before the request goes out.
* Row 8 (invariant 5): header and property values pika cannot encode raise ``TypeError`` /
  ``ValueError`` naming the field before anything is sent, on the direct, async and batch
  paths alike; ``publish_async`` raises at once (it never hands back a future that cannot
  settle); a batch is checked whole before its first message goes out.
* Row 9 (invariant 5): NaN, infinite, zero and negative timeouts are refused at once,
  everywhere, by the same helper.

Each example counts the queue: a refused message is never on it; the shared connection
still publishes and consumes afterwards.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Iterator
from typing import Any, Protocol

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from hutch import (
    Connection,
    Publisher,
    Queue,
    RpcClient,
    RpcServer,
    Subscriber,
    TaskQueue,
    ValidationError,
    WorkerPool,
)

pytestmark = pytest.mark.timeout(180)

EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Order(BaseModel):
    id: int
    item: str = "book"


class Orders(Protocol):
    def place(self, order: Order, count: int) -> Order: ...


@pytest.fixture
def queue(conn: Connection, unique_name: str) -> Iterator[Queue]:
    q = Queue(unique_name, durable=False, expires=120)
    conn.channel().declare([q])
    yield q
    conn.channel().delete_queue(q.name)


def count(conn: Connection, q: Queue) -> int:
    return conn.channel().message_count(q.name)


def still_works(conn: Connection, q: Queue) -> None:
    """The shared connection publishes and consumes: one message there and back."""
    before = count(conn, q)
    with Publisher(conn, routing_key=q.name) as pub:
        pub.publish(b"canary")
    with Subscriber(conn, queue=q.name, model=bytes) as sub:
        bodies = [sub.get(timeout=5) for _ in range(before + 1)]
    assert [m.body for m in bodies if m is not None][-1] == b"canary"


# ----------------------------------------------------------------------- row 7
_not_orders = st.one_of(
    st.text(max_size=10),
    st.integers(),
    st.floats(allow_nan=True),
    st.none(),
    st.booleans(),
    st.binary(max_size=5),
    st.lists(st.integers(), max_size=3),
    st.fixed_dictionaries({"id": st.one_of(st.text(max_size=5), st.floats(), st.none())}),
    st.dictionaries(st.sampled_from(["item", "other"]), st.text(max_size=3), max_size=2),
)


def test_row_typed_publisher_rejects_wrong_type(conn: Connection, queue: Queue) -> None:
    with Publisher(conn, routing_key=queue.name, model=Order) as pub:
        for bad in ({"id": "x"}, "hello"):
            with pytest.raises(ValidationError):
                pub.publish(bad)  # type: ignore[arg-type]
            with pytest.raises(ValidationError):
                pub.publish_async(bad)  # type: ignore[arg-type]
        # a dict that validates is sent as the model's JSON (defaults filled in)
        pub.publish({"id": 7})  # type: ignore[arg-type]
    with Publisher(conn, routing_key=queue.name, model=int) as ints:
        with pytest.raises(ValidationError, match="valid integer"):
            ints.publish("12abc")  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            ints.publish(True)
    assert count(conn, queue) == 1
    with Subscriber(conn, queue=queue.name, model=Order) as sub:
        msg = sub.get(timeout=5)
    assert msg is not None and msg.body == Order(id=7) and msg.raw_body == b'{"id":7,"item":"book"}'


@EXAMPLES
@given(bad=_not_orders, position=st.integers(0, 3))
def test_row_typed_batches_check_every_body_first(
    conn: Connection, queue: Queue, bad: Any, position: int
) -> None:
    bodies: list[Any] = [Order(id=i) for i in range(3)]
    bodies.insert(position, bad)
    with Publisher(conn, routing_key=queue.name, model=Order) as pub:
        with pytest.raises(ValidationError):
            pub.publish_many(bodies)
        with pytest.raises(ValidationError):
            pub.publish(bad)
    with TaskQueue(conn, queue=queue, model=Order) as tasks:
        with pytest.raises(ValidationError):
            tasks.submit(bad)
        with pytest.raises(ValidationError):
            tasks.submit_many(bodies)
    assert count(conn, queue) == 0


def test_row_typed_stub_arguments_and_results(conn: Connection, unique_name: str) -> None:
    server = RpcServer(conn, queue=unique_name, concurrency=1)
    calls: list[int] = []

    @server.procedure(name="place")
    def place(order: Order, count: int) -> Order:
        calls.append(count)
        return {"id": "not a number"}  # type: ignore[return-value]

    with server, RpcClient(conn, queue=unique_name, timeout=10) as client:
        stub = client.stub(Orders)
        with pytest.raises(ValidationError, match="count"):
            stub.place(Order(id=1), "12abc")  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="order"):
            stub.place("hello", 1)  # type: ignore[arg-type]
        assert calls == []  # nothing was sent
        # the server refuses to send a result that is not what it declared
        from hutch import RemoteError

        with pytest.raises(RemoteError) as info:
            stub.place(Order(id=1), 2)
        assert info.value.type_name == "ValidationError"
        assert "result" in info.value.remote_message
        assert calls == [2]


# ----------------------------------------------------------------------- row 8
_bad_tables = st.one_of(
    st.integers(2**63, 2**80).map(lambda n: {"n": n}),
    st.integers(-(2**80), -(2**63) - 1).map(lambda n: {"n": n}),
    st.sampled_from(
        [
            {"d": decimal.Decimal("1.23456789012")},
            {"d": decimal.Decimal("1E-300")},
            {"d": decimal.Decimal("Infinity")},
            {"t": dt.datetime(1969, 7, 20, 20, 17)},
            {1: "int key"},
            {"nested": {"deeper": [1, {"n": 2**64}]}},
            {"nested": {2: "x"}},
            {"f": 1.5},
            {"s": {"a", "b"}},
            {"tuple": (1, 2)},
            {"k" * 300: 1},
            {"date": dt.date(2020, 1, 1)},
        ]
    ),
)
_bad_properties = st.sampled_from(
    [
        {"correlation_id": 123},
        {"message_id": b"bytes"},
        {"reply_to": "q" * 256},
        {"app_id": "é" * 200},
        {"type": ["list"]},
        {"priority": 256},
        {"priority": "1"},
        {"priority": True},
        {"delivery_mode": 3},
        {"expiration": "soon"},
        {"expiration": dt.timedelta(days=10**8)},
        {"timestamp": dt.datetime(1960, 1, 1, tzinfo=dt.timezone.utc)},
        {"timestamp": 1_700_000_000},
        {"content_encoding": "x" * 300},
    ]
)


@EXAMPLES
@given(headers=_bad_tables, properties=_bad_properties)
def test_row_unencodable_header_raises_before_send(
    conn: Connection, queue: Queue, headers: dict[Any, Any], properties: dict[str, Any]
) -> None:
    with Publisher(conn, routing_key=queue.name) as pub:
        for kwargs in ({"headers": headers}, properties):
            with pytest.raises((TypeError, ValueError)) as direct:
                pub.publish(b"x", **kwargs)
            field = next(iter(kwargs))
            assert field in str(direct.value)
            # async: refused at once, so there is no future that could never settle
            with pytest.raises((TypeError, ValueError)):
                pub.publish_async(b"x", **kwargs)
            # a batch is checked whole before the first message goes out
            with pytest.raises((TypeError, ValueError)):
                pub.publish_many([b"a", b"b", b"c"], **kwargs)
            with pytest.raises((TypeError, ValueError)):
                pub.batch(**kwargs)
        with pub.batch() as batch:
            batch.publish(b"ok")
            with pytest.raises((TypeError, ValueError)):
                batch.publish(b"x", headers=headers)
        # the streaming batch says exactly what went out: the one good message
        assert batch.result is not None and batch.result.ok
        assert len(batch.result.message_ids) == 1
    assert count(conn, queue) == 1
    conn.channel().purge(queue.name)
    still_works(conn, queue)


_not_procedure_names = st.one_of(
    st.integers(),
    st.sampled_from([2**63, -(2**63) - 1, 2**64]),  # past every AMQP integer
    st.floats(allow_nan=True),
    st.binary(max_size=5),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@EXAMPLES
@given(procedure=_not_procedure_names)
def test_row_raw_call_procedure_is_a_name_or_none(
    conn: Connection, queue: Queue, procedure: Any
) -> None:
    # call_raw puts the procedure in a header, past the publisher's header checks: an int
    # was sent (and waited for), one past 64 bits escaped as pika's struct.error
    with RpcClient(conn, queue=queue.name, timeout=1) as client:
        with pytest.raises(TypeError, match="procedure must be a str"):
            client.call_raw(b"x", procedure=procedure)
    assert count(conn, queue) == 0


# ----------------------------------------------------------------------- row 9
_bad_timeouts = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0, 0.0, -1, 1e300, True, "1", b"1"]),
    st.floats(max_value=0),
    st.integers(max_value=0),
)


@EXAMPLES
@given(bad=_bad_timeouts)
def test_row_nan_timeout_rejected(conn: Connection, queue: Queue, bad: Any) -> None:
    refused = (TypeError, ValueError)
    with pytest.raises(refused):
        Publisher(conn, routing_key=queue.name, timeout=bad)
    with Publisher(conn, routing_key=queue.name) as pub:
        with pytest.raises(refused):
            pub.publish(b"x", timeout=bad)
        with pytest.raises(refused):
            pub.publish_many([b"x"], timeout=bad)
        with pytest.raises(refused):
            pub.batch(timeout=bad)
        with pytest.raises(refused):
            pub.flush(timeout=bad)
    with pytest.raises(refused):
        RpcClient(conn, queue=queue.name, timeout=bad)
    with RpcClient(conn, queue=queue.name) as client:
        with pytest.raises(refused):
            client.call("x", timeout=bad)
        with pytest.raises(refused):
            client.call_async("x", timeout=bad)
        with pytest.raises(refused):
            client.call_raw(b"x", timeout=bad)
    with pytest.raises(refused):
        RpcServer(conn, queue=queue.name, timeout=bad)
    with pytest.raises(refused):
        Subscriber(conn, queue=queue.name, timeout=bad)
    with Subscriber(conn, queue=queue.name) as sub:
        with pytest.raises(refused):
            sub.get(timeout=bad)
        with pytest.raises(refused):
            sub.run(lambda body: None, timeout=bad)
        with pytest.raises(refused):
            next(iter(sub.messages(timeout=bad)))
    with pytest.raises(refused):
        WorkerPool(conn, queue=queue.name, handler=lambda body: None, timeout=bad)
    with pytest.raises(refused):
        TaskQueue(conn, queue=queue, timeout=bad)
    with TaskQueue(conn, queue=queue) as tasks:
        with pytest.raises(refused):
            tasks.submit(b"x", timeout=bad)
    assert count(conn, queue) == 0
    still_works(conn, queue)
