"""Partitioned work queues: per-key order across many workers, built on RabbitMQ.

Layout
------
``TaskQueue(conn, queue="orders", partitions=N)`` and ``WorkerPool(conn, queue="orders",
partitions=N, ...)`` agree on this topology (both declare it, idempotently):

- the exchange ``orders.partitions`` of type ``x-consistent-hash`` (the
  ``rabbitmq_consistent_hash_exchange`` plugin, which ships with the server), hashing the
  header ``x-hutch-partition-key`` (``hash-header``), so a retried copy that comes back
  through a delay queue hashes to the same partition;
- N queues ``orders.p0`` ... ``orders.p<N-1>``, each with ``x-single-active-consumer``
  and bound with weight 1.

``submit(body, key=...)`` sets the header (and the routing key, for people reading the
management UI) to ``key``; equal keys land in the same partition. A pool consumes every
partition with prefetch 1 and hands each to one worker, which processes its messages one
by one, so a partition's messages run in queue order and never two at once; partitions
run in parallel. Because each partition queue has a single active consumer, only one
consumer across all pools, processes and hosts receives from it at a time; the broker
moves the partition to a waiting consumer when the active one's channel closes (a
crashed process included).

Limits
------
- A message in hand when its process dies is redelivered (``redelivered=True``) to the
  partition's next consumer: it may be processed twice, at that point only. Handlers
  should be idempotent for that message.
- A failure retried through a delay queue goes to the back of its partition: a retried
  message loses its place relative to later messages of the same key. Use ``retry=None``
  (dead-letter at once) where that matters.
- Changing N re-maps keys to partitions: stop the publishers, let the pools drain every
  partition, then change N everywhere (old partitions beyond the new N stay declared
  until deleted).
- Which pool is active on a partition is the broker's choice (the first registered
  consumer); it is not rebalanced when pools join, only when the active one leaves.
"""

from __future__ import annotations

from hutch._checks import check_int
from hutch._topology import Binding, Exchange, ExchangeType, Queue, QueueType, TopologyItem

__all__ = [
    "PARTITION_HEADER",
    "check_partitions",
    "partition_exchange",
    "partition_names",
    "partition_topology",
]

#: The header the consistent-hash exchange hashes (set by ``TaskQueue.submit(key=...)``).
PARTITION_HEADER = "x-hutch-partition-key"

#: Most partitions one work queue may have.
MAX_PARTITIONS = 1024


def check_partitions(value: object) -> int | None:
    """Check a ``partitions=`` argument.

    Args:
        value: None (not partitioned) or the number of partitions.

    Returns:
        The number, or None.

    Raises:
        TypeError: Not a whole number.
        ValueError: Below 1 or above 1024.
    """
    if value is None:
        return None
    return check_int("partitions", value, 1, MAX_PARTITIONS)


def partition_exchange(queue: Queue) -> str:
    """The consistent-hash exchange's name for a partitioned work queue.

    Args:
        queue: The work queue.

    Returns:
        ``<queue>.partitions``.
    """
    return f"{queue.name}.partitions"


def partition_names(queue: Queue, partitions: int) -> list[str]:
    """The partition queues' names, in order.

    Args:
        queue: The work queue.
        partitions: How many.

    Returns:
        ``<queue>.p0`` ... ``<queue>.p<partitions-1>``.
    """
    return [f"{queue.name}.p{i}" for i in range(partitions)]


def partition_topology(queue: Queue, partitions: int) -> list[TopologyItem]:
    """The exchange, the partition queues and their bindings, in declaration order.

    Each partition queue takes the work queue's durability, queue type and delivery limit,
    and has a single active consumer.

    Args:
        queue: The work queue (its name is the prefix).
        partitions: How many partitions.

    Returns:
        Exchange, queues, bindings.

    Raises:
        ValueError: The work queue is a stream (streams have no single active consumer).
    """
    if queue.queue_type is QueueType.STREAM:
        raise ValueError("a partitioned work queue cannot be a stream: use classic or quorum")
    exchange = Exchange(
        partition_exchange(queue),
        type=ExchangeType.CONSISTENT_HASH,
        durable=bool(queue.durable),
        arguments={"hash-header": PARTITION_HEADER},
    )
    queues = [
        Queue(
            name,
            durable=bool(queue.durable),
            queue_type=queue.queue_type,
            delivery_limit=queue.delivery_limit,
            single_active_consumer=True,
        )
        for name in partition_names(queue, partitions)
    ]
    bindings = [Binding(exchange, q, routing_key="1") for q in queues]
    return [exchange, *queues, *bindings]
