"""The narrow channel API that the patterns use, as a ``typing.Protocol``.

Two backends serve it: :class:`hutch._amqp.Channel` (RabbitMQ through pika) and
:class:`hutch._memory.adapter.MemoryAmqpChannel` (the in-process memory broker). The
patterns (Publisher, Subscriber, WorkerPool, RPC) are typed against :class:`ChannelApi`,
so mypy checks that both backends give them every method with the same signature
(``hutch._memory.adapter`` holds the assignment that makes mypy compare them). Nothing
here imports pika.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from hutch._amqp.confirms import OutgoingMessage
    from hutch._amqp.properties import Delivery
    from hutch._clock import Clock
    from hutch._exceptions import HutchError
    from hutch._message import Properties
    from hutch._topology import Queue, TopologyItem

__all__ = ["ChannelApi"]

R = TypeVar("R")


class ChannelApi(Protocol):
    """What a pattern may do with a channel; see :class:`hutch._amqp.Channel` for each.

    Threads: any thread may call it. Consumer callbacks run on the connection's I/O
    (callback) thread, where blocking calls are refused.
    """

    #: Called as ``on_return(reply_code, reply_text, properties)`` for a returned message
    #: that no confirm waits for.
    on_return: Callable[[int, str, Properties], None] | None

    # ------------------------------------------------------- the connection, as patterns see it
    def check_connection(self) -> None:
        """Raise if the connection failed for good or was closed."""

    @property
    def connection_failure(self) -> HutchError | None:
        """Why the connection failed for good, if it did."""

    @property
    def in_io_thread(self) -> bool:
        """True on the connection's I/O (callback) thread."""

    def blocking_refused(self, what: str, instead: str) -> str | None:
        """Why ``what`` must not block on this thread (with what to do ``instead``), else None."""

    @property
    def blocked(self) -> bool:
        """True while the broker blocks publishers (a resource alarm)."""

    def wait_unblocked(self, timeout: float | None = None) -> None:
        """Wait until the broker unblocks publishers."""

    def pump(self, fut: Future[Any], limit: float) -> None:
        """Do the connection's I/O on this thread until ``fut`` is done, if it can."""

    def pump_until(self, done: Callable[[], bool], limit: float, *, wait: float = 0.005) -> None:
        """Do the connection's I/O on this thread until ``done()``, if it can."""

    def wait_settled(self, fut: Future[R], timeout: float | None) -> R:
        """Wait for ``fut`` (helping with the I/O where the backend needs it)."""

    def is_current(self, delivery: Delivery) -> bool:
        """False once the channel that delivered ``delivery`` is gone (its ack is void)."""

    @property
    def clock(self) -> Clock:
        """The time waits on this channel read (real, or a memory broker's virtual time)."""

    # ----------------------------------------------------------------- the channel
    def open(self, timeout: float | None = 30.0) -> None:
        """Open the channel."""

    def close(self, timeout: float | None = 10.0) -> None:
        """Close the channel (idempotent)."""

    def declare(self, items: Iterable[TopologyItem], timeout: float | None = 30.0) -> None:
        """Declare exchanges, queues and bindings, in dependency order."""

    def queue_name(self, queue: Queue | str) -> str:
        """The broker's name for ``queue`` (a server-named queue's once declared)."""

    def qos(self, prefetch: int, timeout: float | None = 30.0) -> None:
        """Set the per-consumer prefetch count."""

    def consume(
        self,
        queue: Queue | str,
        on_message: Callable[[Delivery], None],
        *,
        exclusive: bool = False,
        arguments: Mapping[str, Any] | None = None,
        on_cancel: Callable[[str], None] | None = None,
        timeout: float | None = 30.0,
    ) -> str:
        """Start a consumer; return its tag."""

    def cancel(self, tag: str, timeout: float | None = 30.0) -> None:
        """Stop a consumer."""

    # ----------------------------------------------------------------- publishing
    def publish(
        self, message: OutgoingMessage, *, direct: bool = False, wait: float = 1.0
    ) -> Future[None]:
        """Publish a message; the future resolves when it is confirmed."""

    def publish_and_wait(
        self,
        message: OutgoingMessage,
        limit: float,
        *,
        until: Callable[[], bool] | None = None,
        wait: float = 1.0,
    ) -> None:
        """Publish a message, then help with the I/O until ``until`` (or its confirm)."""

    def publish_many(self, messages: list[OutgoingMessage], *, direct: bool = False) -> None:
        """Publish several messages at once."""

    def publish_then_ack(
        self,
        message: OutgoingMessage,
        delivery: Delivery,
        *,
        direct: bool = True,
        lead_until: Callable[[], bool] | None = None,
        lead_limit: float = 0.0,
    ) -> None:
        """Publish ``message``, then ack ``delivery`` (an RPC server's reply).

        With ``lead_until``, then read the connection on this thread until it is true
        (at most ``lead_limit`` seconds), where the channel can.
        """

    # ----------------------------------------------------------------- settling, queries
    def ack(self, delivery: Delivery) -> None:
        """Ack a delivery (void if its channel is gone)."""

    def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        """Nack a delivery, requeued or not."""

    def get(self, queue: Queue | str, timeout: float | None = 30.0) -> Delivery | None:
        """``basic.get``: one message, or None if the queue is empty."""

    def message_count(self, queue: str, timeout: float | None = 30.0) -> int:
        """The number of ready messages in ``queue``."""

    def consumer_count(self, queue: str, timeout: float | None = 30.0) -> int:
        """The number of consumers of ``queue``."""

    def exists(self, kind: str, name: str, timeout: float | None = 30.0) -> bool:
        """Whether the ``"queue"`` or ``"exchange"`` exists (a passive declare)."""

    def delete_queue(self, queue: str, timeout: float | None = 30.0) -> None:
        """Delete a queue."""

    def delete_exchange(self, exchange: str, timeout: float | None = 30.0) -> None:
        """Delete an exchange."""

    def purge(self, queue: str, timeout: float | None = 30.0) -> int:
        """Purge a queue; return how many messages it dropped."""
