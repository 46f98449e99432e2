"""RabbitMQ 3.10 rules the generated comparisons found the memory broker missing.

Each was found by one of ``tests/integration/test_memory_vs_rabbitmq_*.py`` (which compare
both brokers on generated method sequences); the texts here are RabbitMQ's own, as those
tests received them. These run without a broker, so a regression shows in the unit tests too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hutch import ChannelClosed, PreconditionFailed
from hutch._memory import Broker, MemoryChannel, Properties

pytestmark = pytest.mark.timeout(30)

Q = "queue 'q' in vhost '/'"


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = Broker()
    yield b
    b.close()


@pytest.fixture
def ch(broker: Broker) -> MemoryChannel:
    return broker.connect(threaded=False).channel()


def refused(ch: MemoryChannel, arguments: dict[str, Any]) -> str:
    with pytest.raises(ChannelClosed) as exc:
        ch.queue_declare("q", arguments=arguments)
    return exc.value.reply_text


@pytest.mark.parametrize(
    ("arguments", "text"),
    [
        (
            {"x-dead-letter-exchange": 1},
            f"invalid type 'signedint' for arg 'x-dead-letter-exchange' in {Q}",
        ),
        (
            {"x-dead-letter-exchange": ""},  # fine: the default exchange
            None,
        ),
        ({"x-dead-letter-routing-key": 1}, "{unacceptable_type,signedint}"),
        ({"x-message-ttl": 315_360_000_001}, "{value_too_large,315360000001}"),
        ({"x-message-ttl": 2**32}, None),  # more than 32 bits is fine, up to ten years
        ({"x-expires": "1"}, '"expected integer, got longstr"'),
        ({"x-queue-mode": "x"}, "\"unsupported queue mode 'x'\""),
        ({"x-queue-mode": 1}, "{unacceptable_type,signedint}"),
        ({"x-queue-version": 3}, "\"unsupported queue version '3'\""),
        ({"x-queue-version": 2}, None),
        ({"x-queue-type": "x"}, "\"unsupported queue type 'x'\""),
        ({"x-overflow": True}, "{unacceptable_type,bool}"),
        ({"x-single-active-consumer": 1}, "{unacceptable_type,signedint}"),
        ({"x-max-priority": 256}, "{max_value_exceeded,256}"),
        (
            {"x-delivery-limit": 3},
            f"invalid arg 'x-delivery-limit' for {Q} of queue type rabbit_classic_queue",
        ),
        (  # each argument's own check comes first, then the arguments of other types
            {"x-max-in-memory-length": 1, "x-max-length": -1},
            "{value_negative,-1}",
        ),
        ({"x-custom": [1]}, None),  # unknown arguments are kept and ignored
    ],
)
def test_queue_arguments_are_checked_as_rabbitmq_does(
    ch: MemoryChannel, arguments: dict[str, Any], text: str | None
) -> None:
    if text is None:
        ch.queue_declare("q", arguments=arguments)
        return
    got = refused(ch, arguments)
    assert got.startswith("PRECONDITION_FAILED - ")
    assert got.endswith(text)


def test_an_alternate_exchange_must_be_a_string(ch: MemoryChannel) -> None:
    with pytest.raises(PreconditionFailed) as exc:
        ch.exchange_declare("x", "direct", arguments={"alternate-exchange": 1})
    assert exc.value.reply_text == (
        "PRECONDITION_FAILED - invalid type 'signedint' for arg 'alternate-exchange' in "
        "exchange 'x' in vhost '/'"
    )


@pytest.mark.parametrize("kind", ["quorum", "stream"])
def test_quorum_queues_and_streams_are_refused_not_imitated(ch: MemoryChannel, kind: str) -> None:
    with pytest.raises(ChannelClosed) as exc:
        ch.queue_declare("q", durable=True, arguments={"x-queue-type": kind})
    assert exc.value.reply_code == 540
    assert f"the memory broker has no {kind} queues" in exc.value.reply_text


def test_an_exclusive_queue_is_never_durable(ch: MemoryChannel) -> None:
    ch.queue_declare("q", exclusive=True)
    ch.queue_declare("q", exclusive=True, durable=True)  # RabbitMQ: the same queue


def test_a_requeue_past_the_length_limit_drops_the_head(ch: MemoryChannel) -> None:
    ch.queue_declare("dead")
    args = {"x-max-length": 1, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}
    ch.queue_declare("q", arguments=args)
    ch.basic_publish("", "q", b"0")
    taken = ch.basic_get("q")
    assert taken is not None
    ch.basic_publish("", "q", b"1")  # one ready: within the limit
    ch.basic_nack(taken.delivery_tag, requeue=True)  # "0" back at the head: two ready
    dead = ch.basic_get("dead", no_ack=True)
    assert dead is not None and dead.body == b"0"
    assert dead.properties.headers is not None
    assert dead.properties.headers["x-first-death-reason"] == "maxlen"
    left = ch.basic_get("q", no_ack=True)
    assert left is not None and (left.body, left.message_count) == (b"1", 0)


def test_ack_multiple_needs_the_tag_itself_unacked(ch: MemoryChannel) -> None:
    ch.queue_declare("q")
    for body in (b"0", b"1"):
        ch.basic_publish("", "q", body)
    first, second = ch.basic_get("q"), ch.basic_get("q")
    assert first is not None and second is not None
    ch.basic_ack(second.delivery_tag)
    with pytest.raises(PreconditionFailed) as exc:  # "1" is unacked, but tag 2 is not
        ch.basic_ack(second.delivery_tag, multiple=True)
    assert (
        exc.value.reply_text == f"PRECONDITION_FAILED - unknown delivery tag {second.delivery_tag}"
    )


def test_ack_multiple_of_tag_zero_acks_everything_even_nothing(ch: MemoryChannel) -> None:
    ch.basic_ack(0, multiple=True)
    ch.queue_declare("q")
    ch.basic_publish("", "q", b"0")
    assert ch.basic_get("q") is not None
    ch.basic_ack(0, multiple=True)
    ch.basic_recover()
    assert ch.basic_get("q") is None


def test_a_deleted_queue_cancels_each_channels_consumers_in_tag_order(
    broker: Broker,
) -> None:
    conn = broker.connect(threaded=False)
    ch = conn.channel()
    ch.queue_declare("q")
    cancelled: list[str] = []
    for tag in ("b", "a", "c10", "c8"):
        ch.basic_consume("q", lambda _d: None, consumer_tag=tag, on_cancel=cancelled.append)
    conn.channel().queue_delete("q")
    conn.run_pending()
    assert cancelled == ["a", "b", "c10", "c8"]  # RabbitMQ's channel keeps them sorted


def test_a_full_consumer_given_room_rejoins_behind_the_others(broker: Broker) -> None:
    # B fills up and is passed over (blocked); A arrives and takes the rest; B's recover
    # gives it room: it rejoins at the back, so the requeued message goes to A
    conn = broker.connect(threaded=False)
    a, b = conn.channel(), conn.channel()
    a.queue_declare("q")
    got: list[tuple[str, bytes, bool]] = []
    b.basic_qos(1)
    b.basic_consume("q", lambda d: got.append(("B", d.body, d.redelivered)))
    for n in range(3):
        a.basic_publish("", "q", str(n).encode())
    conn.run_pending()
    a.basic_consume("q", lambda d: got.append(("A", d.body, d.redelivered)))
    conn.run_pending()
    b.basic_recover()
    conn.run_pending()
    assert got == [("B", b"0", False), ("A", b"1", False), ("A", b"2", False), ("A", b"0", True)]


def test_direct_reply_to_declares_and_consumers_as_rabbitmq(ch: MemoryChannel) -> None:
    reply_to = "amq.rabbitmq.reply-to"
    assert ch.queue_declare(reply_to) == (reply_to, 0, 1)  # passive or not: one consumer
    assert ch.queue_declare(reply_to, passive=True) == (reply_to, 0, 1)
    with pytest.raises(ChannelClosed) as gone:
        ch.queue_declare(reply_to + ".nobody", passive=True)
    assert gone.value.reply_code == 404
    ch = ch.connection.channel()
    ch.basic_consume(reply_to, lambda _d: None, no_ack=True, consumer_tag="r1")
    with pytest.raises(PreconditionFailed) as twice:
        ch.basic_consume(reply_to, lambda _d: None, no_ack=True, consumer_tag="r2")
    assert twice.value.reply_text == "PRECONDITION_FAILED - reply consumer already set"
    ch = ch.connection.channel()
    ch.queue_declare("rpc")
    ch.basic_consume(reply_to, lambda _d: None, no_ack=True, consumer_tag="r")
    ch.basic_cancel("r")
    with pytest.raises(PreconditionFailed) as cancelled:
        ch.basic_publish("", "rpc", b"call", Properties(reply_to=reply_to))
    assert cancelled.value.reply_text == "PRECONDITION_FAILED - fast reply consumer does not exist"


def test_a_single_active_consumer_queue_refuses_exclusive_consumers(ch: MemoryChannel) -> None:
    ch.queue_declare("q", arguments={"x-single-active-consumer": True})
    with pytest.raises(ChannelClosed) as exc:
        ch.basic_consume("q", lambda _d: None, exclusive=True)
    assert (exc.value.reply_code, exc.value.reply_text) == (
        403,
        f"ACCESS_REFUSED - {Q} in exclusive use",
    )


def test_an_argument_given_as_void_is_not_an_absent_one(ch: MemoryChannel) -> None:
    # found by test_memory_vs_rabbitmq_ops.py: RabbitMQ tells a void x-expires from none
    ch.queue_declare("q")
    with pytest.raises(ChannelClosed) as exc:
        ch.queue_declare("q", arguments={"x-expires": None})
    assert (exc.value.reply_code, exc.value.reply_text) == (
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'x-expires' for {Q}: "
        "received the value 'undefined' of type 'void' but current is none",
    )


def test_the_next_single_active_consumer_gets_the_ready_messages_at_once(broker: Broker) -> None:
    # as RabbitMQ 3.13 does (requeue_and_run after a cancel); RabbitMQ 3.10 leaves them
    # ready and crashes the queue at the next publish, a bug the memory broker does not copy
    # (test_memory_vs_rabbitmq_consumers.py stops comparing there)
    conn = broker.connect(threaded=False)
    first, second = conn.channel(), conn.channel()
    first.queue_declare("q", arguments={"x-single-active-consumer": True})
    first.basic_qos(1)
    got: dict[str, list[bytes]] = {"first": [], "second": []}
    first.basic_consume("q", lambda d: got["first"].append(d.body), consumer_tag="f")
    second.basic_consume("q", lambda d: got["second"].append(d.body))
    for n in range(3):
        first.basic_publish("", "q", str(n).encode())
    conn.run_pending()
    assert got == {"first": [b"0"], "second": []}
    first.basic_cancel("f")
    first.basic_publish("", "q", b"3")
    conn.run_pending()
    assert got == {"first": [b"0"], "second": [b"1", b"2", b"3"]}


def test_a_closing_channels_consumers_go_together_and_its_unacked_come_back_first(
    broker: Broker,
) -> None:
    # RabbitMQ's handle_ch_down: all of the channel's consumers leave the queue at once,
    # its unacked messages are requeued, and only then does the queue run (found on CI)
    conn = broker.connect(threaded=False)
    closing, same_too, other = conn.channel(), conn.channel(), conn.channel()
    closing.queue_declare("q", arguments={"x-single-active-consumer": True})
    closing.basic_qos(1)
    got: dict[str, list[bytes]] = {"closing": [], "other": []}
    closing.basic_consume("q", lambda d: got["closing"].append(d.body))
    closing.basic_consume("q", lambda d: got["closing"].append(d.body))
    other.basic_consume("q", lambda d: got["other"].append(d.body))
    for n in range(3):
        same_too.basic_publish("", "q", str(n).encode())
    conn.run_pending()
    assert got == {"closing": [b"0"], "other": []}
    closing.close()
    conn.run_pending()
    # not the closing channel's second consumer, and the requeued 0 before 1 and 2
    assert got == {"closing": [b"0"], "other": [b"0", b"1", b"2"]}


def test_a_per_consumer_qos_lifts_the_channel_limit(broker: Broker) -> None:
    conn = broker.connect(threaded=False)
    ch = conn.channel()
    ch.queue_declare("q")
    for n in range(3):
        ch.basic_publish("", "q", str(n).encode())
    got: list[bytes] = []
    ch.basic_qos(1, global_=True)
    ch.basic_qos(2)  # RabbitMQ 3.10: the channel-wide limit is gone; 2 per new consumer
    ch.basic_consume("q", lambda d: got.append(d.body))
    conn.run_pending()
    assert got == [b"0", b"1"]


def test_basic_gets_unacked_when_a_channel_limit_is_set_count_against_it_for_good(
    broker: Broker,
) -> None:
    # found by a hunt (HUTCH_TEST_COMPARE_SCALE=20); the steps below checked with pika
    # against RabbitMQ 3.10: its limiter starts from all the channel's unacked messages
    conn = broker.connect(threaded=False)
    ch = conn.channel()
    ch.queue_declare("q")
    for n in range(4):
        ch.basic_publish("", "q", str(n).encode())
    taken = ch.basic_get("q", no_ack=False)
    assert taken is not None
    ch.basic_qos(1, global_=True)
    got: list[bytes] = []
    ch.basic_consume("q", lambda d: got.append(d.body))
    conn.run_pending()
    assert got == []  # the get's message fills the limit
    ch.basic_ack(taken.delivery_tag)
    conn.run_pending()
    assert got == []  # and still does once acked
    ch.basic_qos(2, global_=True)
    conn.run_pending()
    assert got == [b"1"]  # a new limit keeps the count
    ch.basic_qos(0, global_=True)  # no limit; the next one starts from what is unacked
    conn.run_pending()
    assert got == [b"1", b"2", b"3"]


def test_a_channel_limit_holds_back_its_no_ack_consumers_too(broker: Broker) -> None:
    # checked with pika against RabbitMQ 3.10
    conn = broker.connect(threaded=False)
    ch, publisher = conn.channel(), conn.channel()
    ch.queue_declare("q")
    ch.basic_qos(1, global_=True)
    manual: list[bytes] = []
    no_ack: list[bytes] = []
    ch.basic_consume("q", lambda d: manual.append(d.body))
    publisher.basic_publish("", "q", b"0")
    conn.run_pending()
    ch.basic_consume("q", lambda d: no_ack.append(d.body), no_ack=True)
    for n in range(1, 4):
        publisher.basic_publish("", "q", str(n).encode())
    conn.run_pending()
    assert (manual, no_ack) == ([b"0"], [])


def test_unbinding_nothing_from_another_connections_exclusive_queue_is_ok(
    broker: Broker,
) -> None:
    # found by test_memory_vs_rabbitmq_exclusive.py: rabbit_binding:remove checks the
    # queue's exclusive access only when the binding exists
    owner = broker.connect(threaded=False).channel()
    other = broker.connect(threaded=False).channel()
    owner.queue_declare("q", exclusive=True)
    other.queue_unbind("q", "amq.direct", "k")  # no such binding: ok
    owner.queue_bind("q", "amq.direct", "k")
    with pytest.raises(ChannelClosed) as exc:
        other.queue_unbind("q", "amq.direct", "k")
    assert exc.value.reply_code == 405
    assert exc.value.reply_text.startswith(
        f"RESOURCE_LOCKED - cannot obtain exclusive access to locked {Q}."
    )
