"""What the memory broker's mixins (consuming, exchange operations, expiry) use of it.

:class:`~hutch._memory.broker.Broker` provides all of it; the declarations here are for
type checkers only, so each mixin module can stay one concept without importing the
broker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from hutch._memory.broker import Vhost
    from hutch._memory.connection import MemoryChannel, MemoryConnection
    from hutch._memory.dead_letter import DeathReason
    from hutch._memory.expiry import BrokerLock
    from hutch._memory.message import Message
    from hutch._memory.queues import MemoryQueue

__all__ = ["BrokerPart"]

_T = TypeVar("_T")


class BrokerPart:
    """The base of the Broker's mixins: the broker's state and methods they call."""

    _lock: BrokerLock
    _vhosts: dict[str, Vhost]

    if TYPE_CHECKING:  # provided by Broker

        def run(self, channel: MemoryChannel | None, operation: Callable[[float], _T]) -> _T: ...

        def _queue(self, ch: MemoryChannel, name: str) -> MemoryQueue: ...

        def _check_access(
            self,
            queue: MemoryQueue,
            conn: MemoryConnection,
            *,
            strict: bool = False,
            exclusive: bool = False,
        ) -> None: ...

        def _delete_queue(self, vhost: Vhost, queue: MemoryQueue, now: float) -> None: ...

        def _dead_letter(
            self,
            vhost: Vhost,
            queue: MemoryQueue,
            message: Message,
            reason: DeathReason,
            now: float,
        ) -> None: ...

        def _drop_head(self, vhost: Vhost, queue: MemoryQueue, now: float) -> None: ...
