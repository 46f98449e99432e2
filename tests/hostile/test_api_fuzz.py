"""API fuzz (issue 10): every public constructor and method, called with generated arguments.

Whatever a careless caller passes (ints and floats of any size, NaN, infinities, zero and
negative numbers, long and odd strings, None, bools, bytes, containers, plain objects),
only ``ValueError``, ``TypeError`` or a :class:`~hutch.HutchError` subclass escapes, each
call returns within a few seconds, and the shared connection (with the objects built on
it) still publishes and consumes afterwards.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hutch import (
    Binding,
    Connection,
    ConnectionSettings,
    Exchange,
    HutchError,
    NoServer,
    Publisher,
    Queue,
    RetryPolicy,
    RpcClient,
    RpcServer,
    Subscriber,
    TaskQueue,
    WorkerPool,
    connect,
)
from hutch._checks import MAX_TIMEOUT
from hutch._message import PROPERTY_NAMES

pytestmark = pytest.mark.timeout(240)

FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ALLOWED = (ValueError, TypeError, HutchError)
#: Longest any one call may take (valid timeouts generated here are 0.1 s at most).
BOUND = 10.0

junk = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 0.0, -0.0, math.nan, math.inf, -math.inf, 2**63, 2**64, 10**30]),
    st.text(max_size=20),
    st.text(min_size=250, max_size=300),
    st.none(),
    st.booleans(),
    st.binary(max_size=10),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(object()),
)
#: Timeouts: junk, plus valid ones short enough that a call returns quickly.
timeouts = st.one_of(junk, st.floats(0.01, 0.1))


def _waits_long(value: object) -> bool:
    """A timeout that is valid and long, or None (which may mean "wait for ever")."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return 0.1 < value <= MAX_TIMEOUT
    except OverflowError:
        return False


#: Anything a timeout parameter may get, except a long wait: bad values and short waits.
bounded_timeouts = timeouts.filter(lambda v: not _waits_long(v))


def attempt(fn: Callable[[], object]) -> object:
    """Call ``fn``: only the allowed errors escape, in bounded time; return its result."""
    start = time.monotonic()
    try:
        return fn()
    except ALLOWED:
        return None
    finally:
        assert time.monotonic() - start < BOUND, "a call with bad arguments took too long"


def close(obj: object) -> None:
    closer = getattr(obj, "close", None)
    if callable(closer):
        closer()


@pytest.fixture
def queue(conn: Connection, unique_name: str) -> Iterator[Queue]:
    q = Queue(unique_name, durable=False, expires=300)
    conn.channel().declare([q])
    yield q
    conn.channel().delete_queue(q.name)


def still_works(conn: Connection, q: Queue, *objects: Any) -> None:
    """The connection, and the objects under test, still publish and consume."""
    assert conn.is_open
    conn.channel().purge(q.name)
    with Publisher(conn, routing_key=q.name) as pub:
        pub.publish(b"canary")
    for obj in objects:
        obj.publish(b"canary too", routing_key=q.name)
    with Subscriber(conn, queue=q.name, model=bytes) as sub:
        got = [sub.get(timeout=5) for _ in range(1 + len(objects))]
    assert [m.body for m in got if m is not None] == [b"canary"] + [b"canary too"] * len(objects)


