"""Direct reply-to on both brokers: generated sequences of the steps an RPC takes.

Consuming ``amq.rabbitmq.reply-to`` (with and without auto-ack), publishing a request whose
``reply_to`` is that pseudo-queue, a server taking the request and replying to the name the
broker put in its ``reply_to``, replies to a name nobody consumes, cancels and channel
closes. Every step's answer (a reply token is shown as ``*``) and every delivery on either
channel are compared. A disagreement is a bug in the memory broker.
"""

from __future__ import annotations

import functools
import re
import uuid
from typing import Any

import pika
import pika.exceptions
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from hutch._exceptions import ChannelClosed
from hutch._memory import Broker, MemoryChannel, Properties
from tests.integration.comparing import compare_settings, compare_timeout, wait_until_quiet

pytestmark = [
    compare_timeout(300),
    pytest.mark.rabbitmq_only("compares the memory broker with RabbitMQ itself"),
]

REPLY_TO = "amq.rabbitmq.reply-to"
_CHANNELS = ("A", "B")
_TOKEN = re.compile(r"amq\.rabbitmq\.reply-to\.\S+")
Step = tuple[Any, ...]
Outcome = tuple[Any, ...]


def _masked(value: Any) -> Any:
    """``value`` with every reply token replaced by ``*`` (each broker makes its own)."""
    if isinstance(value, str):
        return _TOKEN.sub(f"{REPLY_TO}.*", value)
    if isinstance(value, tuple):
        return tuple(_masked(v) for v in value)
    return value


def _asking(n: int, channel: str) -> str:
    """A request's correlation id: its step, and its channel in the parity."""
    return str(2 * n + _CHANNELS.index(channel))


@st.composite
def _steps(draw: st.DrawFn) -> list[Step]:
    steps: list[Step] = []
    if draw(st.booleans()):  # often start from a call that works: the rest then varies it
        steps += [("consume", "A", True), ("request", "A", False), ("serve", "B")]
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(_KINDS))
        ch = draw(st.sampled_from(_CHANNELS))
        if kind in ("consume", "request", "bogus", "declare"):
            steps.append((kind, ch, draw(st.sampled_from([False, True, True]))))
        else:
            steps.append((kind, ch))
    return steps


_KINDS = (
    *("consume", "consume", "request", "request", "request", "serve", "serve"),
    *("cancel", "bogus", "declare", "declare_reply_name", "close"),
)


class _Side:
    """Channels A and B, a queue of requests, and what each channel's reply consumer got.

    The step semantics are here, once; each broker supplies the primitives.
    """

    queue: str
    events: dict[str, list[Any]]
    #: the reply_to of the last request served (a name with the requester's token)
    reply_name = f"{REPLY_TO}.none"
    #: the channel that sent that request
    reply_owner = ""

    def asker(self, name: str) -> str:
        """The channel to declare the reply name on: not its owner's.

        RabbitMQ 3.10 asks the owning channel whether the name is live, and a channel that
        asks itself deadlocks: the connection closes with 541 INTERNAL_ERROR. Not imitated.
        """
        return ("B" if name == "A" else "A") if name == self.reply_owner else name

    def take_events(self) -> dict[str, list[Any]]:
        events, self.events = self.events, {c: [] for c in _CHANNELS}
        return {c: [_masked(e) for e in got] for c, got in events.items()}

    def step(self, step: Step, n: int) -> Outcome:
        """Do ``step`` (the ``n``-th); what it answered, without its errors."""
        kind, name = step[0], step[1]
        if kind == "consume":
            self.consume(name, f"reply-{n}", no_ack=step[2])
        elif kind == "cancel":
            self.cancel_all(name)
        elif kind == "request":
            self.publish(name, self.queue, f"q{n}".encode(), _asking(n, name), step[2])
        elif kind == "serve":
            got = self.take_request(name)
            if got is None:
                return (None,)
            body, reply_to, correlation_id = got
            self.publish(name, reply_to, b"re:" + body, None, False)
            self.reply_name = reply_to
            self.reply_owner = _CHANNELS[int(correlation_id or 0) % 2]
            return got
        elif kind == "bogus":
            self.publish(name, f"{REPLY_TO}.bogus", b"lost", None, step[2])
        elif kind == "declare":
            return self.declare(name, REPLY_TO, passive=step[2])
        elif kind == "declare_reply_name":
            return self.declare(self.asker(name), self.reply_name, passive=True)
        else:
            self.close(name)
        return ()

    def consume(self, name: str, tag: str, *, no_ack: bool) -> None:
        raise NotImplementedError

    def cancel_all(self, name: str) -> None:
        raise NotImplementedError

    def publish(
        self, name: str, key: str, body: bytes, asking: str | None, mandatory: bool
    ) -> None:
        """Publish on the default exchange; ``asking``: a request's correlation id."""
        raise NotImplementedError

    def take_request(self, name: str) -> tuple[bytes, str, str | None] | None:
        """The next request (body, reply_to, correlation id), auto-acked."""
        raise NotImplementedError

    def declare(self, name: str, queue: str, *, passive: bool) -> Outcome:
        raise NotImplementedError

    def close(self, name: str) -> None:
        raise NotImplementedError


