"""Hostile bodies against a running consumer: refused or dead-lettered, never executed.

hypothesis generates random bytes, wrong content types, huge and deeply nested JSON and
pickle payloads whose unpickling would create a marker file. A typed subscriber must
dead-letter every one of them with a reason, keep running, and never create the marker;
bodies over ``max_message_size`` are refused before they leave the client.
"""

from __future__ import annotations

import json
import pickle
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from hutch import Connection, Message, MessageTooLarge, Publisher, Queue, Subscriber
from tests.reliability import wait_until

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.rabbitmq_only("a producer we did not write: raw pika frames on the wire"),
]

#: Content types a hostile or confused publisher might send.
CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/octet-stream",
    "application/python-pickle",
    "application/x-python-serialize",
    "application/x-yaml",
    "application/xml",
    "",
    "garbage/\u00e9\u0000",
]

HOSTILE_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Order(BaseModel):
    id: int
    item: str


class Exploit:
    """Unpickling this creates ``path``: the proof that a body was executed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def pickle_payloads(path: str) -> list[bytes]:
    return [pickle.dumps(Exploit(path), protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)]


@dataclass
class Outcomes:
    """What became of each message id: handled by the consumer or dead-lettered."""

    handled: dict[str, object] = field(default_factory=dict)
    dead: dict[str, tuple[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def settled(self, message_id: str) -> bool:
        with self.lock:
            return message_id in self.handled or message_id in self.dead


class Rig:
    """A consumer under attack: where to send hostile bodies and what became of them."""

    def __init__(
        self,
        raw: Publisher[object],
        queue: str,
        outcomes: Outcomes,
        marker: Path,
        consumer: threading.Thread,
        errors: list[BaseException],
    ) -> None:
        self.raw = raw
        self.queue = queue
        self.outcomes = outcomes
        self.marker = marker
        self.consumer = consumer
        self.errors = errors

    def __repr__(self) -> str:  # hypothesis prints it with every falsifying example
        return f"<Rig queue={self.queue!r}>"

    def send(self, body: bytes, content_type: str | None) -> str:
        mid = uuid.uuid4().hex
        self.raw.publish(body, message_id=mid, content_type=content_type)
        assert wait_until(lambda: self.outcomes.settled(mid), 20), (
            "message neither handled nor dead"
        )
        return mid


def _start_rig(conn: Connection, marker: Path, model: type[Any] | None, name: str) -> Iterator[Rig]:
    q = Queue(name, durable=False, expires=600_000)
    dead = f"{name}.dead"
    outcomes = Outcomes()
    errors: list[BaseException] = []
    sub: Subscriber[Any] = Subscriber(conn, queue=q, model=model, prefetch=20)
    # the dead-letter queue as hutch declares it (durable, no arguments)
    dead_sub = Subscriber(conn, queue=Queue(dead), model=bytes)

    def handle(body: object, message: Message[Any]) -> None:
        with outcomes.lock:
            outcomes.handled[message.message_id or ""] = body

    def handle_dead(_body: bytes, message: Message[bytes]) -> None:
        h = message.headers
        with outcomes.lock:
            outcomes.dead[message.message_id or ""] = (
                str(h.get("x-hutch-error-type")),
                str(h.get("x-hutch-error")),
            )

    def run(s: Subscriber[Any], handler: Any) -> None:
        try:
            s.run(handler)
        except BaseException as exc:  # recorded: the consumer must stay up
            errors.append(exc)

    with sub, dead_sub:
        threads = [
            threading.Thread(target=run, args=(sub, handle), daemon=True),
            threading.Thread(target=run, args=(dead_sub, handle_dead), daemon=True),
        ]
        for t in threads:
            t.start()
        with Publisher(conn, routing_key=q.name) as raw:
            yield Rig(raw, q.name, outcomes, marker, threads[0], errors)
        sub.stop()
        dead_sub.stop()
        for t in threads:
            t.join(10)
    ch = conn.channel()
    ch.delete_queue(q.name)
    ch.delete_queue(dead)


@pytest.fixture(scope="module")
def marker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("hostile") / "executed.marker"
    yield path
    assert not path.exists(), "a message body was unpickled and executed"


@pytest.fixture(scope="module")
def module_conn(amqp_url: str) -> Iterator[Connection]:
    with Connection(amqp_url, connection_name=f"hostile-{uuid.uuid4().hex[:8]}") as conn:
        yield conn


@pytest.fixture(scope="module")
def typed(module_conn: Connection, marker: Path) -> Iterator[Rig]:
    yield from _start_rig(module_conn, marker, Order, f"hostile-typed-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def untyped(module_conn: Connection, marker: Path) -> Iterator[Rig]:
    yield from _start_rig(module_conn, marker, None, f"hostile-untyped-{uuid.uuid4().hex[:8]}")


def _assert_dead_lettered(rig: Rig, mid: str) -> None:
    with rig.outcomes.lock:
        assert mid not in rig.outcomes.handled, rig.outcomes.handled[mid]
        error_type, reason = rig.outcomes.dead[mid]
    assert error_type in ("DecodeError", "ValidationError"), (error_type, reason)
    assert reason.strip()
    assert rig.consumer.is_alive() and not rig.errors, rig.errors
    assert not rig.marker.exists()


def test_the_pickle_payload_is_armed(tmp_path: Path) -> None:
    """Prove the payload would be caught: unpickling it does create the marker."""
    proof = tmp_path / "proof.marker"
    for payload in pickle_payloads(str(proof)):
        pickle.loads(payload).close()  # deliberate: this is what hutch must never do
        assert proof.exists()
        proof.unlink()


# ---------------------------------------------------------------- typed consumer: Order
@HOSTILE_SETTINGS
@given(body=st.binary(max_size=4096), content_type=st.sampled_from(CONTENT_TYPES))
def test_random_bytes_are_dead_lettered(typed: Rig, body: bytes, content_type: str | None) -> None:
    _assert_dead_lettered(typed, typed.send(body, content_type))


@HOSTILE_SETTINGS
@given(
    # a missing or empty content type is accepted as JSON (many non-hutch publishers send none)
    content_type=st.sampled_from([c for c in CONTENT_TYPES if c and "json" not in c])
)
def test_valid_json_with_a_wrong_content_type_is_dead_lettered(
    typed: Rig, content_type: str
) -> None:
    body = Order(id=1, item="pen").model_dump_json().encode()
    _assert_dead_lettered(typed, typed.send(body, content_type))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@HOSTILE_SETTINGS
@given(value=json_values)
def test_json_of_the_wrong_shape_is_dead_lettered(typed: Rig, value: object) -> None:
    _assert_dead_lettered(typed, typed.send(json.dumps(value).encode(), "application/json"))


@HOSTILE_SETTINGS
@given(depth=st.integers(min_value=200, max_value=200_000), kind=st.sampled_from("[{"))
def test_deeply_nested_json_is_dead_lettered(typed: Rig, depth: int, kind: str) -> None:
    body = "[" * depth + "]" * depth if kind == "[" else '{"a":' * depth + "1" + "}" * depth
    _assert_dead_lettered(typed, typed.send(body.encode(), "application/json"))


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.integers(min_value=100_000, max_value=400_000))
def test_huge_json_is_dead_lettered(typed: Rig, items: int) -> None:
    body = json.dumps({"id": 1, "item": "x", "padding": list(range(items))}).encode()
    assert len(body) > 500_000
    huge = json.dumps({"id": 1, "item": "y" * items * 5}).encode()  # valid, huge string
    _assert_dead_lettered(typed, typed.send(body + b" garbage", "application/json"))
    _assert_dead_lettered(
        typed, typed.send(json.dumps([huge.decode()]).encode(), "application/json")
    )


def test_pickle_payloads_are_dead_lettered_never_executed(typed: Rig) -> None:
    for payload in pickle_payloads(str(typed.marker)):
        for content_type in CONTENT_TYPES:
            _assert_dead_lettered(typed, typed.send(payload, content_type))
    assert not typed.marker.exists()


def test_typed_consumer_is_still_up_and_handles_a_valid_order(typed: Rig) -> None:
    mid = typed.send(Order(id=7, item="ok").model_dump_json().encode(), "application/json")
    with typed.outcomes.lock:
        assert typed.outcomes.handled[mid] == Order(id=7, item="ok")
    assert typed.consumer.is_alive() and not typed.errors


# ------------------------------------------------------------- untyped consumer: no model
def test_untyped_consumer_never_unpickles(untyped: Rig) -> None:
    for payload in pickle_payloads(str(untyped.marker)):
        for content_type in CONTENT_TYPES:
            mid = untyped.send(payload, content_type)
            with untyped.outcomes.lock:
                if mid in untyped.outcomes.handled:
                    body = untyped.outcomes.handled[mid]
                    # raw bytes or text pass through untouched: data, never objects
                    assert isinstance(body, (bytes, str)), type(body)
                else:
                    assert untyped.outcomes.dead[mid][0] == "DecodeError"
            assert not untyped.marker.exists()
    assert untyped.consumer.is_alive() and not untyped.errors


@HOSTILE_SETTINGS
@given(depth=st.integers(min_value=2_000, max_value=200_000))
def test_untyped_consumer_dead_letters_deeply_nested_json(untyped: Rig, depth: int) -> None:
    mid = untyped.send(("[" * depth + "]" * depth).encode(), "application/json")
    _assert_dead_lettered(untyped, mid)


# ------------------------------------------------------------------------------ oversized
def test_body_over_max_message_size_is_refused_before_sending(
    amqp_url: str, unique_name: str
) -> None:
    limit = 1024 * 1024
    q = Queue(unique_name, durable=False, expires=60_000)
    with (
        Connection(amqp_url, max_message_size=limit) as conn,
        Publisher(conn, routing_key=q.name, declare=[q]) as pub,
    ):
        with pytest.raises(MessageTooLarge) as info:
            pub.publish(b"x" * (limit + 1))
        assert info.value.size == limit + 1 and info.value.limit == limit
        assert "max_message_size" in str(info.value)
        with pytest.raises(MessageTooLarge):
            pub.publish({"blob": "y" * limit})  # JSON encoding counts, not the object
        pub.publish(b"x" * limit)  # exactly the limit is fine
        ch = conn.channel()
        assert ch.message_count(q.name) == 1
        ch.delete_queue(q.name)


def test_default_max_message_size_is_16_mib() -> None:
    assert Connection("amqp://localhost/").settings.max_message_size == 16 * 1024 * 1024


def test_no_code_executing_decoder_anywhere_in_hutch() -> None:
    import hutch

    forbidden = (
        "import pickle",
        "pickle.load",
        "import marshal",
        "yaml.load(",
        "jsonpickle",
        "eval(",
        "exec(",
    )
    for path in Path(hutch.__file__).parent.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for needle in forbidden:
            assert needle not in text, (path, needle)


# ---------------------------------------------------------------------- WorkerPool worker
def test_worker_pool_dead_letters_hostile_bodies_and_stays_up(
    module_conn: Connection, marker: Path, unique_name: str
) -> None:
    from hutch import WorkerPool

    handled: list[Order] = []
    bodies: list[tuple[bytes, str | None]] = [
        (payload, content_type)
        for payload in pickle_payloads(str(marker))
        for content_type in ("application/python-pickle", "application/json", None)
    ]
    bodies += [
        (b"\xff\xfe\x00garbage", "application/json"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (b'{"id": "x", "item": 1}', "application/json"),
        (json.dumps({"id": 1, "item": "z" * 2_000_000}).encode() + b",", "application/json"),
        (Order(id=2, item="pen").model_dump_json().encode(), "text/plain"),
    ]
    q = Queue(unique_name, durable=False, expires=600_000)
    pool = WorkerPool(module_conn, queue=q, handler=handled.append, model=Order, concurrency=2)
    with pool, Publisher(module_conn, routing_key=q.name) as raw:
        for body, content_type in bodies:
            raw.publish(body, content_type=content_type)
        raw.publish(Order(id=1, item="ok").model_dump_json().encode(), content_type=None)
        assert wait_until(
            lambda: pool.stats.dead_lettered == len(bodies) and len(handled) == 1, 60
        ), pool.stats
        assert pool.is_running and pool.failure is None
    assert handled == [Order(id=1, item="ok")]
    assert not marker.exists()
    ch = module_conn.channel()
    assert ch.message_count(f"{unique_name}.dead") == len(bodies)
    dead = ch.get(f"{unique_name}.dead")
    assert dead is not None and dead.headers["x-hutch-error-type"] == "DecodeError"
    ch.delete_queue(f"{unique_name}.dead")
