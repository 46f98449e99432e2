"""hutch: typed, high-level RabbitMQ messaging for Python, built on pika.

Example:
    >>> import hutch
    >>> with hutch.connect("amqp://guest:guest@localhost/") as conn:  # doctest: +SKIP
    ...     hutch.Publisher(conn, exchange=hutch.Exchange("logs", "fanout")).publish("hi")
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

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
)
from hutch._message import Message, Properties
from hutch._publisher import BatchResult, Publisher
from hutch._serialization import Codec
from hutch._settings import Address, ConnectionSettings, RecoveryPolicy, TlsOptions
from hutch._subscriber import Subscriber
from hutch._topology import Binding, Exchange, ExchangeType, Overflow, Queue, QueueType, bind

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
    "ClosedError",
    "Codec",
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
    "Message",
    "MessageError",
    "MessageTooLarge",
    "Nacked",
    "NoServer",
    "NotFound",
    "OperationTimeout",
    "Overflow",
    "PreconditionFailed",
    "Properties",
    "PublishError",
    "Publisher",
    "Queue",
    "QueueType",
    "RecoveryPolicy",
    "RemoteError",
    "RpcError",
    "RpcTimeout",
    "Subscriber",
    "TlsOptions",
    "Unroutable",
    "ValidationError",
    "__version__",
    "bind",
    "connect",
]
