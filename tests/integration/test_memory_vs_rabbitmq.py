"""The memory broker is proven against RabbitMQ: the same generated scenarios on both.

Each test builds the same topology on the shared RabbitMQ (driven by raw pika) and on a
private memory broker, sends the same messages, and compares what each queue holds. A
disagreement is a bug in the memory broker.
"""

from __future__ import annotations

import functools
import itertools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hutch._exceptions import ChannelClosed
from hutch._memory import Broker, MemoryChannel, Properties
from tests.integration.comparing import compare_settings, compare_timeout

pytestmark = [
    compare_timeout(300),
    pytest.mark.rabbitmq_only("compares the memory broker with RabbitMQ itself"),
]


@pytest.fixture(scope="module")
def rabbit(amqp_url: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    ch.confirm_delivery()
    yield ch
    conn.close()


def _memory() -> tuple[Broker, MemoryChannel, list[float]]:
    now = [1_700_000_000.0]
    broker = Broker(clock=lambda: now[0])
    ch = broker.connect(threaded=False).channel()
    return broker, ch, now


# ------------------------------------------------------------------------- routing

_topic_word = st.sampled_from(["a", "b", "c", ""])
_pattern_word = st.sampled_from(["a", "b", "", "*", "#"])
_patterns = st.lists(st.lists(_pattern_word, max_size=4).map(".".join), min_size=1, max_size=6)
_keys = st.lists(st.lists(_topic_word, max_size=4).map(".".join), min_size=1, max_size=8)

_values = st.sampled_from([1, 2, 2**40, "1", "x", b"1", True, False, None, 0])
_binding_args = st.fixed_dictionaries(
    {"x-match": st.sampled_from(["all", "any", "all-with-x", "any-with-x"])},
    optional={k: _values for k in ("a", "b", "x-c")},
)
_message_headers = st.fixed_dictionaries(
    {}, optional={k: _values for k in ("a", "b", "x-c", "x-match", "d")}
)


def _route_both(
    rabbit: Any,
    kind: str,
    bindings: list[tuple[str, dict[str, Any] | None]],
    messages: list[tuple[str, dict[str, Any] | None]],
) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """Bind one queue per binding, publish each message; return {(queue, message)} twice."""
    tag = uuid.uuid4().hex[:8]
    exchange = f"cmp-{kind}-{tag}"
    queues = [f"cmp-{tag}-{i}" for i in range(len(bindings))]
    broker, mem, _ = _memory()
    rabbit.exchange_declare(exchange, kind, auto_delete=True)
    mem.exchange_declare(exchange, kind, auto_delete=True)
    for q, (key, args) in zip(queues, bindings, strict=True):
        rabbit.queue_declare(q, auto_delete=True)
        rabbit.queue_bind(q, exchange, key, arguments=args)
        mem.queue_declare(q, auto_delete=True)
        mem.queue_bind(q, exchange, key, args)
    for i, (key, headers) in enumerate(messages):
        rabbit.basic_publish(exchange, key, str(i).encode(), pika.BasicProperties(headers=headers))
        mem.basic_publish(exchange, key, str(i).encode(), Properties(headers=headers))
    got_rabbit, got_memory = set(), set()
    for qi, q in enumerate(queues):
        while True:
            method, _, body = rabbit.basic_get(q, auto_ack=True)
            if method is None:
                break
            got_rabbit.add((qi, int(body)))
        while (d := mem.basic_get(q, no_ack=True)) is not None:
            got_memory.add((qi, int(d.body)))
        rabbit.queue_delete(q)
    rabbit.exchange_delete(exchange)
    broker.close()
    return got_rabbit, got_memory


@compare_settings(150)
@given(patterns=_patterns, keys=_keys)
def test_topic_routing_matches_rabbitmq(rabbit: Any, patterns: list[str], keys: list[str]) -> None:
    got_rabbit, got_memory = _route_both(
        rabbit, "topic", [(p, None) for p in patterns], [(k, None) for k in keys]
    )
    assert got_memory == got_rabbit, (patterns, keys)


@compare_settings(150)
@given(
    bindings=st.lists(_binding_args, min_size=1, max_size=5),
    headers=st.lists(_message_headers, min_size=1, max_size=6),
)
def test_headers_routing_matches_rabbitmq(
    rabbit: Any, bindings: list[dict[str, Any]], headers: list[dict[str, Any]]
) -> None:
    got_rabbit, got_memory = _route_both(
        rabbit, "headers", [("", b) for b in bindings], [("", h or None) for h in headers]
    )
    assert got_memory == got_rabbit, (bindings, headers)


# ------------------------------------------------------------------------- TTL, max-length, DLX


@dataclass(frozen=True)
class QueueSpec:
    ttl: int | None
    max_length: int | None
    max_bytes: int | None
    overflow: str | None
    dlx: str | None  # None, "" (default exchange) or "fanout" (the scenario's fanout)
    dlrk: int | None  # index of the target queue (len(queues) = the terminal queue)
    rejects: int  # the first N gets of this queue are nacked
    requeue: bool  # ... with requeue=True (else dead-lettered)


@dataclass(frozen=True)
class Scenario:
    queues: tuple[QueueSpec, ...]
    messages: tuple[tuple[int, str | None, int], ...]  # (queue, expiration, body length)


# Timing, chosen so the comparison does not depend on the real broker's timer jitter.
# Message n of every scenario is published at start + n * STEP. A message dies of age after
# S ms: one first hop (queue TTL, its expiration or 0) then up to two more queue-TTL hops
# (cycles stop there). With these values, two different messages of a scenario never have
# events closer than 30 ms (checked by test_timing_grid_keeps_events_apart), and the
# measured publish times must keep them 15 ms apart or the scenario is not compared.
STEP = 0.040
QUEUE_TTL = 240
EXPIRATIONS = ("0", "230", "470")
MARGIN = 0.015
#: how long a rejected message takes at most to reach its dead-letter queue on RabbitMQ
DEAD_LETTER_SETTLE = 0.03


def _lifetimes() -> list[int]:
    """Every delay (ms) after its publish at which a message can be dead-lettered by age."""
    firsts = [0, QUEUE_TTL, *(int(e) for e in EXPIRATIONS)]
    return sorted({first + hops * QUEUE_TTL for first in firsts for hops in range(3)})


LIFETIMES = _lifetimes()
#: seconds after the last publish by which every timed event has happened, plus slack
SETTLED = max(LIFETIMES) / 1000 + 0.3


def _ambiguous(times: list[float]) -> bool:
    """Whether two messages published at ``times`` could have events too close to order."""
    events = [(n, t + s / 1000) for n, t in enumerate(times) for s in LIFETIMES]
    events.sort(key=lambda e: e[1])
    return any(a[0] != b[0] and b[1] - a[1] < MARGIN for a, b in itertools.pairwise(events))


def test_timing_grid_keeps_events_apart() -> None:
    # the grid itself (no jitter) leaves every pair of messages' events 30 ms apart
    times = [n * STEP for n in range(6)]
    events = sorted((t + s / 1000, n) for n, t in enumerate(times) for s in LIFETIMES)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(events) if a[1] != b[1]]
    assert min(gaps) >= 0.0299
    assert not _ambiguous(times)
    assert _ambiguous([0.0, 0.005])  # and the guard sees a collision