def kwargs_of(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Some of ``fields``, each with a generated value."""
    return st.fixed_dictionaries({}, optional=fields)


# ----------------------------------------------------------------------- constructors
# Each test fuzzes (an inner @given function), then checks once that the shared
# connection still works: one message published and consumed.


def test_publisher_constructor(conn: Connection, queue: Queue) -> None:
    @FUZZ
    @given(
        kwargs_of(
            exchange=st.one_of(junk, st.builds(Exchange, st.text(max_size=5))),
            routing_key=junk,
            model=st.one_of(junk, st.sampled_from([int, str, bytes, dict, list[int]])),
            confirm=junk,
            persistent=junk,
            mandatory=junk,
            declare=junk,
            timeout=timeouts,
            app_id=junk,
        )
    )
    def fuzz(kwargs: dict[str, Any]) -> None:
        close(attempt(lambda: Publisher(conn, **kwargs)))

    fuzz()
    still_works(conn, queue)


def test_subscriber_constructor(conn: Connection, queue: Queue) -> None:
    @FUZZ
    @given(
        kwargs_of(
            exchange=junk,
            routing_keys=junk,
            headers=junk,
            match=junk,
            queue=junk,
            bindings=junk,
            model=junk,
            prefetch=junk,
            dead_letter_queue=junk,
            timeout=timeouts,
            on_cancel=junk,
        )
    )
    def fuzz(kwargs: dict[str, Any]) -> None:
        close(attempt(lambda: Subscriber(conn, **kwargs)))

    fuzz()
    still_works(conn, queue)


def test_worker_pool_constructor(conn: Connection, queue: Queue) -> None:
    @FUZZ
    @given(
        kwargs_of(
            queue=junk,
            model=junk,
            concurrency=junk,
            prefetch=junk,
            channels=junk,
            processes=junk,
            retry=junk,
            dead_letter_queue=junk,
            timeout=timeouts,
            name=junk,
        )
    )
    def fuzz(kwargs: dict[str, Any]) -> None:
        kwargs.setdefault("queue", queue)
        close(attempt(lambda: WorkerPool(conn, handler=lambda body: None, **kwargs)))

    fuzz()
    still_works(conn, queue)


def test_rpc_and_task_queue_constructors(conn: Connection, queue: Queue) -> None:
    @FUZZ
    @given(
        kwargs_of(
            queue=junk,
            concurrency=junk,
            prefetch=junk,
            include_traceback=junk,
            timeout=timeouts,
            default=junk,
        ),
        kwargs_of(queue=junk, timeout=timeouts, reply_queue=junk),
        kwargs_of(queue=junk, model=junk, timeout=timeouts, app_id=junk),
    )
    def fuzz(server: dict[str, Any], client: dict[str, Any], tasks: dict[str, Any]) -> None:
        close(attempt(lambda: RpcServer(conn, **server)))
        close(attempt(lambda: RpcClient(conn, **client)))
        close(attempt(lambda: TaskQueue(conn, **tasks)))

    fuzz()
    still_works(conn, queue)


@FUZZ
@given(
    st.tuples(junk, junk, junk, junk, junk, junk),
    kwargs_of(
        name=junk,
        durable=junk,
        exclusive=junk,
        auto_delete=junk,
        dead_letter_exchange=junk,
        dead_letter_routing_key=junk,
        message_ttl=junk,
        expires=junk,
        max_length=junk,
        max_length_bytes=junk,
        overflow=junk,
        queue_type=junk,
        max_priority=junk,
        arguments=junk,
    ),
    kwargs_of(max_attempts=junk, backoff=junk, multiplier=junk, max_delay=junk, retry_on=junk),
)
def test_topology_and_retry_values(
    args: tuple[Any, ...], queue_kwargs: dict[str, Any], retry: dict[str, Any]
) -> None:
    attempt(lambda: Exchange(*args))
    attempt(lambda: Queue(**queue_kwargs))
    attempt(lambda: Binding(*args))
    attempt(lambda: RetryPolicy(**retry))


def test_connection_settings_and_connect(amqp_url: str, conn: Connection, queue: Queue) -> None:
    @settings(FUZZ, max_examples=30)
    @given(
        kwargs_of(
            heartbeat=junk,
            connection_name=junk,
            connect_timeout=junk,
            blocked_connection_timeout=junk,
            publish_blocked_timeout=junk,
            max_message_size=junk,
            username=junk,
            vhost=junk,
        ),
        timeouts,
    )
    def fuzz(options: dict[str, Any], open_timeout: Any) -> None:
        attempt(lambda: ConnectionSettings.from_url(amqp_url, **options))
        close(attempt(lambda: Connection(amqp_url, **options)))
        close(attempt(lambda: connect(amqp_url, open_timeout=open_timeout)))

    fuzz()
    still_works(conn, queue)


# ----------------------------------------------------------------------- methods
_properties = st.dictionaries(
    st.sampled_from(sorted(PROPERTY_NAMES - {"headers"})), junk, max_size=3
)


def test_publisher_methods(conn: Connection, queue: Queue) -> None:
    pub: Publisher[object] = Publisher(conn, routing_key=queue.name)
    typed = Publisher(conn, routing_key=queue.name, model=int)

    @FUZZ
    @given(
        body=junk,
        routing_key=st.one_of(junk, st.just(None)),
        headers=st.one_of(junk, st.dictionaries(st.text(max_size=5), junk, max_size=3)),
        mandatory=junk,
        timeout=bounded_timeouts,
        properties=_properties,
        max_in_flight=junk,
    )
    def fuzz(
        body: Any,
        routing_key: Any,
        headers: Any,
        mandatory: Any,
        timeout: Any,
        properties: dict[str, Any],
        max_in_flight: Any,
    ) -> None:
        def exercise(p: Publisher[Any]) -> None:
            attempt(
                lambda: p.publish(
                    body,
                    routing_key=routing_key,
                    headers=headers,
                    mandatory=mandatory,
                    timeout=timeout,
                    **properties,
                )
            )
            future = attempt(
                lambda: p.publish_async(body, routing_key=routing_key, headers=headers)
            )
            if isinstance(future, Future):
                attempt(lambda: future.result(5))
                assert future.done()  # every future settles
            attempt(lambda: p.publish_many([body, body], headers=headers, timeout=timeout))

            def stream() -> None:
                with p.batch(headers=headers, max_in_flight=max_in_flight) as batch:
                    batch.publish(body, routing_key=routing_key)

            attempt(stream)
            attempt(lambda: p.flush(timeout))

        exercise(pub)
        exercise(typed)

    with pub, typed:
        fuzz()
        still_works(conn, queue, pub)
        typed.publish(1, routing_key=queue.name)
        assert conn.channel().message_count(queue.name) == 1


def test_client_subscriber_and_task_methods(conn: Connection, queue: Queue) -> None:
    client = RpcClient(conn, queue=queue.name + ".nobody", timeout=1)
    sub = Subscriber(conn, queue=queue.name)
    tasks = TaskQueue(conn, queue=queue, model=int)

    @FUZZ
    @given(
        procedure=junk,
        args=st.lists(junk, max_size=3),
        timeout=bounded_timeouts,
        limit=junk,
        body=junk,
    )
    def fuzz(procedure: Any, args: list[Any], timeout: Any, limit: Any, body: Any) -> None:
        attempt(lambda: client.call(procedure, *args, timeout=timeout))
        future = attempt(lambda: client.call_async(procedure, *args, timeout=timeout))
        if isinstance(future, Future):
            attempt(lambda: future.result(5))
        attempt(lambda: client.call_raw(body, procedure=procedure, timeout=timeout))
        attempt(lambda: sub.get(timeout=timeout))
        attempt(lambda: list(sub.messages(timeout=timeout, limit=limit)))
        attempt(lambda: sub.run(lambda body: None, timeout=timeout, limit=limit))
        attempt(lambda: tasks.submit(body, timeout=timeout))
        attempt(lambda: tasks.submit_many([body], timeout=timeout))

    with client, tasks:
        with sub:
            fuzz()
        # (the subscriber is closed first: it would take the canary)
        still_works(conn, queue)
        tasks.submit(3)
        assert conn.channel().message_count(queue.name) == 1
        with pytest.raises(NoServer):  # the client is fine too: no server, said at once
            client.call("add", 1, 2)
