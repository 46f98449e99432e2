"""Exclusive queues on the memory broker and on RabbitMQ: generated steps on two connections.

An exclusive queue belongs to the connection that declared it. Hypothesis draws steps for
two connections: declares (exclusive or not, passive or not), deletes, purges, binds,
unbinds, gets, consumes, publishes, and closes of a whole connection. Each step runs on a
fresh channel of its connection on both brokers, and its answer is compared: the ``-ok``
values, or the channel error's reply code and text (405 RESOURCE_LOCKED for another
connection's queue, 404 once a closed connection took its queues with it). At the end a
third connection looks at every queue name. A disagreement is a bug in the memory broker.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Protocol

import pika
import pika.exceptions
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from hutch._exceptions import ChannelClosed
from hutch._memory import Broker, MemoryChannel, MemoryConnection
from tests.integration.comparing import compare_settings, compare_timeout, flag, rare

pytestmark = [
    compare_timeout(300),
    pytest.mark.rabbitmq_only("compares the memory broker with RabbitMQ itself"),
]

CONNECTIONS = ("A", "B")
QUEUES = 2
Step = tuple[Any, ...]
Outcome = tuple[Any, ...]

_KINDS = (
    *("declare", "declare", "declare", "delete", "purge", "bind", "unbind"),
    *("get", "get", "consume", "publish", "publish", "close"),
)


@st.composite
def _steps(draw: st.DrawFn) -> list[Step]:
    # each queue declared first (by either connection, exclusive or not), so that most of
    # what follows meets a queue rather than a 404
    steps: list[Step] = [
        ("declare", draw(st.sampled_from(CONNECTIONS)), queue, draw(flag), False, False)
        for queue in range(QUEUES)
    ]
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(_KINDS))
        conn = draw(st.sampled_from(CONNECTIONS))
        queue = draw(st.integers(0, QUEUES - 1))
        if kind == "declare":  # exclusive, passive, durable
            steps.append((kind, conn, queue, draw(flag), draw(rare), draw(rare)))
        elif kind in ("delete", "consume"):  # if_empty; an exclusive consumer
            steps.append((kind, conn, queue, draw(rare)))
        elif kind == "close":
            steps.append((kind, conn))
        else:
            steps.append((kind, conn, queue))
    return steps


class Side(Protocol):
    """One broker's primitives; a step opens a channel of connection ``conn`` for itself."""

    def declare(
        self, conn: str, queue: str, exclusive: bool, passive: bool, durable: bool
    ) -> Outcome: ...
    def delete(self, conn: str, queue: str, if_empty: bool) -> Outcome: ...
    def purge(self, conn: str, queue: str) -> Outcome: ...
    def bind(self, conn: str, queue: str, bind: bool) -> Outcome: ...
    def get(self, conn: str, queue: str) -> Outcome: ...
    def consume(self, conn: str, queue: str, exclusive: bool) -> Outcome: ...
    def publish(self, conn: str, queue: str, body: bytes) -> Outcome: ...
    def close(self, conn: str) -> Outcome: ...
    def look(self, queue: str) -> Outcome: ...


def run_step(side: Side, step: Step, names: list[str], n: int) -> Outcome:
    """Run ``step`` on one broker; both brokers share these semantics."""
    kind, conn = step[0], step[1]
    if kind == "close":
        return side.close(conn)
    queue = names[step[2]]
    if kind == "declare":
        return side.declare(conn, queue, *step[3:])
    if kind == "delete":
        return side.delete(conn, queue, step[3])
    if kind == "purge":
        return side.purge(conn, queue)
    if kind in ("bind", "unbind"):
        return side.bind(conn, queue, kind == "bind")
    if kind == "get":
        return side.get(conn, queue)
    if kind == "consume":
        return side.consume(conn, queue, step[3])
    return side.publish(conn, queue, f"m{n}".encode())


