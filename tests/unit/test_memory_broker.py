"""Unit tests of the memory broker engine (no RabbitMQ: pure logic, a fake clock)."""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hutch
from hutch import AccessRefused, ChannelClosed, ClosedError, NotFound, PreconditionFailed
from hutch._memory import (
    Broker,
    Delivery,
    MemoryChannel,
    Properties,
    Returned,
    forget_broker,
    get_broker,
)
from hutch._memory.exchanges import headers_match, topic_match

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def broker(clock: Clock) -> Iterator[Broker]:
    b = Broker(clock=clock)
    yield b
    b.close()


@pytest.fixture
def ch(broker: Broker) -> MemoryChannel:
    return broker.connect(threaded=False).channel()


def bodies(ch: MemoryChannel, queue: str) -> list[bytes]:
    out = []
    while (d := ch.basic_get(queue, no_ack=True)) is not None:
        out.append(d.body)
    return out


# ------------------------------------------------------------------ routing rules


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("#", "", True),
        ("*", "", False),
        ("a.#", "a", True),
        ("a.#.b", "a.b", True),
        ("a.*", "a.", True),
        ("", "", True),
        ("#.#", "a.b.c", True),
        ("*.*", "a", False),
        ("a.#.#.b", "a.x.y.b", True),
    ],
)
def test_topic_rules(pattern: str, key: str, expected: bool) -> None:
    assert topic_match(pattern, key) is expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", ""]), max_size=5).map(".".join))
def test_topic_hash_matches_everything_and_literal_matches_itself(key: str) -> None:
    assert topic_match("#", key)
    assert topic_match(key, key)


def test_headers_rules() -> None:
    assert headers_match({"a": 1}, {"a": 1})
    assert not headers_match({"a": 1}, {"a": True})  # Erlang: 1 /= true
    assert headers_match({"a": "1"}, {"a": b"1"})  # both binaries
    assert headers_match({"a": None}, {"a": "anything"})  # void: presence
    assert not headers_match({"x-match": "any"}, {})
    assert headers_match({"x-match": "all"}, {})
    assert headers_match({"x-c": 1}, {})  # x- args are ignored by 'all'
    assert not headers_match({"x-match": "all-with-x", "x-c": 1}, {})


# ------------------------------------------------------------------ errors: codes and texts


def test_errors_carry_rabbitmqs_codes_and_texts(broker: Broker) -> None:
    conn = broker.connect(threaded=False)
    with pytest.raises(NotFound) as nf:
        conn.channel().queue_declare("nope", passive=True)
    assert (nf.value.reply_code, nf.value.reply_text) == (
        404,
        "NOT_FOUND - no queue 'nope' in vhost '/'",
    )
    ch = conn.channel()
    ch.queue_declare("q", durable=True, arguments={"x-message-ttl": 100})
    with pytest.raises(PreconditionFailed) as pf:
        ch.queue_declare("q", durable=True)
    assert pf.value.reply_text == (
        "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': "
        "received none but current is the value '100' of type 'signedint'"
    )
    assert ch.closed  # a channel error closes the channel, as in RabbitMQ
    with pytest.raises(ClosedError):
        ch.queue_declare("q", durable=True, arguments={"x-message-ttl": 100})
    with pytest.raises(AccessRefused) as ar:
        conn.channel().queue_declare("amq.mine")
    assert (
        ar.value.reply_text
        == "ACCESS_REFUSED - queue name 'amq.mine' contains reserved prefix 'amq.*'"
    )
    conn.channel().queue_declare("ex", exclusive=True)
    other = broker.connect(threaded=False).channel()
    with pytest.raises(ChannelClosed) as locked:
        other.basic_get("ex")
    assert locked.value.reply_code == 405
    assert locked.value.reply_text.startswith(
        "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'ex' in vhost '/'."
    )


def test_exclusive_queue_goes_with_its_connection(broker: Broker) -> None:
    conn = broker.connect(threaded=False)
    name, _, _ = conn.channel().queue_declare("", exclusive=True)
    assert name.startswith("amq.gen-") and len(name) == 30
    conn.channel().queue_declare("mine", exclusive=True)
    conn.close()
    assert "mine" not in broker.queue_names() and name not in broker.queue_names()


# ------------------------------------------------------------------ TTL, length, DLX (fake clock)


