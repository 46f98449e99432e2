from __future__ import annotations

import pytest

from hutch import Binding, Exchange, ExchangeType, Overflow, Queue, QueueType, bind
from hutch._topology import ordered


def test_exchange_type_accepts_strings_and_enum() -> None:
    assert Exchange("x", "topic").type is ExchangeType.TOPIC
    assert Exchange("x", ExchangeType.HEADERS).type is ExchangeType.HEADERS
    assert Exchange("x").durable


def test_bad_exchange_arguments() -> None:
    with pytest.raises(ValueError, match="unknown exchange type"):
        Exchange("x", "fan")
    with pytest.raises(ValueError, match="reserved"):
        Exchange("amq.mine")
    with pytest.raises(TypeError):
        Exchange(3)  # type: ignore[arg-type]


def test_named_queue_defaults_durable() -> None:
    q = Queue("tasks")
    assert (q.durable, q.exclusive, q.auto_delete) == (True, False, False)


def test_server_named_queue_defaults_exclusive() -> None:
    q = Queue()
    assert q.server_named
    assert (q.durable, q.exclusive, q.auto_delete) == (False, True, True)


def test_queue_arguments_are_typed() -> None:
    q = Queue(
        "q",
        dead_letter_exchange="dlx",
        dead_letter_routing_key="dead",
        message_ttl=1.5,
        expires=60,
        max_length=10,
        max_length_bytes=1000,
        overflow="reject-publish",
        queue_type="quorum",
        arguments={"x-custom": 1},
    )
    assert q.arguments == {
        "x-dead-letter-exchange": "dlx",
        "x-dead-letter-routing-key": "dead",
        "x-message-ttl": 1500,
        "x-expires": 60000,
        "x-max-length": 10,
        "x-max-length-bytes": 1000,
        "x-overflow": "reject-publish",
        "x-queue-type": "quorum",
        "x-custom": 1,
    }
    assert q.overflow is Overflow.REJECT_PUBLISH
    assert q.queue_type is QueueType.QUORUM


def test_invalid_queue_arguments() -> None:
    with pytest.raises(ValueError, match="quorum"):
        Queue("q", queue_type="quorum", durable=False)
    with pytest.raises(ValueError, match="queue_type"):
        Queue("q", queue_type="stream-ish")
    with pytest.raises(ValueError, match="max_length"):
        Queue("q", max_length=-1)
    with pytest.raises(ValueError, match="overflow"):
        Queue("q", overflow="explode")


def test_server_named_queues_are_distinct() -> None:
    a, b = Queue(), Queue()
    assert a != b
    assert ordered([a, b, a]) == [a, b]


def test_headers_binding_arguments() -> None:
    b = Binding("h", "q", headers={"format": "pdf", "type": "report"}, match="any")
    assert b.binding_arguments == {"x-match": "any", "format": "pdf", "type": "report"}
    with pytest.raises(ValueError, match="match"):
        Binding("h", "q", headers={}, match="some")  # type: ignore[arg-type]


def test_default_exchange_cannot_be_bound() -> None:
    with pytest.raises(ValueError, match="default exchange"):
        Binding("", "q")


def test_bind_n_to_m_with_several_keys() -> None:
    e1, e2 = Exchange("e1"), Exchange("e2")
    q1, q2 = Queue("q1"), Queue("q2")
    bindings = bind([e1, e2], [q1, q2], keys=["a", "b"])
    assert len(bindings) == 8
    assert {
        (b.exchange_name, b.queue.name, b.routing_key)
        for b in bindings
        if isinstance(b.queue, Queue)
    } == {(e, q, k) for e in ("e1", "e2") for q in ("q1", "q2") for k in ("a", "b")}
    with pytest.raises(ValueError):
        bind([], "q")


def test_ordered_puts_exchanges_then_queues_then_bindings() -> None:
    e = Exchange("e")
    q = Queue("q")
    b = Binding(e, q, "k")
    assert ordered([b]) == [e, q, b]
    assert ordered([b, q, e]) == [e, q, b]
    with pytest.raises(TypeError):
        ordered(["nope"])  # type: ignore[list-item]
