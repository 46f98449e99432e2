"""An in-memory broker with RabbitMQ 3.10's semantics, for tests (``memory://``).

One module per concept: :mod:`.exchanges` (routing), :mod:`.queues` (TTL, length limits,
priorities), :mod:`.dead_letter` (``x-death``), :mod:`.consumers` (prefetch, round robin),
:mod:`.arguments` (argument checks and equivalence), :mod:`.errors` (reply codes and texts),
:mod:`.broker` (vhosts, queue declarations, publishing, the timer thread, named
brokers), :mod:`.exchange_ops` (exchange declarations and bindings), :mod:`.consuming`
(consumers, gets, acks, QoS), :mod:`.expiry` (what falls due when, the broker's lock),
:mod:`.connection` (connections, channels, the callback thread), :mod:`.parts` (what
the mixins use of the broker). No pika here: the messages hold plain Python values.
"""

from __future__ import annotations

from hutch._memory.broker import REPLY_TO, Broker, Returned, forget_broker, get_broker
from hutch._memory.connection import MemoryChannel, MemoryConnection
from hutch._memory.dead_letter import DeathReason
from hutch._memory.message import Delivery, Message, Properties

__all__ = [
    "REPLY_TO",
    "Broker",
    "DeathReason",
    "Delivery",
    "MemoryChannel",
    "MemoryConnection",
    "Message",
    "Properties",
    "Returned",
    "forget_broker",
    "get_broker",
]