def test_expired_message_behind_a_live_head_waits_for_the_head(
    ch: MemoryChannel, clock: Clock
) -> None:
    ch.queue_declare("dead")
    ch.queue_declare(
        "q", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}
    )
    ch.basic_publish("", "q", b"live", Properties(expiration="1000"))
    ch.basic_publish("", "q", b"short", Properties(expiration="10"))
    clock.now += 0.5
    assert ch.queue_declare("dead", passive=True)[1] == 0  # 'short' is not at the head
    clock.now += 1.0
    dead = [ch.basic_get("dead", no_ack=True) for _ in range(2)]
    assert [d.body for d in dead if d] == [b"live", b"short"]
    first = dead[1]
    assert first is not None and first.properties.headers is not None
    death = first.properties.headers["x-death"][0]
    assert (death["count"], death["reason"], death["queue"], death["original-expiration"]) == (
        1,
        "expired",
        "q",
        "10",
    )
    assert first.properties.expiration is None
    assert first.routing_key == "dead"


def test_a_message_requeued_past_its_expiry_expires_before_the_next_get(
    broker: Broker, clock: Clock
) -> None:
    # As RabbitMQ 3.10 does (checked with pika). The broker skips its expiry scan while
    # it knows nothing is due; a channel closed outside its operations must end that,
    # and the requeue must bring back among the timed queues one that had nothing ready.
    conn = broker.connect(threaded=False)
    taker, other = conn.channel(), conn.channel()
    taker.queue_declare("q")
    taker.basic_publish("", "q", b"brief", Properties(expiration="1000"))
    assert taker.basic_get("q", no_ack=False) is not None
    assert other.queue_declare("q", passive=True)[1] == 0  # nothing ready, nothing due
    clock.now += 2
    taker.close()  # requeued, already past its expiry
    assert other.basic_get("q", no_ack=True) is None
    assert other.queue_declare("q", passive=True)[1] == 0


def test_retry_loop_counts_deaths_per_queue_and_reason(ch: MemoryChannel, clock: Clock) -> None:
    ch.queue_declare(
        "work", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "delay"}
    )
    ch.queue_declare(
        "delay",
        arguments={
            "x-message-ttl": 100,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "work",
        },
    )
    ch.basic_publish("", "work", b"job")
    for _ in range(3):
        d = ch.basic_get("work")
        assert d is not None
        ch.basic_reject(d.delivery_tag, requeue=False)
        clock.now += 0.2
    d = ch.basic_get("work")
    assert d is not None and d.properties.headers is not None
    counts = {(x["queue"], x["reason"]): x["count"] for x in d.properties.headers["x-death"]}
    assert counts == {("work", "rejected"): 3, ("delay", "expired"): 3}
    assert d.properties.headers["x-first-death-reason"] == "rejected"


def test_a_third_death_reverses_the_older_entries_as_rabbitmq_does(
    ch: MemoryChannel, clock: Clock
) -> None:
    # RabbitMQ 3.10 regroups x-death (group_by_queue_and_reason) before prepending, which
    # reverses two or more older entries (seen against RabbitMQ: q2 -> q0 -> q1 -> dead gives
    # [q1, q2, q0])
    ch.exchange_declare("fan", "fanout")
    ch.queue_declare("dead")
    ch.queue_bind("dead", "fan")
    ttl = {"x-message-ttl": 240, "x-dead-letter-exchange": ""}
    ch.queue_declare("q0", arguments={**ttl, "x-dead-letter-routing-key": "q1"})
    ch.queue_declare("q1", arguments={"x-message-ttl": 240, "x-dead-letter-exchange": "fan"})
    ch.queue_declare(
        "q2", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q0"}
    )
    ch.basic_publish("", "q2", b"m", Properties(expiration="0"))
    clock.now += 1.0
    d = ch.basic_get("dead")
    assert d is not None and d.properties.headers is not None
    deaths = d.properties.headers["x-death"]
    assert [(x["queue"], x.get("original-expiration")) for x in deaths] == [
        ("q1", None),
        ("q2", "0"),
        ("q0", None),
    ]


