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
from tests.integration.comparing import compare_settings

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.rabbitmq_only("compares the memory broker with RabbitMQ itself"),
]

REPLY_TO = "amq.rabbitmq.reply-to"
QUIET = 0.03
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
    """Channels A and B, a queue of requests, and what each channel's reply consumer got."""

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
            result = ("ok", *self._run(step, n))
        except pika.exceptions.ChannelClosedByBroker as exc:
            result = ("error", exc.reply_code, exc.reply_text)
        except pika.exceptions.UnroutableError:
            result = ("returned",)
        while True:
            before = sum(map(len, self.events.values()))
            self.conn.process_data_events(time_limit=QUIET)
            if sum(map(len, self.events.values())) == before:
                masked: Outcome = _masked(result)
                return masked

    def _run(self, step: Step, n: int) -> Outcome:
        kind, name = step[0], step[1]
        if kind == "declare_reply_name":
            name = self.asker(name)
        ch = self.channel(name)
        if kind == "consume":
            ch.basic_consume(
                REPLY_TO,
                functools.partial(self._on_reply, name),
                auto_ack=step[2],
                consumer_tag=f"reply-{n}",
            )
            return ()
        if kind == "cancel":
            for tag in list(ch.consumer_tags):
                ch.basic_cancel(tag)
            return ()
        if kind == "request":
            props = pika.BasicProperties(reply_to=REPLY_TO, correlation_id=_asking(n, name))
            ch.basic_publish("", self.queue, f"q{n}".encode(), props, mandatory=step[2])
            return ()
        if kind == "serve":
            got, props, body = ch.basic_get(self.queue, auto_ack=True)
            if got is None:
                return (None,)
            ch.basic_publish("", props.reply_to, b"re:" + body)
            self.reply_name = props.reply_to
            self.reply_owner = _CHANNELS[int(props.correlation_id) % 2]
            return (body, props.reply_to, props.correlation_id)
        if kind == "bogus":
            ch.basic_publish("", f"{REPLY_TO}.bogus", b"lost", mandatory=step[2])
            return ()
        if kind == "declare":
            frame = ch.queue_declare(REPLY_TO, passive=step[2])
            return (frame.method.queue, frame.method.message_count, frame.method.consumer_count)
        if kind == "declare_reply_name":
            frame = ch.queue_declare(self.reply_name, passive=True)
            return (frame.method.queue, frame.method.message_count, frame.method.consumer_count)
        ch.close()
        return ()

    def close(self) -> None:
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
            result = ("ok", *self._run(step, n))
        except ChannelClosed as exc:
            result = ("error", exc.reply_code, exc.reply_text)
        self.conn.run_pending()
        if self.returned:
            self.returned.clear()
            result = ("returned",)
        masked: Outcome = _masked(result)
        return masked

    def _run(self, step: Step, n: int) -> Outcome:
        kind, name = step[0], step[1]
        if kind == "declare_reply_name":
            name = self.asker(name)
        ch = self.channel(name)
        if kind == "consume":
            ch.basic_consume(
                REPLY_TO,
                functools.partial(self._on_reply, name),
                no_ack=step[2],
                consumer_tag=f"reply-{n}",
            )
            return ()
        if kind == "cancel":
            for tag in list(ch.consumers):
                ch.basic_cancel(tag)
            return ()
        if kind == "request":
            props = Properties(reply_to=REPLY_TO, correlation_id=_asking(n, name))
            ch.basic_publish("", self.queue, f"q{n}".encode(), props, mandatory=step[2])
            return ()
        if kind == "serve":
            got = ch.basic_get(self.queue, no_ack=True)
            if got is None:
                return (None,)
            reply_to = got.properties.reply_to or ""
            ch.basic_publish("", reply_to, b"re:" + got.body)
            self.reply_name = reply_to
            self.reply_owner = _CHANNELS[int(got.properties.correlation_id or 0) % 2]
            return (got.body, reply_to, got.properties.correlation_id)
        if kind == "bogus":
            ch.basic_publish("", f"{REPLY_TO}.bogus", b"lost", mandatory=step[2])
            return ()
        if kind == "declare":
            return ch.queue_declare(REPLY_TO, passive=step[2])
        if kind == "declare_reply_name":
            return ch.queue_declare(self.reply_name, passive=True)
        ch.close()
        return ()

    def close(self) -> None:
        self.broker.close()


@compare_settings(80)
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
            assert memory.take_events() == rabbit.take_events(), (n, step)
            event(f"{step[0]}: {got_rabbit[0]}")
    finally:
        rabbit.close()
        memory.close()