_queue_spec = st.builds(
    QueueSpec,
    ttl=st.sampled_from([None, None, 0, QUEUE_TTL]),
    max_length=st.sampled_from([None, None, 0, 1, 2]),
    max_bytes=st.sampled_from([None, None, None, 4, 9]),
    overflow=st.sampled_from([None, "drop-head", "reject-publish", "reject-publish-dlx"]),
    dlx=st.sampled_from([None, "", "", "fanout"]),
    dlrk=st.one_of(st.none(), st.integers(0, 3)),
    rejects=st.integers(0, 2),
    requeue=st.booleans(),
)


@st.composite
def _scenario(draw: st.DrawFn) -> Scenario:
    queues = tuple(draw(st.lists(_queue_spec, min_size=1, max_size=3)))
    messages = tuple(
        draw(
            st.lists(
                st.tuples(
                    st.integers(0, len(queues) - 1),
                    st.sampled_from([None, None, *EXPIRATIONS]),
                    st.integers(1, 5),
                ),
                min_size=1,
                max_size=6,
            )
        )
    )
    return Scenario(queues, messages)


def _names(tag: str, n: int) -> list[str]:
    return [f"ttl-{tag}-{i}" for i in range(n)] + [f"ttl-{tag}-dead"]


def _declare(ch: Any, memory: bool, tag: str, sc: Scenario) -> None:
    names = _names(tag, len(sc.queues))
    fanout = f"ttl-{tag}-fanout"
    if memory:
        ch.exchange_declare(fanout, "fanout", auto_delete=False)
    else:
        ch.exchange_declare(fanout, "fanout")
    for i, spec in enumerate(sc.queues):
        args: dict[str, Any] = {}
        if spec.ttl is not None:
            args["x-message-ttl"] = spec.ttl
        if spec.max_length is not None:
            args["x-max-length"] = spec.max_length
        if spec.max_bytes is not None:
            args["x-max-length-bytes"] = spec.max_bytes
        if spec.overflow is not None:
            args["x-overflow"] = spec.overflow
        if spec.dlx is not None:
            args["x-dead-letter-exchange"] = fanout if spec.dlx == "fanout" else ""
            if spec.dlrk is not None:
                args["x-dead-letter-routing-key"] = names[min(spec.dlrk, len(sc.queues))]
        if memory:
            ch.queue_declare(names[i], arguments=args)
        else:
            ch.queue_declare(names[i], arguments=args)
    ch.queue_declare(names[-1])
    ch.queue_bind(names[-1], fanout, "")


