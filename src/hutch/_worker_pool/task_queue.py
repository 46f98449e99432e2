"""TaskQueue[T]: submits tasks to a work queue (persistent, confirmed, mandatory)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

from hutch._connection import Connection
from hutch._publisher import BatchResult, Publisher
from hutch._resource import Resource
from hutch._topology import Queue

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
    ) -> None: ...

    def __init__(
        self,
        connection: Connection | str | None = None,
        *,
        queue: str | Queue,
        model: type[T] | None = None,
        timeout: float = 30.0,
        app_id: str | None = None,
    ) -> None:
        self.queue = work_queue(queue)
        self._publisher = cast(
            "Publisher[T]",
            Publisher(
                connection,
                exchange="",
                routing_key=self.queue.name,
                model=model,
                mandatory=True,
                declare=[self.queue],
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
        **properties: Any,
    ) -> str:
        """Publish one task and wait for the broker's confirm.

        Args:
            body: The task.
            headers: Application headers.
            timeout: Seconds to wait for the confirm (default: the task queue's).
            **properties: AMQP basic properties (``message_id``, ``priority``...).

        Returns:
            The message id.

        Raises:
            Unroutable: The queue does not exist (it was deleted after the declare).
            Nacked: The broker refused the task.
            OperationTimeout: No confirm within ``timeout``.
        """
        return self._publisher.publish(body, headers=headers, timeout=timeout, **properties)

    def submit_many(
        self,
        bodies: Iterable[T],
        *,
        headers: Mapping[str, FieldValue] | None = None,
        timeout: float | None = None,
        **properties: Any,
    ) -> BatchResult:
        """Publish many tasks with pipelined confirms; return once all are settled.

        Args:
            bodies: The tasks.
            headers: Headers for all of them.
            timeout: Seconds to wait for the whole batch.
            **properties: AMQP basic properties for all of them.

        Returns:
            Which tasks were confirmed and which failed.

        Raises:
            OperationTimeout: The batch was not settled within ``timeout``.
        """
        return self._publisher.publish_many(bodies, headers=headers, timeout=timeout, **properties)

    def close(self) -> None:
        """Close the channel (and an owned connection). Idempotent."""
        self._publisher.close()
