"""Broadcast and routing against a real broker: fanout, direct, topic, headers, n:m."""

from __future__ import annotations

from typing import Literal

import pytest

from hutch import Binding, Connection, Exchange, Publisher, Queue, Subscriber, bind
from tests.waits import drain


def test_fanout_reaches_every_subscriber(conn: Connection, unique_name: str) -> None:
    logs = Exchange(unique_name, "fanout", durable=False, auto_delete=True)
    subs = [Subscriber(conn, exchange=logs, model=str).open() for _ in range(3)]
    names = {s.queue_name for s in subs}
    assert len(names) == 3 and all(n.startswith("amq.gen-") for n in names)
    with Publisher(conn, exchange=logs, model=str) as pub:
        for i in range(10):
            pub.publish(f"v{i}")
    for s in subs:
        assert drain(conn, s) == [f"v{i}" for i in range(10)]
        s.close()


def test_direct_exact_key_and_several_keys_on_one_queue(conn: Connection, unique_name: str) -> None:
    ex = Exchange(unique_name, "direct", durable=False, auto_delete=True)
    errors = Subscriber(conn, exchange=ex, routing_keys="error", model=str).open()
    all_levels = Subscriber(
        conn, exchange=ex, routing_keys=["info", "warning", "error"], model=str
    ).open()
    with Publisher(conn, exchange=ex, model=str) as pub:
        for level in ("info", "warning", "error", "debug"):
            pub.publish(level, routing_key=level)
    assert drain(conn, errors) == ["error"]
    assert drain(conn, all_levels) == ["info", "warning", "error"]


TOPIC_CASES = [
    # (binding pattern, routing key, matches) -- exactly as RabbitMQ matches them
    ("*.orange.*", "quick.orange.rabbit", True),
    ("*.orange.*", "quick.orange.male.rabbit", False),
    ("*.orange.*", "orange", False),
    ("*.*.rabbit", "lazy.pink.rabbit", True),
    ("*.*.rabbit", "quick.brown.fox", False),
    ("lazy.#", "lazy", True),  # '#' matches zero words
    ("lazy.#", "lazy.orange.male.rabbit", True),
    ("lazy.#", "lazyx.orange", False),
    ("#", "anything.at.all", True),
    ("#", "", True),
    ("#.rabbit", "rabbit", True),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.*.b", "a.b", False),
    ("*", "", False),
    ("*", "one", True),
    ("*", "one.two", False),
]


def test_topic_patterns(conn: Connection, unique_name: str) -> None:
    ex = Exchange(unique_name, "topic", durable=False, auto_delete=True)
    patterns = sorted({p for p, _, _ in TOPIC_CASES})
    subs = {p: Subscriber(conn, exchange=ex, routing_keys=p, model=str).open() for p in patterns}
    keys = sorted({k for _, k, _ in TOPIC_CASES})
    with Publisher(conn, exchange=ex, model=str) as pub:
        for k in keys:
            pub.publish(k, routing_key=k)
    received = {p: set(drain(conn, s)) for p, s in subs.items()}
    for pattern, key, matches in TOPIC_CASES:
        assert (key in received[pattern]) is matches, (pattern, key)


@pytest.mark.parametrize(
    ("match", "expected"),
    [("all", {"pdf-report"}), ("any", {"pdf-report", "pdf-log", "csv-report"})],
)
def test_headers_exchange_all_and_any(
    conn: Connection, unique_name: str, match: Literal["all", "any"], expected: set[str]
) -> None:
    ex = Exchange(unique_name, "headers", durable=False, auto_delete=True)
    sub = Subscriber(
        conn,
        exchange=ex,
        headers={"format": "pdf", "type": "report"},
        match=match,
        model=str,
    ).open()
    with Publisher(conn, exchange=ex, model=str) as pub:
        pub.publish("pdf-report", headers={"format": "pdf", "type": "report"})
        pub.publish("pdf-log", headers={"format": "pdf", "type": "log"})
        pub.publish("csv-report", headers={"format": "csv", "type": "report"})
        pub.publish("zip-x", headers={"format": "zip"})
    assert set(drain(conn, sub)) == expected


def test_n_to_m_bindings(conn: Connection, unique_name: str) -> None:
    ex1 = Exchange(f"{unique_name}.1", "direct", durable=False, auto_delete=True)
    ex2 = Exchange(f"{unique_name}.2", "direct", durable=False, auto_delete=True)
    q1 = Queue(f"{unique_name}.q1", durable=False, auto_delete=True)
    q2 = Queue(f"{unique_name}.q2", durable=False, auto_delete=True)
    ch = conn.channel()
    ch.declare(bind([ex1, ex2], [q1, q2], keys=["k1", "k2"]))
    with (
        Publisher(conn, exchange=ex1, model=str) as p1,
        Publisher(conn, exchange=ex2, model=str) as p2,
    ):
        p1.publish("a", routing_key="k1")
        p2.publish("b", routing_key="k2")
        p2.publish("nobody", routing_key="k3")
    for q in (q1, q2):
        with Subscriber(conn, queue=q.name, model=str) as sub:
            assert sorted(drain(conn, sub)) == ["a", "b"]
    ch.close()


def test_one_subscriber_on_several_exchanges(conn: Connection, unique_name: str) -> None:
    a = Exchange(f"{unique_name}.a", "fanout", durable=False, auto_delete=True)
    b = Exchange(f"{unique_name}.b", "topic", durable=False, auto_delete=True)
    sub = Subscriber(conn, exchange=[a, b], routing_keys="#", model=str).open()
    with Publisher(conn, exchange=a, model=str) as pa, Publisher(conn, exchange=b, model=str) as pb:
        pa.publish("from-a")
        pb.publish("from-b", routing_key="x.y")
    assert sorted(drain(conn, sub)) == ["from-a", "from-b"]


def test_named_durable_subscription_keeps_messages_while_away(
    conn: Connection, unique_name: str
) -> None:
    ex = Exchange(unique_name, "fanout", durable=False, auto_delete=False)
    q = Queue(unique_name, durable=True)
    Subscriber(conn, exchange=ex, queue=q, model=str).open().close()
    with Publisher(conn, exchange=ex, model=str) as pub:
        pub.publish("while-away")
    with Subscriber(conn, exchange=ex, queue=q, model=str) as sub:
        assert drain(conn, sub) == ["while-away"]
    ch = conn.channel()
    ch.delete_queue(q.name)
    ch.delete_exchange(ex.name)


def test_extra_bindings_by_queue_name(conn: Connection, unique_name: str) -> None:
    ex = Exchange(unique_name, "direct", durable=False, auto_delete=True)
    q = Queue(unique_name, durable=False, auto_delete=True)
    sub = Subscriber(
        conn,
        exchange=ex,
        queue=q,
        routing_keys="one",
        bindings=[Binding(ex, q.name, "two")],
        model=str,
    ).open()
    with Publisher(conn, exchange=ex, model=str) as pub:
        pub.publish("1", routing_key="one")
        pub.publish("2", routing_key="two")
    assert drain(conn, sub) == ["1", "2"]
