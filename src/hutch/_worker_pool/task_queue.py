"""TaskQueue[T]: submits tasks to a work queue (persistent, confirmed, mandatory)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

from hutch._checks import check_shortstr
from hutch._confirm_batch import BatchResult
from hutch._connection import Connection
from hutch._publisher import Publisher
from hutch._resource import Resource
from hutch._topology import Queue, TopologyItem
from hutch._worker_pool.partitions import (
    PARTITION_HEADER,
    check_partitions,
    partition_exchange,
    partition_topology,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from hutch._topology import FieldValue

__all__ = ["TaskQueue", "work_queue"]

T = TypeVar("T")


def work_queue(queue: object) -> Queue:
    """Check a work queue argument: a non-empty name (declared durable) or a named Queue.

    Args:
        queue: What the caller passed.

    Returns:
        The queue.

    Raises:
        TypeError: Neither a string nor a :class:`~hutch.Queue`.
        ValueError: An empty name or a server-named queue.
    """
    if isinstance(queue, Queue):
        if queue.server_named:
            raise ValueError("a work queue needs a name that every worker and publisher agrees on")
        return queue
    if isinstance(queue, str):
        if not queue:
            raise ValueError("queue must be a non-empty queue name")
        return Queue(queue)  # named queues are durable by default
    raise TypeError(f"queue must be a queue name or a hutch.Queue, got {type(queue).__name__}")


class TaskQueue(Resource, Generic[T]):
    """Submits tasks of type ``T`` to a work queue: persistent, confirmed, mandatory.

    Publishes on the default exchange with the queue's name as routing key, after
    declaring the queue (durable by default, the same declaration a
    :class:`WorkerPool` makes), so tasks submitted before any worker starts wait in the
    queue. :meth:`submit` returns once the broker confirmed the task. Any thread may
    submit; calls are pipelined over one channel.

    Args:
        connection: A :class:`~hutch.Connection` (shared) or a URL (owned); None (the
            default) is ``HUTCH_URL``'s broker.
        queue: The work queue: a name (durable) or a :class:`~hutch.Queue`.
        model: The body type; None accepts bytes, str, pydantic models and JSON values.
        timeout: Default seconds to wait for a confirm.
        app_id: Default ``app_id`` property.
        partitions: Partition the queue into this many queues ``<queue>.p<i>``: each
            task is submitted with a ``key``, equal keys go to the same partition, and a
            :class:`WorkerPool` with the same ``partitions`` processes each partition in
            order, one task at a time (see ``docs/work-queues.md``).

    Raises:
        TypeError: A wrong argument type.
        ValueError: An invalid queue.

    Example:
        >>> with TaskQueue(conn, queue="images", model=Job) as tasks:  # doctest: +SKIP
        ...     tasks.submit(Job(url="https://example.com/cat.png"))
    """

    @overload
    def __init__(
        self: TaskQueue[object],
        connection: Connection | str | None = None,
        *,
        queue: str | Queue,
        model: None = None,
        timeout: float = 30.0,
        app_id: str | None = None,
        partitions: int | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        connection: Connection | str | None = None,
        *,
        queue: str | Queue,
        model: type[T],
        timeout: float = 30.0,
        app_id: str | None = None,
        partitions: int | None = None,
    ) -> None: ...

    def __init__(
        self,
        connection: Connection | str | None = None,
        *,
        queue: str | Queue,
        model: type[T] | None = None,
        timeout: float = 30.0,
        app_id: str | None = None,
        partitions: int | None = None,
    ) -> None:
        self.queue = work_queue(queue)
        self.partitions = check_partitions(partitions)
        declare: list[TopologyItem] = [self.queue]
        exchange = ""
        if self.partitions is not None:
            exchange = partition_exchange(self.queue)
            declare = partition_topology(self.queue, self.partitions)
        self._publisher = cast(
            "Publisher[T]",
            Publisher(
                connection,
                exchange=exchange,
                routing_key=self.queue.name,
                model=model,
                mandatory=True,
                declare=declare,
                timeout=timeout,
                app_id=app_id,
            ),
        )

    def __repr__(self) -> str:
        return f"<TaskQueue queue={self.queue.name!r}>"

    def open(self) -> Self:
        """Open the channel and declare the queue (done on first submit otherwise).

        Returns:
            This task queue.

        Raises:
            PreconditionFailed: The queue exists with other settings.
            ClosedError: The task queue was closed.
        """
        self._publisher.open()
        return self

    def submit(
        self,
        body: T,
        *,
        headers: Mapping[str, FieldValue] | None = None,
        timeout: float | None = None,
        delay: float | _dt.timedelta | None = None,
        key: str | None = None,
        **properties: Any,
    ) -> str:
        """Publish one task and wait for the broker's confirm.

        Args:
            body: The task.
            headers: Application headers.
            timeout: Seconds to wait for the confirm (default: the task queue's).
            delay: Let the task reach the work queue this long from now (seconds or a
                ``timedelta``, rounded to milliseconds; None or 0: at once). It waits in
                the durable delay queue ``<queue>.delay.<ms>`` (see "Delayed messages"
                in the docs), not in a worker.
            key: With ``partitions``: the ordering key (a customer, an order, a device);
                tasks with equal keys are processed in submit order, one at a time.
            **properties: AMQP basic properties (``message_id``, ``priority``...).

        Returns:
            The message id.

        Raises:
            Unroutable: The queue does not exist (it was deleted after the declare).
            Nacked: The broker refused the task.
            OperationTimeout: No confirm within ``timeout``.
            TypeError: A ``delay`` that is not seconds or a ``timedelta``.
            ValueError: A ``delay`` that is negative, not finite or over 2**32-1 ms; or
                ``key`` missing on a partitioned queue, or given on another.

        Example:
            >>> tasks.submit(Job(url="https://example.com/cat.png"), delay=30)  # doctest: +SKIP
        """
        routing_key, headers = self._route(key, headers)
        if delay is not None and self.partitions is not None:
            # the exchange hashes the key's header, not the routing key; a delay queue is
            # named after its routing key, so keys as routing keys would make one delay
            # queue per key and delay
            routing_key = self.queue.name
        return self._publisher.publish(
            body,
            routing_key=routing_key,
            headers=headers,
            timeout=timeout,
            delay=delay,
            **properties,
        )

    def _route(
        self, key: object, headers: Mapping[str, FieldValue] | None
    ) -> tuple[str | None, Mapping[str, FieldValue] | None]:
        if self.partitions is None:
            if key is not None:
                raise ValueError(
                    "key= orders tasks of a partitioned queue: create the TaskQueue with "
                    "partitions=N"
                )
            return None, headers
        if key is None:
            raise ValueError(f"queue {self.queue.name!r} is partitioned: submit with key=...")
        check_shortstr("key", key)
        assert isinstance(key, str)
        return key, {**(headers or {}), PARTITION_HEADER: key}

    def submit_many(
        self,
        bodies: Iterable[T],
        *,
        headers: Mapping[str, FieldValue] | None = None,
        timeout: float | None = None,
        key: str | None = None,
        **properties: Any,
    ) -> BatchResult:
        """Publish many tasks with pipelined confirms; return once all are settled.

        Args:
            bodies: The tasks.
            headers: Headers for all of them.
            key: With ``partitions``: the ordering key of all of them.
            timeout: Seconds to wait for the whole batch.
            **properties: AMQP basic properties for all of them.

        Returns:
            Which tasks were confirmed and which failed.

        Raises:
            OperationTimeout: The batch was not settled within ``timeout``.
        """
        routing_key, headers = self._route(key, headers)
        return self._publisher.publish_many(
            bodies, routing_key=routing_key, headers=headers, timeout=timeout, **properties
        )

    def close(self) -> None:
        """Close the channel (and an owned connection). Idempotent."""
        self._publisher.close()
