from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hutch import Binding, Exchange, ExchangeType, Overflow, Queue, QueueType, bind
from hutch._topology import TopologyDataError, ordered


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


# --------------------------------------------------------------------------- to_dict / from_dict

NAMES = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30).filter(
    lambda n: not n.startswith("amq.") and len(n.encode()) <= 255
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=10),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
TABLES = st.dictionaries(st.text(max_size=12), VALUES, max_size=4)
SECONDS = st.one_of(st.integers(1, 10**9), st.floats(0.001, 1e9))


@st.composite
def exchanges(draw: st.DrawFn) -> Exchange:
    return Exchange(
        draw(NAMES),
        type=draw(st.sampled_from([*ExchangeType, *(t.value for t in ExchangeType)])),
        durable=draw(st.booleans()),
        auto_delete=draw(st.booleans()),
        internal=draw(st.booleans()),
        arguments=draw(TABLES),
    )


@st.composite
def queues(draw: st.DrawFn) -> Queue:
    kwargs: dict[str, object] = {
        "durable": draw(st.none() | st.booleans()),
        "exclusive": draw(st.none() | st.booleans()),
        "auto_delete": draw(st.none() | st.booleans()),
        "dead_letter_exchange": draw(st.none() | st.text(max_size=20)),
        "dead_letter_routing_key": draw(st.none() | st.text(max_size=20)),
        "message_ttl": draw(st.none() | SECONDS | st.just(0)),
        "expires": draw(st.none() | SECONDS),
        "max_length": draw(st.none() | st.integers(0, 2**40)),
        "max_length_bytes": draw(st.none() | st.integers(0, 2**40)),
        "overflow": draw(st.none() | st.sampled_from([*Overflow, "drop-head"])),
        "queue_type": draw(st.none() | st.sampled_from(["classic", QueueType.CLASSIC])),
        "max_priority": draw(st.none() | st.integers(0, 255)),
        "arguments": draw(st.none() | TABLES),
    }
    return Queue(draw(st.just("") | NAMES), **kwargs)  # type: ignore[arg-type]


@st.composite
def bindings(draw: st.DrawFn) -> Binding:
    headers = draw(st.none() | TABLES)
    return Binding(
        draw(NAMES | exchanges()),
        draw(NAMES),
        routing_key=draw(st.text(max_size=30)),
        headers=headers,
        match=draw(st.sampled_from(["all", "any", "all-with-x", "any-with-x"])),
        arguments=draw(TABLES),
    )


def queue_settings(queue: Queue) -> list[object]:
    """Queues compare by identity (a server-named one is new each time): compare fields."""
    return [getattr(queue, f.name) for f in dataclasses.fields(Queue)]


@settings(max_examples=60, deadline=None)
@given(exchanges())
def test_exchange_round_trip(exchange: Exchange) -> None:
    data = exchange.to_dict()
    assert Exchange.from_dict(data) == exchange
    assert json.loads(json.dumps(data, default=repr))["type"] in {t.value for t in ExchangeType}


@settings(max_examples=60, deadline=None)
@given(queues())
def test_queue_round_trip(queue: Queue) -> None:
    again = Queue.from_dict(queue.to_dict())
    assert queue_settings(again) == queue_settings(queue)
    assert again.arguments == queue.arguments
    assert again.to_dict() == queue.to_dict()


@settings(max_examples=60, deadline=None)
@given(bindings())
def test_binding_round_trip(binding: Binding) -> None:
    assert Binding.from_dict(binding.to_dict()) == binding


def test_binding_to_a_queue_object_round_trips_its_settings() -> None:
    queue = Queue("audit", max_length=5)
    binding = Binding(Exchange("orders", "topic"), queue, routing_key="order.*")
    data = binding.to_dict()
    assert data["exchange"] == Exchange("orders", "topic").to_dict()
    again = Binding.from_dict(data)
    assert again.exchange == binding.exchange
    assert isinstance(again.queue, Queue)
    assert queue_settings(again.queue) == queue_settings(queue)


def test_to_dict_is_plain_data() -> None:
    assert Queue("tasks", overflow=Overflow.DROP_HEAD, message_ttl=1.5).to_dict() == {
        "name": "tasks",
        "durable": True,
        "exclusive": False,
        "auto_delete": False,
        "message_ttl": 1.5,
        "overflow": "drop-head",
        "arguments": {},
    }
    assert Exchange("logs", ExchangeType.FANOUT).to_dict() == {
        "name": "logs",
        "type": "fanout",
        "durable": True,
        "auto_delete": False,
        "internal": False,
        "arguments": {},
    }


