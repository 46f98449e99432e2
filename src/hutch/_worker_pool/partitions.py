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
  and bound with weight 1. They are durable *quorum* queues unless the work queue names
  another type: on RabbitMQ 3.10 and 3.11 a classic queue whose single active consumer
  changes while publishers send can crash (rabbitmq-server #5460, fixed in 3.12), and
  partitions change their active consumer whenever pools rebalance or one dies.

``submit(body, key=...)`` sets the header (and the routing key, for people reading the
management UI) to ``key``; equal keys land in the same partition. A delayed submit routes
by the work queue's name instead: a delay queue is named after its routing key, and all
keys share one per delay. A pool consumes every
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
- The broker makes the first registered consumer active; pools then even the
  partitions out among themselves (:mod:`hutch._worker_pool.rebalance`).
"""

from __future__ import annotations

from hutch._checks import check_int
from hutch._topology import Binding, Exchange, ExchangeType, Queue, QueueType, TopologyItem

__all__ = [
    "PARTITION_HEADER",
    "check_partitions",
    "partition_census",
    "partition_exchange",
    "partition_names",
    "partition_queue_type",
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


def partition_census(queue: Queue) -> str:
    """The queue every pool of a partitioned work queue consumes, to be counted.

    A classic queue without single active consumer (no message is ever published to it):
    its ``consumer_count`` is the number of pools. The partition queues' own counts do not
    do: a quorum queue counts only its active consumer.

    Args:
        queue: The work queue.

    Returns:
        ``<queue>.pools``.
    """
    return f"{queue.name}.pools"


def partition_names(queue: Queue, partitions: int) -> list[str]:
    """The partition queues' names, in order.

    Args:
        queue: The work queue.
        partitions: How many.

    Returns:
        ``<queue>.p0`` ... ``<queue>.p<partitions-1>``.
    """
    return [f"{queue.name}.p{i}" for i in range(partitions)]


def partition_queue_type(queue: Queue) -> QueueType:
    """The partition queues' type: the work queue's, quorum unless it names one.

    Args:
        queue: The work queue.

    Returns:
        The queue type.
    """
    return QueueType(queue.queue_type or QueueType.QUORUM)


def partition_topology(queue: Queue, partitions: int) -> list[TopologyItem]:
    """The exchange, the partition queues and their bindings, in declaration order.

    Each partition queue has a single active consumer and takes the work queue's delivery
    limit. It is a durable quorum queue unless the work queue names its type; a classic
    one takes the work queue's durability.

    Args:
        queue: The work queue (its name is the prefix).
        partitions: How many partitions.

    Returns:
        Exchange, queues, bindings.

    Raises:
        ValueError: The work queue is a stream (streams have no single active consumer),
            or is not durable and names no queue type (quorum queues are durable).
    """
    if queue.queue_type is QueueType.STREAM:
        raise ValueError("a partitioned work queue cannot be a stream: use classic or quorum")
    if queue.queue_type is None and not queue.durable:
        raise ValueError(
            "partition queues are durable quorum queues by default: make the work queue "
            "durable, or pass queue_type='classic' for non-durable classic partitions"
        )
    qtype = partition_queue_type(queue)
    durable = qtype is QueueType.QUORUM or bool(queue.durable)
    exchange = Exchange(
        partition_exchange(queue),
        type=ExchangeType.CONSISTENT_HASH,
        durable=durable,
        arguments={"hash-header": PARTITION_HEADER},
    )
    queues = [
        Queue(
            name,
            durable=durable,
            queue_type=qtype,
            delivery_limit=queue.delivery_limit,
            single_active_consumer=True,
        )
        for name in partition_names(queue, partitions)
    ]
    bindings = [Binding(exchange, q, routing_key="1") for q in queues]
    return [exchange, *queues, *bindings]