class Rabbit(_Side):
    def __init__(self, url: str, queue: str) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.queue = queue
        self.channels: dict[str, Any] = {}
        self.events = {c: [] for c in _CHANNELS}
        self.channel("server").queue_declare(queue, auto_delete=False)

    def channel(self, name: str) -> Any:
        ch = self.channels.get(name)
        if ch is None or ch.is_closed:
            ch = self.conn.channel()
            ch.confirm_delivery()
            self.channels[name] = ch
        return ch

    def _on_reply(self, name: str, _ch: Any, method: Any, _props: Any, body: bytes) -> None:
        self.events[name].append((body, method.exchange, method.routing_key))

    def run(self, step: Step, n: int) -> Outcome:
        try:
            result: Outcome = ("ok", *self.step(step, n))
        except pika.exceptions.ChannelClosedByBroker as exc:
            result = ("error", exc.reply_code, exc.reply_text)
        except pika.exceptions.UnroutableError:
            result = ("returned",)
        wait_until_quiet(self.conn, self.events)
        masked: Outcome = _masked(result)
        return masked

    def take_events_like(self, expected: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """What each channel got; if not ``expected``, after giving RabbitMQ longer first
        (a loaded machine can hold a delivery past the short quiet window)."""
        if {c: [_masked(e) for e in got] for c, got in self.events.items()} != expected:
            wait_until_quiet(self.conn, self.events, 0.5)
        return self.take_events()

    def consume(self, name: str, tag: str, *, no_ack: bool) -> None:
        on_reply = functools.partial(self._on_reply, name)
        self.channel(name).basic_consume(REPLY_TO, on_reply, auto_ack=no_ack, consumer_tag=tag)

    def cancel_all(self, name: str) -> None:
        ch = self.channel(name)
        for tag in list(ch.consumer_tags):
            ch.basic_cancel(tag)

    def publish(
        self, name: str, key: str, body: bytes, asking: str | None, mandatory: bool
    ) -> None:
        props = pika.BasicProperties(
            reply_to=None if asking is None else REPLY_TO, correlation_id=asking
        )
        self.channel(name).basic_publish("", key, body, props, mandatory=mandatory)

    def take_request(self, name: str) -> tuple[bytes, str, str | None] | None:
        got, props, body = self.channel(name).basic_get(self.queue, auto_ack=True)
        return None if got is None else (body, props.reply_to, props.correlation_id)

    def declare(self, name: str, queue: str, *, passive: bool) -> Outcome:
        frame = self.channel(name).queue_declare(queue, passive=passive)
        return (frame.method.queue, frame.method.message_count, frame.method.consumer_count)

    def close(self, name: str) -> None:
        self.channel(name).close()

    def shut(self) -> None:
        self.channel("server").queue_delete(self.queue)
        self.conn.close()


class Memory(_Side):
    def __init__(self, queue: str) -> None:
        self.broker = Broker()
        self.conn = self.broker.connect(threaded=False)
        self.queue = queue
        self.channels: dict[str, MemoryChannel] = {}
        self.events = {c: [] for c in _CHANNELS}
        self.returned: list[Any] = []
        self.channel("server").queue_declare(queue)

    def channel(self, name: str) -> MemoryChannel:
        ch = self.channels.get(name)
        if ch is None or ch.closed:
            ch = self.conn.channel()
            ch.confirm_select(lambda _seq, _ok: None)
            ch.on_return = self.returned.append
            self.channels[name] = ch
        return ch

    def _on_reply(self, name: str, delivery: Any) -> None:
        self.events[name].append((delivery.body, delivery.exchange, delivery.routing_key))

    def run(self, step: Step, n: int) -> Outcome:
        try:
            result: Outcome = ("ok", *self.step(step, n))
        except ChannelClosed as exc:
            result = ("error", exc.reply_code, exc.reply_text)
        self.conn.run_pending()
        if self.returned:
            self.returned.clear()
            result = ("returned",)
        masked: Outcome = _masked(result)
        return masked

    def consume(self, name: str, tag: str, *, no_ack: bool) -> None:
        on_reply = functools.partial(self._on_reply, name)
        self.channel(name).basic_consume(REPLY_TO, on_reply, no_ack=no_ack, consumer_tag=tag)

    def cancel_all(self, name: str) -> None:
        ch = self.channel(name)
        for tag in list(ch.consumers):
            ch.basic_cancel(tag)

    def publish(
        self, name: str, key: str, body: bytes, asking: str | None, mandatory: bool
    ) -> None:
        props = Properties(reply_to=None if asking is None else REPLY_TO, correlation_id=asking)
        self.channel(name).basic_publish("", key, body, props, mandatory=mandatory)

    def take_request(self, name: str) -> tuple[bytes, str, str | None] | None:
        got = self.channel(name).basic_get(self.queue, no_ack=True)
        if got is None:
            return None
        return (got.body, got.properties.reply_to or "", got.properties.correlation_id)

    def declare(self, name: str, queue: str, *, passive: bool) -> Outcome:
        return self.channel(name).queue_declare(queue, passive=passive)

    def close(self, name: str) -> None:
        self.channel(name).close()

    def shut(self) -> None:
        self.broker.close()


@compare_settings(60)
@given(steps=_steps())
# found once, kept: the pseudo-queue's consumer count; a second reply consumer
@example(steps=[("consume", "A", True), ("declare", "A", True), ("consume", "A", True)])
def test_direct_reply_to_matches_rabbitmq(amqp_url: str, steps: list[Step]) -> None:
    queue = f"rpc-{uuid.uuid4().hex[:8]}"
    rabbit, memory = Rabbit(amqp_url, queue), Memory(queue)
    try:
        for n, step in enumerate(steps):
            got_rabbit, got_memory = rabbit.run(step, n), memory.run(step, n)
            assert got_memory == got_rabbit, (n, step)
            expected = memory.take_events()
            assert expected == rabbit.take_events_like(expected), (n, step)
            event(f"{step[0]}: {got_rabbit[0]}")
    finally:
        rabbit.shut()
        memory.shut()