@pytest.mark.parametrize(
    ("cls", "data", "key", "problem"),
    [
        (Queue, {"name": "q", "max_lenght": 3}, "max_lenght", "allowed keys are name, durable"),
        (Queue, {"durable": True}, "name", "Field required"),
        (Queue, {"name": 3}, "name", "valid string"),
        (Queue, {"name": "q", "durable": "yes"}, "durable", "valid boolean"),
        (Queue, {"name": "q", "max_length": 1.5}, "max_length", "valid integer"),
        (Queue, {"name": "q", "max_length": True}, "max_length", "valid integer"),
        (Queue, {"name": "q", "message_ttl": "60"}, "message_ttl", "valid number"),
        (Queue, {"name": "q", "overflow": "explode"}, "overflow", "'drop-head'"),
        (Queue, {"name": "q", "arguments": [1]}, "arguments", "table"),
        (Queue, {"name": "q", "arguments": {1: 2}}, "arguments", "strings"),
        (Queue, {"name": "q", "queue_type": "quorum", "durable": False}, None, "quorum"),
        (Queue, {"name": "q", "max_priority": 256}, None, "255 at most"),
        (Queue, {"name": "q", "expires": 0}, None, "expires must be positive"),
        (Queue, {"name": "amq.q"}, None, "reserved"),
        (Exchange, {"name": "e", "type": "fanoutt"}, "type", "'fanout', 'direct'"),
        (Exchange, {"type": "topic"}, "name", "Field required"),
        (Exchange, {"name": "e", "kind": "topic"}, "kind", "allowed keys are name, type"),
        (Binding, {"exchange": "e"}, "queue", "Field required"),
        (Binding, {"exchange": "e", "queue": "q", "match": "most"}, "match", "'all', 'any'"),
        (Binding, {"exchange": "e", "queue": 5}, "queue", "a name or a table"),
        (Binding, {"exchange": {"name": "e", "type": "x"}, "queue": "q"}, "exchange.type", "'"),
        (Binding, {"exchange": "", "queue": "q"}, None, "default exchange"),
        (Binding, {"exchange": "e", "queue": "q", "headers": "x"}, "headers", "table"),
    ],
)
def test_from_dict_names_the_bad_key(
    cls: type[Exchange | Queue | Binding], data: dict[str, object], key: str | None, problem: str
) -> None:
    with pytest.raises(TopologyDataError) as info:
        cls.from_dict(data)
    assert info.value.key == key
    assert problem in info.value.problem
    assert isinstance(info.value, ValueError)
    if key is not None:
        assert str(info.value).startswith(f"{info.value.entity}.{key}: ")


def test_from_dict_needs_a_mapping() -> None:
    with pytest.raises(TypeError, match="mapping"):
        Queue.from_dict(["name", "q"])  # type: ignore[arg-type]


def test_queue_constructor_rules_match_from_dict() -> None:
    # the constructor itself refuses what from_dict refuses (one rule set)
    with pytest.raises(TypeError, match="max_length"):
        Queue("q", max_length=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="message_ttl"):
        Queue("q", message_ttl=float("nan"))
    with pytest.raises(ValueError, match="expires"):
        Queue("q", expires=float("inf"))
    with pytest.raises(ValueError, match="max_priority"):
        Queue("q", max_priority=300)
    with pytest.raises(ValueError, match="too large"):
        Queue("q", message_ttl=1e300)


KEYS = st.sampled_from(
    [
        "name",
        "type",
        "durable",
        "exclusive",
        "auto_delete",
        "internal",
        "exchange",
        "queue",
        "routing_key",
        "headers",
        "match",
        "arguments",
        "message_ttl",
        "expires",
        "max_length",
        "overflow",
        "queue_type",
        "max_priority",
        "bogus",
    ]
) | st.text(max_size=10)
HOSTILE = st.dictionaries(
    KEYS,
    VALUES | st.floats() | st.sampled_from(["fanout", "all", "quorum", "drop-head", ""]),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([Exchange, Queue, Binding]), HOSTILE)
def test_any_dict_builds_or_fails_with_a_value_error(
    cls: type[Exchange | Queue | Binding], data: dict[str, object]
) -> None:
    error: TopologyDataError | None = None
    try:
        item = cls.from_dict(data)
    except TopologyDataError as exc:
        error = exc
    if error is None:
        assert isinstance(item, cls)
    elif error.key is not None:
        # the key named is one given, or a required one that is missing
        nested = error.key.partition(".")[0] in ("exchange", "queue")
        assert error.key in data or error.key in ("name", "exchange", "queue") or nested, error
        assert str(error).startswith(error.entity + error.path + ": ")
        assert repr(error.key)[1:-1] in str(error) or error.key in str(error)