def test_expiry_cycle_without_reject_is_dropped(ch: MemoryChannel, clock: Clock) -> None:
    args = {"x-message-ttl": 10, "x-dead-letter-exchange": ""}
    ch.queue_declare("a", arguments={**args, "x-dead-letter-routing-key": "b"})
    ch.queue_declare("b", arguments={**args, "x-dead-letter-routing-key": "a"})
    ch.basic_publish("", "a", b"m")
    clock.now += 1
    assert ch.queue_declare("a", passive=True)[1] == ch.queue_declare("b", passive=True)[1] == 0


@pytest.mark.parametrize(
    ("overflow", "kept", "acks"),
    [
        ("drop-head", [b"2", b"3"], [True, True, True, True]),
        ("reject-publish", [b"0", b"1"], [True, True, False, False]),
    ],
)
def test_max_length_overflow(
    ch: MemoryChannel, overflow: str, kept: list[bytes], acks: list[bool]
) -> None:
    confirms: list[bool] = []
    ch.confirm_select(lambda seq, ok: confirms.append(ok))
    ch.queue_declare("q", arguments={"x-max-length": 2, "x-overflow": overflow})
    for i in range(4):
        ch.basic_publish("", "q", str(i).encode())
    ch.connection.run_pending()
    assert bodies(ch, "q") == kept
    assert confirms == acks


def test_priorities(ch: MemoryChannel) -> None:
    ch.queue_declare("p", arguments={"x-max-priority": 5})
    for body, prio in [(b"low", 0), (b"top", 9), (b"mid", 3), (b"none", None)]:
        ch.basic_publish("", "p", body, Properties(priority=prio))
    assert bodies(ch, "p") == [b"top", b"mid", b"low", b"none"]


def test_queue_expires_when_unused(ch: MemoryChannel, clock: Clock, broker: Broker) -> None:
    ch.queue_declare("idle", arguments={"x-expires": 1000})
    clock.now += 0.9
    ch.queue_declare("idle", arguments={"x-expires": 1000})  # redeclaring uses it
    clock.now += 0.9
    assert "idle" in broker.queue_names()
    clock.now += 0.2
    assert "idle" not in broker.queue_names()


def test_a_wall_clock_step_neither_expires_early_nor_dates_deaths_wrongly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # TTLs run on monotonic time, as RabbitMQ's do: NTP or a VM host stepping the wall
    # clock (a CI box did, by 47 us) must not expire a message early; x-death's time is
    # still the wall clock's
    real = time.time
    step = [0.0]
    monkeypatch.setattr(time, "time", lambda: real() + step[0])
    b = Broker()
    try:
        c = b.connect(threaded=False).channel()
        c.queue_declare("dead")
        dlx = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}
        c.queue_declare("q", arguments={"x-message-ttl": 60_000, **dlx})
        c.basic_publish("", "q", b"m", Properties())
        step[0] = 3600.0  # the wall clock steps an hour forward
        assert c.queue_declare("q", passive=True)[1] == 1  # not expired
        c.queue_declare("now", arguments=dlx)
        c.basic_publish("", "now", b"m", Properties(expiration="0"))
        got = c.basic_get("dead", no_ack=True)
        assert got is not None and got.properties.headers is not None
        when = got.properties.headers["x-death"][0]["time"]
        assert abs(when.timestamp() - time.time()) < 5
    finally:
        b.close()


# ------------------------------------------------------------------ consumers


def test_prefetch_round_robin_requeue_and_redelivered(broker: Broker) -> None:
    conn = broker.connect(threaded=False)
    ch = conn.channel()
    ch.queue_declare("q")
    ch.basic_qos(1)
    seen: list[tuple[str, bytes, bool]] = []
    deliveries: list[Delivery] = []

    def on(d: Delivery) -> None:
        seen.append((d.consumer_tag, d.body, d.redelivered))
        deliveries.append(d)

    ch.basic_consume("q", on, consumer_tag="A")
    ch.basic_consume("q", on, consumer_tag="B")
    for i in range(4):
        ch.basic_publish("", "q", str(i).encode())
    conn.run_pending()
    assert seen == [("A", b"0", False), ("B", b"1", False)]  # prefetch 1 each
    ch.basic_nack(deliveries[0].delivery_tag, requeue=True)
    conn.run_pending()
    assert seen[-1] == ("A", b"0", True)  # back at its place, flagged
    ch.close()  # its unacked deliveries go back to the queue
    assert len(bodies(conn.channel(), "q")) == 4


