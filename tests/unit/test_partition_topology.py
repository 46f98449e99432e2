"""The partition topology: quorum partition queues by default (no broker needed)."""

from __future__ import annotations

import pytest

from hutch import Queue, QueueType
from hutch._worker_pool.partitions import partition_queue_type, partition_topology


def _queues(queue: Queue) -> list[Queue]:
    return [item for item in partition_topology(queue, 3) if isinstance(item, Queue)]


def test_partition_queues_are_durable_quorum_queues_by_default() -> None:
    queues = _queues(Queue("orders"))
    assert [q.name for q in queues] == ["orders.p0", "orders.p1", "orders.p2"]
    for q in queues:
        assert q.queue_type is QueueType.QUORUM
        assert q.durable and q.single_active_consumer
        assert q.arguments["x-queue-type"] == "quorum"
    assert partition_queue_type(Queue("orders")) is QueueType.QUORUM


def test_a_named_queue_type_is_kept() -> None:
    queues = _queues(Queue("orders", durable=False, queue_type="classic"))
    assert {q.queue_type for q in queues} == {QueueType.CLASSIC}
    assert not any(q.durable for q in queues)
    quorum = _queues(Queue("orders", queue_type="quorum", delivery_limit=5))
    assert {q.delivery_limit for q in quorum} == {5}


def test_a_non_durable_queue_must_name_its_type() -> None:
    with pytest.raises(ValueError, match="queue_type='classic'"):
        partition_topology(Queue("orders", durable=False), 3)
    with pytest.raises(ValueError, match="stream"):
        partition_topology(Queue("orders", queue_type="stream"), 3)