class Rabbit:
    """Connections A and B (and a third that only looks) on RabbitMQ, through raw pika."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conns: dict[str, pika.BlockingConnection] = {}
        #: the exclusive queues each connection declared: closing it deletes them
        self.owned: dict[str, set[str]] = {c: set() for c in CONNECTIONS}

    def _conn(self, conn: str) -> pika.BlockingConnection:
        c = self.conns.get(conn)
        if c is None or not c.is_open:
            c = self.conns[conn] = pika.BlockingConnection(pika.URLParameters(self.url))
        return c

    def _run(self, conn: str, op: Any) -> Outcome:
        ch = self._conn(conn).channel()
        try:
            result: Outcome = ("ok", *op(ch))
        except pika.exceptions.ChannelClosedByBroker as exc:
            return ("error", exc.reply_code, exc.reply_text)
        if ch.is_open:
            ch.close()
        return result

    def declare(
        self, conn: str, queue: str, exclusive: bool, passive: bool, durable: bool
    ) -> Outcome:
        def op(ch: Any) -> tuple[Any, ...]:
            m = ch.queue_declare(
                queue, passive=passive, durable=durable, exclusive=exclusive
            ).method
            return (m.queue, m.message_count, m.consumer_count)

        result = self._run(conn, op)
        if result[0] == "ok" and exclusive and not passive:
            self.owned[conn].add(queue)
        return result

    def delete(self, conn: str, queue: str, if_empty: bool) -> Outcome:
        result = self._run(
            conn, lambda ch: (ch.queue_delete(queue, if_empty=if_empty).method.message_count,)
        )
        if result[0] == "ok":
            self.owned[conn].discard(queue)
        return result

    def purge(self, conn: str, queue: str) -> Outcome:
        return self._run(conn, lambda ch: (ch.queue_purge(queue).method.message_count,))

    def bind(self, conn: str, queue: str, bind: bool) -> Outcome:
        def op(ch: Any) -> tuple[Any, ...]:
            if bind:
                ch.queue_bind(queue, "amq.direct", routing_key=queue)
            else:
                ch.queue_unbind(queue, "amq.direct", routing_key=queue)
            return ()

        return self._run(conn, op)

    def get(self, conn: str, queue: str) -> Outcome:
        def op(ch: Any) -> tuple[Any, ...]:
            got, _props, body = ch.basic_get(queue, auto_ack=True)
            return () if got is None else (body, got.message_count)

        return self._run(conn, op)

    def consume(self, conn: str, queue: str, exclusive: bool) -> Outcome:
        # consume and cancel at once; what it was sent goes back when the channel closes
        # (whether anything was sent before the cancel is a race, so gets ignore redelivered)
        def op(ch: Any) -> tuple[Any, ...]:
            tag = ch.basic_consume(queue, lambda *_: None, exclusive=exclusive)
            ch.basic_cancel(tag)
            return ()

        return self._run(conn, op)

    def publish(self, conn: str, queue: str, body: bytes) -> Outcome:
        def op(ch: Any) -> tuple[Any, ...]:
            ch.confirm_delivery()  # queued (or dropped) before the next step looks
            ch.basic_publish("", queue, body)
            return ()

        return self._run(conn, op)

    def close(self, conn: str) -> Outcome:
        c = self.conns.pop(conn, None)
        if c is not None and c.is_open:
            c.close()
        # RabbitMQ deletes the closed connection's exclusive queues just after close-ok:
        # until it has, another connection still gets a 405 for them, not a 404
        going, self.owned[conn] = self.owned[conn], set()
        deadline = time.monotonic() + 5
        while going and time.monotonic() < deadline:
            going = {q for q in going if self.look(q)[:2] != ("error", 404)}
            if going:
                time.sleep(0.01)
        return ("ok",)

    def look(self, queue: str) -> Outcome:
        return self._run(
            "look",
            lambda ch: (ch.queue_declare(queue, passive=True).method.message_count,),
        )

    def shut(self, names: list[str]) -> None:
        for conn in CONNECTIONS:
            self.close(conn)
        for queue in names:
            self._run("look", lambda ch, q=queue: (ch.queue_delete(q),))
        self.conns["look"].close()


class Memory:
    """The same connections on a private memory broker."""

    def __init__(self) -> None:
        self.broker = Broker()
        self.conns: dict[str, MemoryConnection] = {}

    def _conn(self, conn: str) -> MemoryConnection:
        c = self.conns.get(conn)
        if c is None:
            c = self.conns[conn] = self.broker.connect(threaded=False)
        return c

    def _run(self, conn: str, op: Any) -> Outcome:
        ch: MemoryChannel = self._conn(conn).channel()
        try:
            result: Outcome = ("ok", *op(ch))
        except ChannelClosed as exc:
            return ("error", exc.reply_code, exc.reply_text)
        if not ch.closed:
            ch.close()
        return result

    def declare(
        self, conn: str, queue: str, exclusive: bool, passive: bool, durable: bool
    ) -> Outcome:
        return self._run(
            conn,
            lambda ch: ch.queue_declare(
                queue, passive=passive, durable=durable, exclusive=exclusive
            ),
        )

    def delete(self, conn: str, queue: str, if_empty: bool) -> Outcome:
        return self._run(conn, lambda ch: (ch.queue_delete(queue, if_empty=if_empty),))

    def purge(self, conn: str, queue: str) -> Outcome:
        return self._run(conn, lambda ch: (ch.queue_purge(queue),))

    def bind(self, conn: str, queue: str, bind: bool) -> Outcome:
        def op(ch: MemoryChannel) -> tuple[Any, ...]:
            if bind:
                ch.queue_bind(queue, "amq.direct", queue)
            else:
                ch.queue_unbind(queue, "amq.direct", queue)
            return ()

        return self._run(conn, op)

    def get(self, conn: str, queue: str) -> Outcome:
        def op(ch: MemoryChannel) -> tuple[Any, ...]:
            got = ch.basic_get(queue, no_ack=True)
            return () if got is None else (got.body, got.message_count)

        return self._run(conn, op)

    def consume(self, conn: str, queue: str, exclusive: bool) -> Outcome:
        def op(ch: MemoryChannel) -> tuple[Any, ...]:
            tag = ch.basic_consume(queue, lambda _d: None, exclusive=exclusive)
            ch.basic_cancel(tag)
            return ()

        return self._run(conn, op)

    def publish(self, conn: str, queue: str, body: bytes) -> Outcome:
        def op(ch: MemoryChannel) -> tuple[Any, ...]:
            ch.basic_publish("", queue, body)
            return ()

        return self._run(conn, op)

    def close(self, conn: str) -> Outcome:
        c = self.conns.pop(conn, None)
        if c is not None:
            c.close()
        return ("ok",)

    def look(self, queue: str) -> Outcome:
        return self._run("look", lambda ch: (ch.queue_declare(queue, passive=True)[1],))

    def shut(self) -> None:
        self.broker.close()


@compare_settings(120)
@given(steps=_steps())
# what hypothesis found once, kept: removing a binding that does not exist is ok for any
# connection, even on another connection's exclusive queue (RabbitMQ checks the access
# only when there is a binding to remove)
@example(steps=[("declare", "A", 1, True, False, False), ("unbind", "B", 1)])
def test_exclusive_queues_match_rabbitmq(amqp_url: str, steps: list[Step]) -> None:
    prefix = f"excl-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}-{i}" for i in range(QUEUES)]
    rabbit, memory = Rabbit(amqp_url), Memory()
    try:
        for n, step in enumerate(steps):
            want = run_step(rabbit, step, names, n)
            event(f"{step[0]}: " + (f"error {want[1]}" if want[0] == "error" else "ok"))
            got = run_step(memory, step, names, n)
            assert got == want, (n, step, steps)
        for queue in names:
            assert memory.look(queue) == rabbit.look(queue), (queue, steps)
    finally:
        memory.shut()
        rabbit.shut(names)