def test_unknown_delivery_tag_closes_the_channel(ch: MemoryChannel) -> None:
    with pytest.raises(PreconditionFailed) as exc:
        ch.basic_ack(5)
    assert exc.value.reply_text == "PRECONDITION_FAILED - unknown delivery tag 5"


def test_deleting_a_queue_cancels_its_consumers(broker: Broker) -> None:
    conn = broker.connect(threaded=False)
    ch = conn.channel()
    ch.queue_declare("q")
    cancelled: list[str] = []
    ch.basic_consume("q", lambda d: None, consumer_tag="c1", on_cancel=cancelled.append)
    conn.channel().queue_delete("q")
    conn.run_pending()
    assert cancelled == ["c1"] and "c1" not in ch.consumers


def test_exclusive_consumer_and_auto_delete(broker: Broker) -> None:
    ch = broker.connect(threaded=False).channel()
    ch.queue_declare("q", auto_delete=True)
    ch.basic_consume("q", lambda d: None, consumer_tag="only", exclusive=True)
    with pytest.raises(AccessRefused) as exc:
        broker.connect(threaded=False).channel().basic_consume("q", lambda d: None)
    assert exc.value.reply_text == "ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use"
    ch.basic_cancel("only")
    assert "q" not in broker.queue_names()


def test_mandatory_return_comes_before_the_confirm(ch: MemoryChannel) -> None:
    events: list[Any] = []
    ch.on_return = lambda r: events.append(("return", r.reply_code, r.reply_text))
    ch.confirm_select(lambda seq, ok: events.append(("confirm", seq, ok)))
    ch.basic_publish("amq.direct", "nowhere", b"x", mandatory=True)
    ch.connection.run_pending()
    assert events == [("return", 312, "NO_ROUTE"), ("confirm", 1, True)]
    assert isinstance(Returned(312, "NO_ROUTE", "", "", b"", Properties()), Returned)


def test_direct_reply_to(broker: Broker) -> None:
    conn = broker.connect(threaded=False)
    client = conn.channel()
    replies: list[bytes] = []
    client.basic_consume("amq.rabbitmq.reply-to", lambda d: replies.append(d.body), no_ack=True)
    client.queue_declare("rpc")
    client.basic_publish("", "rpc", b"ping", Properties(reply_to="amq.rabbitmq.reply-to"))
    request = client.basic_get("rpc", no_ack=True)
    assert request is not None and request.properties.reply_to is not None
    assert request.properties.reply_to.startswith("amq.rabbitmq.reply-to.")
    conn.channel().basic_publish("", request.properties.reply_to, b"pong")
    conn.run_pending()
    assert replies == [b"pong"]
    with pytest.raises(PreconditionFailed):
        conn.channel().basic_publish("", "rpc", b"x", Properties(reply_to="amq.rabbitmq.reply-to"))


def test_threaded_callbacks_run_off_the_callers_thread(broker: Broker) -> None:
    import threading

    conn = broker.connect()
    ch = conn.channel()
    ch.queue_declare("t")
    threads: list[str] = []
    ch.basic_consume("t", lambda d: threads.append(threading.current_thread().name), no_ack=True)
    ch.basic_publish("", "t", b"x")
    assert conn.wait_idle(5.0)
    assert threads == ["hutch-memory-connection"]
    conn.close()


def test_named_brokers_are_separate_and_shared() -> None:
    try:
        assert get_broker("one") is get_broker("one")
        assert get_broker("one") is not get_broker("two")
    finally:
        forget_broker("one")
        forget_broker("two")


def test_the_memory_package_does_not_import_pika() -> None:
    root = pathlib.Path(hutch.__file__).parent / "_memory"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n == "pika" or n.startswith("pika.") for n in names), path


def test_properties_replace_copies_with_the_changes_as_dataclasses_replace_does() -> None:
    before = Properties(content_type="a", headers={"k": 1}, reply_to="x", priority=3)
    after = before.replace(reply_to="y", expiration="5")
    assert after == dataclasses.replace(before, reply_to="y", expiration="5")
    assert after is not before and before.reply_to == "x"  # the original is unchanged
    with pytest.raises(TypeError, match="nope"):
        before.replace(nope=1)