def _summary(
    queue: int, body: bytes, redelivered: bool, exchange: str, key: str, headers: Any
) -> Any:
    headers = headers or {}
    deaths = [
        (
            d["count"],
            d["reason"],
            d["queue"],
            d["exchange"],
            tuple(d["routing-keys"]),
            d.get("original-expiration"),
        )
        for d in headers.get("x-death", [])
    ]
    first = tuple(headers.get(f"x-first-death-{k}") for k in ("reason", "queue", "exchange"))
    return (queue, body, redelivered, exchange, key, tuple(deaths), first)


def _drain_rabbit(ch: Any, tag: str, sc: Scenario) -> list[Any]:
    names = _names(tag, len(sc.queues))
    budget = [q.rejects for q in sc.queues] + [0]
    requeue = [q.requeue for q in sc.queues] + [False]
    out = []
    for _ in range(30):
        got = False
        for qi, name in enumerate(names):
            while True:
                method, props, body = ch.basic_get(name, auto_ack=False)
                if method is None:
                    break
                got = True
                out.append(
                    _summary(
                        qi,
                        body,
                        method.redelivered,
                        method.exchange,
                        method.routing_key,
                        props.headers,
                    )
                )
                if budget[qi]:
                    budget[qi] -= 1
                    ch.basic_nack(method.delivery_tag, requeue=requeue[qi])
                    if not requeue[qi]:
                        # RabbitMQ dead-letters asynchronously (the queue process publishes
                        # it); the memory broker at once: let it land before the next get
                        time.sleep(DEAD_LETTER_SETTLE)
                else:
                    ch.basic_ack(method.delivery_tag)
        if not got:
            break
    return out


