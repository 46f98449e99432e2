"""hutch: typed, high-level RabbitMQ messaging for Python, built on pika.

Example:
    >>> import hutch
    >>> with hutch.connect("amqp://guest:guest@localhost/") as conn:  # doctest: +SKIP
    ...     hutch.Publisher(conn, exchange=hutch.Exchange("logs", "fanout")).publish("hi")
"""

import logging as _logging
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from hutch._clock import Clock
from hutch._confirm_batch import BatchResult, ConfirmBatch
from hutch._connection import Connection, connect
from hutch._exceptions import (
    AccessRefused,
    AuthenticationError,
    ChannelClosed,
    ClosedError,
    ConnectError,
    ConnectionBlocked,
    ConnectionLost,
    ConsumerCancelled,
    DecodeError,
    HutchError,
    InvalidReply,
    MessageError,
    MessageTooLarge,
    Nacked,
    NoServer,
    NotFound,
    OperationTimeout,
    PreconditionFailed,
    PublishError,
    RemoteError,
    RpcError,
    RpcTimeout,
    Unroutable,
    ValidationError,
    WorkerError,
)
from hutch._message import Message, Properties
from hutch._publisher import Publisher
from hutch._retry import Reject, Retry, RetryPolicy
from hutch._rpc import RpcClient, RpcServer
from hutch._serialization import Codec
from hutch._settings import Address, ConnectionSettings, RecoveryPolicy, TlsOptions
from hutch._subscriber import Subscriber
from hutch._topology import Binding, Exchange, ExchangeType, Overflow, Queue, QueueType, bind
from hutch._worker_pool import PoolStats, TaskQueue, WorkerPool, WorkerStats

# a library never configures logging: the application decides where "hutch" logs go
_logging.getLogger("hutch").addHandler(_logging.NullHandler())

try:
    __version__ = _version("hutch")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AccessRefused",
    "Address",
    "AuthenticationError",
    "BatchResult",
    "Binding",
    "ChannelClosed",
    "Clock",
    "ClosedError",
    "Codec",
    "ConfirmBatch",
    "ConnectError",
    "Connection",
    "ConnectionBlocked",
    "ConnectionLost",
    "ConnectionSettings",
    "ConsumerCancelled",
    "DecodeError",
    "Exchange",
    "ExchangeType",
    "HutchError",
    "InvalidReply",
    "Message",
    "MessageError",
    "MessageTooLarge",
    "Nacked",
    "NoServer",
    "NotFound",
    "OperationTimeout",
    "Overflow",
    "PoolStats",
    "PreconditionFailed",
    "Properties",
    "PublishError",
    "Publisher",
    "Queue",
    "QueueType",
    "RecoveryPolicy",
    "Reject",
    "RemoteError",
    "Retry",
    "RetryPolicy",
    "RpcClient",
    "RpcError",
    "RpcServer",
    "RpcTimeout",
    "Subscriber",
    "TaskQueue",
    "TlsOptions",
    "Unroutable",
    "ValidationError",
    "WorkerError",
    "WorkerPool",
    "WorkerStats",
    "__version__",
    "bind",
    "connect",
]
