"""Queue expiry (``x-expires``) on the memory broker and on RabbitMQ, on a timed grid.

RabbitMQ deletes a queue that has had no consumer for ``x-expires`` ms, counted from its
declaration, its last passive or full redeclare, its last ``basic.get`` and the cancel
of its last consumer; publishes, purges and bindings do not count (rabbit_amqqueue_process,
``ensure_expiry_timer``). Hypothesis draws scenarios of such actions, one every ``STEP``
seconds, and runs each scenario on both brokers (the memory broker's clock follows the
real one); every action's answer is compared, then, once every expiry has had time to
happen, whether each queue still exists (a binding probes it without counting as use).

Each action runs at most once per grid point and every expiry value puts a queue's
deadline halfway between two grid points, so RabbitMQ's timer jitter does not decide the
outcome; a scenario whose measured times come closer than ``MARGIN`` to a deadline is not
compared.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from hutch._exceptions import ChannelClosed
from hutch._memory import Broker, MemoryChannel, MemoryConnection
from tests.integration.comparing import compare_settings, compare_timeout

pytestmark = [
    compare_timeout(300),
    pytest.mark.rabbitmq_only("compares the memory broker with RabbitMQ itself"),
]

STEP = 0.080
#: x-expires values (ms): each is an odd multiple of STEP / 2, so a deadline falls between
#: two grid points
EXPIRES = (200, 360)
MARGIN = 0.025
ACTIONS = ("declare", "passive", "get", "consume", "cancel", "publish", "purge", "probe")
#: the actions after which RabbitMQ counts a queue's expiry from the start again
RESETS = frozenset({"declare", "passive", "get", "cancel"})
SCENARIOS_PER_EXAMPLE = 6
CLOCK0 = 1_700_000_000.0
#: scenarios compared and skipped in this process
compared: dict[str, int] = {"scenarios": 0, "skipped": 0}

Action = tuple[int, str, int]  # grid point, action, queue


@dataclass(frozen=True)
class Scenario:
    expires: tuple[int, ...]  # per queue
    actions: tuple[Action, ...]


@st.composite
def _scenario(draw: st.DrawFn) -> Scenario:
    expires = tuple(draw(st.lists(st.sampled_from(EXPIRES), min_size=1, max_size=2)))
    points = draw(st.lists(st.integers(1, 9), min_size=1, max_size=7, unique=True))
    actions = tuple(
        (point, draw(st.sampled_from(ACTIONS)), draw(st.integers(0, len(expires) - 1)))
        for point in sorted(points)
    )
    return Scenario(expires, actions)


def _ambiguous(sc: Scenario, times: list[float], declared: list[float]) -> bool:
    """Whether an action ran too close to a moment at which a queue may expire.

    ``times[i]`` is when ``sc.actions[i]`` ran, ``declared[q]`` when queue ``q`` was.
    """
    deadlines = [at + e / 1000 for at, e in zip(declared, sc.expires, strict=True)]
    for (_point, action, queue), at in zip(sc.actions, times, strict=True):
        if action in RESETS:
            deadlines.append(at + sc.expires[queue] / 1000)
    return any(abs(t - d) < MARGIN for t in times for d in deadlines)


@dataclass
class Rabbit:
    url: str
    conn: pika.BlockingConnection = field(init=False)
    ops: Any = None
    consumers: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(self.url))

    def _ch(self) -> Any:
        if self.ops is None or not self.ops.is_open:
            self.ops = self.conn.channel()
            self.ops.confirm_delivery()
        return self.ops

    def run(self, action: str, queue: str, expires: int) -> tuple[Any, ...]:
        try:
            return ("ok", *self._run(action, queue, expires))
        except pika.exceptions.ChannelClosedByBroker as exc:
            return ("error", exc.reply_code)

    def _run(self, action: str, queue: str, expires: int) -> tuple[Any, ...]:
        if action in ("declare", "passive"):
            m = (
                self._ch()
                .queue_declare(queue, passive=action == "passive", arguments={"x-expires": expires})
                .method
            )
            return (m.message_count, m.consumer_count)
        if action == "get":
            got, _props, body = self._ch().basic_get(queue, auto_ack=True)
            return (None if got is None else body,)
        if action == "consume":
            ch = self.conn.channel()
            try:
                ch.basic_consume(queue, lambda *_: None, auto_ack=True)
            finally:
                if ch.is_open:
                    self.consumers.setdefault(queue, []).append(ch)
            return ()
        if action == "cancel":
            held = self.consumers.get(queue)
            if held:
                held.pop(0).close()  # its consumer goes with it
            return ()
        if action == "publish":
            self._ch().basic_publish("", queue, b"m")
            return ()
        if action == "purge":
            return (self._ch().queue_purge(queue).method.message_count,)
        # probe: a binding needs the queue, and does not count as its use
        self._ch().queue_bind(queue, "amq.direct", routing_key="probe")
        self._ch().queue_unbind(queue, "amq.direct", routing_key="probe")
        return ()

    def shut(self, names: list[str]) -> None:
        for held in self.consumers.values():
            for ch in held:
                if ch.is_open:
                    ch.close()
        for name in names:
            self._ch().queue_delete(name)
        self.conn.close()


class Memory:
    def __init__(self, clock: list[float]) -> None:
        self.broker = Broker(clock=lambda: clock[0])
        self.conn: MemoryConnection = self.broker.connect(threaded=False)
        self.ops: MemoryChannel | None = None
        self.consumers: dict[str, list[MemoryChannel]] = {}

    def _ch(self) -> MemoryChannel:
        if self.ops is None or self.ops.closed:
            self.ops = self.conn.channel()
        return self.ops

    def run(self, action: str, queue: str, expires: int) -> tuple[Any, ...]:
        try:
            result: tuple[Any, ...] = ("ok", *self._run(action, queue, expires))
        except ChannelClosed as exc:
            result = ("error", exc.reply_code)
        self.conn.run_pending()
        return result

    def _run(self, action: str, queue: str, expires: int) -> tuple[Any, ...]:
        if action in ("declare", "passive"):
            _name, ready, consumers = self._ch().queue_declare(
                queue, passive=action == "passive", arguments={"x-expires": expires}
            )
            return (ready, consumers)
        if action == "get":
            got = self._ch().basic_get(queue, no_ack=True)
            return (None if got is None else got.body,)
        if action == "consume":
            ch = self.conn.channel()
            try:
                ch.basic_consume(queue, lambda _d: None, no_ack=True)
            finally:
                if not ch.closed:
                    self.consumers.setdefault(queue, []).append(ch)
            return ()
        if action == "cancel":
            held = self.consumers.get(queue)
            if held:
                held.pop(0).close()
            return ()
        if action == "publish":
            self._ch().basic_publish("", queue, b"m")
            return ()
        if action == "purge":
            return (self._ch().queue_purge(queue),)
        self._ch().queue_bind(queue, "amq.direct", "probe")
        self._ch().queue_unbind(queue, "amq.direct", "probe")
        return ()


@compare_settings(15)
@given(
    scenarios=st.lists(_scenario(), min_size=SCENARIOS_PER_EXAMPLE, max_size=SCENARIOS_PER_EXAMPLE)
)
def test_queue_expiry_matches_rabbitmq(amqp_url: str, scenarios: list[Scenario]) -> None:
    prefix = f"expires-{uuid.uuid4().hex[:8]}"
    names = [
        [f"{prefix}-{s}-{q}" for q in range(len(sc.expires))] for s, sc in enumerate(scenarios)
    ]
    clock = [CLOCK0]
    rabbit, memory = Rabbit(amqp_url), Memory(clock)
    answers: list[list[tuple[Any, Any]]] = [[] for _ in scenarios]
    times: list[list[float]] = [[] for _ in scenarios]  # in action order (points are sorted)
    try:
        start = time.time()
        declared: list[list[float]] = [[] for _ in scenarios]
        for s, sc in enumerate(scenarios):
            for q, expires in enumerate(sc.expires):
                now = time.time()
                declared[s].append(now)
                clock[0] = CLOCK0 + (now - start)
                rabbit.run("declare", names[s][q], expires)
                memory.run("declare", names[s][q], expires)
        for point in range(1, 10):
            time.sleep(max(0.0, start + point * STEP - time.time()))
            for s, sc in enumerate(scenarios):
                for at, action, q in sc.actions:
                    if at != point:
                        continue
                    now = time.time()
                    times[s].append(now)
                    clock[0] = CLOCK0 + (now - start)
                    want = rabbit.run(action, names[s][q], sc.expires[q])
                    got = memory.run(action, names[s][q], sc.expires[q])
                    answers[s].append((want, got))
        # every expiry due has happened on both brokers (the memory clock jumps there)
        time.sleep(max(0.0, start + 10 * STEP + max(EXPIRES) / 1000 - time.time()))
        now = time.time()
        clock[0] = CLOCK0 + (now - start)
        for s, sc in enumerate(scenarios):
            if _ambiguous(sc, times[s], declared[s]):
                event("skipped: too close to a deadline to order")
                compared["skipped"] += 1
                continue
            event("compared")
            compared["scenarios"] += 1
            for want, got in answers[s]:
                assert got == want, sc
            for q in range(len(sc.expires)):
                # the final look: does the queue still exist?
                want = rabbit.run("probe", names[s][q], sc.expires[q])
                got = memory.run("probe", names[s][q], sc.expires[q])
                assert got == want, (q, sc)
    finally:
        memory.broker.close()
        rabbit.shut([n for ns in names for n in ns])
