"""Virtual time against RabbitMQ's real time: delayed messages and a consumer's timeout.

Hypothesis draws scenarios of delayed publishes (``Publisher.publish(delay=...)``, which
goes through RabbitMQ's TTL and dead-lettering) read by ``Subscriber.messages(timeout=...,
limit=...)``. Each runs through hutch on RabbitMQ, where every wait is slept, and on a
fresh memory broker on virtual time, where time jumps to each delay's expiry and to the
consumer's timeout: the messages the consumer got, in order, and those left in the queue
must be the same.

Delays and the consumer's timeout sit on a grid ``GRID`` seconds apart, the timeout half
way between two grid points, and the first message is never delayed (the consumer's
timeout then counts from its arrival), so RabbitMQ's timer jitter and the time publishing
takes do not decide the outcome.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hutch
from hutch import Publisher, Queue, Subscriber
from hutch._memory import forget_broker
from tests.integration.comparing import compare_settings, compare_timeout

pytestmark = [
    compare_timeout(300),
    pytest.mark.rabbitmq_only("compares the memory broker with RabbitMQ itself"),
]

GRID = 0.2
SLOTS = 4  # delays of 0, 1, 2 or 3 grid steps


@dataclass(frozen=True)
class Scenario:
    slots: tuple[int, ...]  # each message's delay in grid steps; the first is 0
    idle: int  # the consumer stops after idle + 1/2 grid steps without a message
    limit: int | None


@st.composite
def _scenario(draw: st.DrawFn) -> Scenario:
    rest = draw(st.lists(st.integers(0, SLOTS - 1), max_size=4))
    slots = (0, *rest)
    limit = draw(st.one_of(st.none(), st.integers(1, len(slots))))
    return Scenario(slots, draw(st.integers(1, 2)), limit)


def _run(url: str, sc: Scenario) -> tuple[list[int], list[int]]:
    """Received (in order) and left in the queue (sorted), through hutch on ``url``."""
    name = f"vt-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, durable=False, auto_delete=False, expires=60)
    with hutch.connect(url) as conn:
        clock = conn.clock
        with Subscriber(conn, queue=queue, model=int) as sub:
            with Publisher(conn, declare=[queue], model=int) as pub:
                for body, slot in enumerate(sc.slots):
                    pub.publish(body, routing_key=name, delay=slot * GRID)
                got = [m.body for m in sub.messages(timeout=(sc.idle + 0.5) * GRID, limit=sc.limit)]
                delay_queues = pub._delays.names
        clock.sleep(SLOTS * GRID)  # every delay has passed: the rest is in the queue
        ch = conn.channel()
        left = []
        while (d := ch.get(name)) is not None:
            left.append(int(d.body))
            d.ack()
        for q in (name, *delay_queues):
            ch.delete_queue(q)
    return got, sorted(left)


compared = {"scenarios": 0}


@compare_settings(8)
@given(sc=_scenario())
def test_delays_and_a_consumer_timeout_on_virtual_time_match_rabbitmq(
    amqp_url: str, sc: Scenario
) -> None:
    memory = f"vt-{uuid.uuid4().hex[:8]}"
    try:
        on_memory = _run(f"memory://{memory}?clock=virtual", sc)
    finally:
        forget_broker(memory)
    assert _run(amqp_url, sc) == on_memory, sc
    compared["scenarios"] += 1