def _drain_memory(ch: MemoryChannel, tag: str, sc: Scenario) -> list[Any]:
    names = _names(tag, len(sc.queues))
    budget = [q.rejects for q in sc.queues] + [0]
    requeue = [q.requeue for q in sc.queues] + [False]
    out = []
    for _ in range(30):
        got = False
        for qi, name in enumerate(names):
            while (d := ch.basic_get(name)) is not None:
                got = True
                out.append(
                    _summary(
                        qi, d.body, d.redelivered, d.exchange, d.routing_key, d.properties.headers
                    )
                )
                if budget[qi]:
                    budget[qi] -= 1
                    ch.basic_nack(d.delivery_tag, requeue=requeue[qi])
                else:
                    ch.basic_ack(d.delivery_tag)
        if not got:
            break
    return out


SCENARIOS_PER_EXAMPLE = 10
compared: dict[str, int] = {"ttl": 0, "skipped": 0}


@compare_settings(25)
@given(
    scenarios=st.lists(_scenario(), min_size=SCENARIOS_PER_EXAMPLE, max_size=SCENARIOS_PER_EXAMPLE)
)
def test_ttl_maxlen_dead_lettering_match_rabbitmq(rabbit: Any, scenarios: list[Scenario]) -> None:
    tags = [uuid.uuid4().hex[:8] for _ in scenarios]
    broker, mem, now = _memory()
    confirms: list[bool] = []
    mem.confirm_select(lambda seq, ok: confirms.append(ok))
    for tag, sc in zip(tags, scenarios, strict=True):
        _declare(rabbit, False, tag, sc)
        _declare(mem, True, tag, sc)
    start = time.time()
    # message n of every scenario at start + n * STEP (see STEP); confirms per scenario
    published: list[list[float]] = [[] for _ in scenarios]
    rabbit_acks: list[list[bool]] = [[] for _ in scenarios]
    memory_acks: list[list[bool]] = [[] for _ in scenarios]
    for n in range(max(len(sc.messages) for sc in scenarios)):
        time.sleep(max(0.0, start + n * STEP - time.time()))
        for s, (tag, sc) in enumerate(zip(tags, scenarios, strict=True)):
            if n >= len(sc.messages):
                continue
            names = _names(tag, len(sc.queues))
            qi, expiration, length = sc.messages[n]
            body = (str(n) * length).encode()
            at = time.time()
            try:
                rabbit.basic_publish(
                    "", names[qi], body, pika.BasicProperties(expiration=expiration)
                )
                rabbit_acks[s].append(True)
            except pika.exceptions.NackError:
                rabbit_acks[s].append(False)
            published[s].append(at)
            now[0] = 1_700_000_000.0 + (at - start)
            mem.basic_publish("", names[qi], body, Properties(expiration=expiration))
            mem.connection.run_pending()
            memory_acks[s].append(confirms.pop())
    # read only once every timed event on the real broker has happened
    settled = max(max(p) for p in published) + SETTLED
    time.sleep(max(0.0, settled - time.time()))
    now[0] = 1_700_000_000.0 + (settled - start)
    try:
        for s, (tag, sc) in enumerate(zip(tags, scenarios, strict=True)):
            got_rabbit = _drain_rabbit(rabbit, tag, sc)
            got_memory = _drain_memory(mem, tag, sc)
            if _ambiguous(published[s]):
                compared["skipped"] += 1  # publish jitter: the real order is not knowable
                continue
            assert got_memory == got_rabbit, sc
            assert memory_acks[s] == rabbit_acks[s], sc
            compared["ttl"] += 1
    finally:
        for tag, sc in zip(tags, scenarios, strict=True):
            for name in _names(tag, len(sc.queues)):
                rabbit.queue_delete(name)
            rabbit.exchange_delete(f"ttl-{tag}-fanout")
        broker.close()


# ------------------------------------------------------------------------- consumer priority

_consumers = st.lists(
    st.tuples(st.one_of(st.none(), st.integers(-2, 3)), st.integers(1, 4)),
    min_size=1,
    max_size=4,
)


def _keep_body(got: list[bytes], _ch: Any, _method: Any, _props: Any, body: bytes) -> None:
    got.append(body)


def _keep_memory_body(got: list[bytes], delivery: Any) -> None:
    got.append(delivery.body)


def _priority_both(
    amqp_url: str, consumers: list[tuple[int | None, int]], count: int
) -> tuple[list[list[bytes]], list[list[bytes]]]:
    """Consumers (x-priority, prefetch) that never ack, then ``count`` messages: who got what."""
    queue = f"prio-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    rabbit: list[list[bytes]] = [[] for _ in consumers]
    try:
        pub = conn.channel()
        pub.confirm_delivery()
        pub.queue_declare(queue, auto_delete=True)
        for i, (priority, prefetch) in enumerate(consumers):
            ch = conn.channel()
            ch.basic_qos(prefetch_count=prefetch)
            ch.basic_consume(
                queue,
                functools.partial(_keep_body, rabbit[i]),
                arguments=None if priority is None else {"x-priority": priority},
            )
        for n in range(count):
            pub.basic_publish("", queue, str(n).encode())
        expected = min(count, sum(prefetch for _, prefetch in consumers))
        deadline = time.monotonic() + 10
        while sum(map(len, rabbit)) < expected and time.monotonic() < deadline:
            conn.process_data_events(0.02)
        conn.process_data_events(0.05)  # nothing more may come
    finally:
        conn.close()
    broker = Broker()
    memory: list[list[bytes]] = [[] for _ in consumers]
    try:
        mconn = broker.connect(threaded=False)
        mpub = mconn.channel()
        mpub.queue_declare(queue, auto_delete=True)
        for i, (priority, prefetch) in enumerate(consumers):
            mch = mconn.channel()
            mch.basic_qos(prefetch)
            mch.basic_consume(
                queue,
                functools.partial(_keep_memory_body, memory[i]),
                arguments=None if priority is None else {"x-priority": priority},
            )
        for n in range(count):
            mpub.basic_publish("", queue, str(n).encode())
        mconn.run_pending()
    finally:
        broker.close()
    return rabbit, memory


@compare_settings(60)
@given(consumers=_consumers, count=st.integers(0, 14))
def test_consumer_priorities_match_rabbitmq(
    amqp_url: str, consumers: list[tuple[int | None, int]], count: int
) -> None:
    """``x-priority`` with prefetch: the same messages reach the same consumers."""
    rabbit, memory = _priority_both(amqp_url, consumers, count)
    assert memory == rabbit, consumers


# ------------------------------------------------------------------------- channel errors


def _ignore(*_args: Any) -> None:
    """A consumer callback for the error cases (they fail before any delivery)."""


_ERROR_CASES: list[tuple[str, list[tuple[str, tuple[Any, ...], dict[str, Any]]]]] = [
    ("passive missing queue", [("queue_declare", ("Q",), {"passive": True})]),
    ("passive missing exchange", [("exchange_declare", ("X",), {"passive": True})]),
    ("reserved queue", [("queue_declare", ("amq.Q",), {})]),
    ("reserved exchange", [("exchange_declare", ("amq.X",), {})]),
    (
        "durable differs",
        [("queue_declare", ("Q",), {"durable": True}), ("queue_declare", ("Q",), {})],
    ),
    (
        "ttl differs",
        [
            ("queue_declare", ("Q",), {"arguments": {"x-message-ttl": 5}}),
            ("queue_declare", ("Q",), {"arguments": {"x-message-ttl": 6}}),
        ],
    ),
    (
        "ttl added",
        [
            ("queue_declare", ("Q",), {}),
            ("queue_declare", ("Q",), {"arguments": {"x-max-length": 6}}),
        ],
    ),
    (
        "exchange type differs",
        [("exchange_declare", ("X", "direct"), {}), ("exchange_declare", ("X", "fanout"), {})],
    ),
    (
        "exclusive differs",
        [("queue_declare", ("Q",), {}), ("queue_declare", ("Q",), {"exclusive": True})],
    ),
    ("bind missing exchange", [("queue_declare", ("Q",), {}), ("queue_bind", ("Q", "X"), {})]),
    ("bind default exchange", [("queue_declare", ("Q",), {}), ("queue_bind", ("Q", ""), {})]),
    ("delete system exchange", [("exchange_delete", ("amq.direct",), {})]),
    ("bad overflow", [("queue_declare", ("Q",), {"arguments": {"x-overflow": "x"}})]),
    ("negative ttl", [("queue_declare", ("Q",), {"arguments": {"x-message-ttl": -1}})]),
    ("zero expires", [("queue_declare", ("Q",), {"arguments": {"x-expires": 0}})]),
    (
        "dlrk without dlx",
        [("queue_declare", ("Q",), {"arguments": {"x-dead-letter-routing-key": "a"}})],
    ),
    ("unknown delivery tag", [("basic_ack", (7,), {})]),
    (
        "x-priority not an integer",
        [
            ("queue_declare", ("Q",), {}),
            ("basic_consume", ("Q", _ignore), {"arguments": {"x-priority": "high"}}),
        ],
    ),
    (
        "x-priority a bool",
        [
            ("queue_declare", ("Q",), {}),
            ("basic_consume", ("Q", _ignore), {"arguments": {"x-priority": True}}),
        ],
    ),
    (
        "x-cancel-on-ha-failover not a bool",
        [
            ("queue_declare", ("Q",), {}),
            ("basic_consume", ("Q", _ignore), {"arguments": {"x-cancel-on-ha-failover": 1}}),
        ],
    ),
    (
        "stream offset on a classic queue",
        [
            ("queue_declare", ("Q",), {}),
            ("basic_consume", ("Q", _ignore), {"arguments": {"x-stream-offset": "first"}}),
        ],
    ),
    (
        "bad x-match",
        [
            ("queue_declare", ("Q",), {}),
            ("exchange_declare", ("X", "headers"), {}),
            ("queue_bind", ("Q", "X"), {"arguments": {"x-match": "some"}}),
        ],
    ),
]


@pytest.mark.parametrize(("label", "steps"), _ERROR_CASES, ids=[c[0] for c in _ERROR_CASES])
def test_channel_errors_match_rabbitmq(amqp_url: str, label: str, steps: list[Any]) -> None:
    tag = uuid.uuid4().hex[:8]
    names = {
        "Q": f"err-q-{tag}",
        "X": f"err-x-{tag}",
        "amq.Q": f"amq.q-{tag}",
        "amq.X": f"amq.x-{tag}",
    }
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    broker, mem, _ = _memory()
    outcomes = []
    try:
        for side in ("rabbit", "memory"):
            ch = conn.channel() if side == "rabbit" else mem
            result: tuple[int, str] | None = None
            for method, args, kwargs in steps:
                args = tuple(names.get(a, a) if isinstance(a, str) else a for a in args)
                if side == "rabbit" and method == "queue_bind" and len(args) == 2:
                    kwargs = {**kwargs, "routing_key": ""}
                try:
                    getattr(ch, method)(*args, **kwargs)
                    if side == "rabbit":
                        ch.queue_declare(names["Q"] + "-probe", auto_delete=True, passive=False)
                except pika.exceptions.ChannelClosedByBroker as exc:
                    result = (exc.reply_code, exc.reply_text)
                    break
                except ChannelClosed as exc:
                    result = (exc.reply_code, exc.reply_text)
                    break
            outcomes.append(result)
        assert outcomes[0] is not None, label
        assert outcomes[1] == outcomes[0]
    finally:
        ch = conn.channel()
        ch.queue_delete(names["Q"])
        ch.queue_delete(names["Q"] + "-probe")
        ch.exchange_delete(names["X"])
        conn.close()
        broker.close()
