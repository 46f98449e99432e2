"""The one exception hierarchy of hutch.

Everything hutch raises at run time derives from :class:`HutchError`; bad
arguments raise :class:`ValueError` or :class:`TypeError` at once instead.

::

    HutchError
    ├── ConnectError                 cannot open a connection
    │   └── AuthenticationError      broker refused the credentials (403)
    ├── ConnectionLost               an open connection died and was not recovered
    ├── ConnectionBlocked            broker resource alarm outlasted the wait (also TimeoutError)
    ├── ChannelClosed                broker closed a channel (reply_code, reply_text)
    │   ├── PreconditionFailed       406, e.g. redeclare with other arguments
    │   ├── NotFound                 404, e.g. queue or exchange does not exist
    │   └── AccessRefused            403 on a resource
    ├── ConsumerCancelled            broker cancelled a consumer (queue deleted)
    ├── PublishError                 a message was not accepted (exchange, routing_key)
    │   ├── Unroutable               mandatory message returned by the broker
    │   ├── Nacked                   broker nacked the message
    │   └── MessageTooLarge          refused client-side before sending
    ├── MessageError                 a body cannot be decoded or validated
    │   ├── DecodeError              bad bytes, unknown content type
    │   └── ValidationError          valid JSON, wrong shape (names the field)
    ├── OperationTimeout             a blocking call ran out of time (also TimeoutError)
    ├── ClosedError                  an object was used after close()
    ├── WorkerError                  a worker process died or could not be started
    └── RpcError
        ├── NoServer                 no queue receives the request (raised at once)
        ├── RpcTimeout               no reply before the deadline (also TimeoutError)
        ├── RemoteError              the remote procedure raised (type name, message)
        └── InvalidReply             a reply arrived but cannot be decoded (reason)
"""

from __future__ import annotations

__all__ = [
    "AccessRefused",
    "AuthenticationError",
    "ChannelClosed",
    "ClosedError",
    "ConnectError",
    "ConnectionBlocked",
    "ConnectionLost",
    "ConsumerCancelled",
    "DecodeError",
    "HutchError",
    "InvalidReply",
    "MessageError",
    "MessageTooLarge",
    "Nacked",
    "NoServer",
    "NotFound",
    "OperationTimeout",
    "PreconditionFailed",
    "PublishError",
    "RemoteError",
    "RpcError",
    "RpcTimeout",
    "Unroutable",
    "ValidationError",
    "WorkerError",
]


class HutchError(Exception):
    """Base class of every error hutch raises at run time."""


class ConnectError(HutchError):
    """A connection to the broker could not be opened.

    Attributes:
        host: The host (and port) that was tried, without credentials.
    """

    def __init__(self, message: str, *, host: str = "") -> None:
        super().__init__(message)
        self.host = host


class AuthenticationError(ConnectError):
    """The broker refused the credentials (ACCESS_REFUSED, 403). Never retried."""


class ConnectionLost(HutchError):
    """An open connection was lost and could not be recovered."""


class ConnectionBlocked(HutchError, TimeoutError):
    """The broker blocked publishing (memory or disk alarm) for longer than allowed."""


class ChannelClosed(HutchError):
    """The broker closed a channel.

    Attributes:
        reply_code: The AMQP reply code, e.g. 404 or 406.
        reply_text: The broker's explanation.
    """

    def __init__(self, reply_code: int, reply_text: str, *, message: str | None = None) -> None:
        super().__init__(message or f"channel closed by broker: {reply_code} {reply_text}")
        self.reply_code = reply_code
        self.reply_text = reply_text


class PreconditionFailed(ChannelClosed):
    """406 PRECONDITION_FAILED, e.g. an entity redeclared with different settings.

    Attributes:
        entity: A description of the entity, e.g. ``"queue 'orders'"``.
        differences: The settings that differ, as reported by the broker.
    """

    def __init__(
        self,
        reply_code: int,
        reply_text: str,
        *,
        entity: str = "",
        differences: str = "",
    ) -> None:
        detail = f"{entity} exists with different settings" if entity else "precondition failed"
        if differences:
            detail += f": {differences}"
        super().__init__(reply_code, reply_text, message=f"{detail} ({reply_code} {reply_text})")
        self.entity = entity
        self.differences = differences


class NotFound(ChannelClosed):
    """404 NOT_FOUND: the queue or exchange does not exist."""


class AccessRefused(ChannelClosed):
    """403 ACCESS_REFUSED on a resource (e.g. an exclusive queue of another connection)."""


class ConsumerCancelled(HutchError):
    """The broker cancelled a consumer, e.g. because its queue was deleted.

    Attributes:
        queue: The queue the consumer was reading from.
    """

    def __init__(self, queue: str) -> None:
        super().__init__(f"consumer of queue {queue!r} was cancelled by the broker")
        self.queue = queue


class PublishError(HutchError):
    """A message was not accepted by the broker.

    Attributes:
        exchange: The exchange it was published to ('' is the default exchange).
        routing_key: The routing key it was published with.
        message_id: The message id, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        exchange: str = "",
        routing_key: str = "",
        message_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.exchange = exchange
        self.routing_key = routing_key
        self.message_id = message_id


class Unroutable(PublishError):
    """A mandatory message was returned: no queue is bound for its routing key.

    Attributes:
        reply_code: Usually 312 NO_ROUTE.
        reply_text: The broker's explanation.
    """

    def __init__(
        self,
        *,
        exchange: str,
        routing_key: str,
        reply_code: int = 312,
        reply_text: str = "NO_ROUTE",
        message_id: str | None = None,
    ) -> None:
        super().__init__(
            f"message to exchange {exchange!r} with routing key {routing_key!r} is unroutable "
            f"({reply_code} {reply_text}): bind a queue that matches it or publish elsewhere",
            exchange=exchange,
            routing_key=routing_key,
            message_id=message_id,
        )
        self.reply_code = reply_code
        self.reply_text = reply_text


class Nacked(PublishError):
    """The broker negatively acknowledged a message (it could not take responsibility)."""


class MessageTooLarge(PublishError):
    """A body exceeds the configured maximum message size; it was not sent.

    Attributes:
        size: The body's size in bytes.
        limit: The configured limit in bytes.
    """

    def __init__(self, *, size: int, limit: int, exchange: str = "", routing_key: str = "") -> None:
        super().__init__(
            f"message body of {size} bytes exceeds max_message_size={limit} bytes; "
            "send a reference to the data instead, or raise the limit on broker and client",
            exchange=exchange,
            routing_key=routing_key,
        )
        self.size = size
        self.limit = limit


class MessageError(HutchError):
    """A message body cannot be decoded or does not validate.

    Attributes:
        reason: A one-line reason, also put in dead-letter headers.
        field: The offending field (dotted path) if known.
    """

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class DecodeError(MessageError):
    """The bytes cannot be decoded (bad JSON, bad UTF-8, unsupported content type)."""


class ValidationError(MessageError):
    """The decoded body does not validate against the expected type."""


class OperationTimeout(HutchError, TimeoutError):
    """A blocking call did not finish within its timeout."""


class ClosedError(HutchError):
    """An object was used after it was closed."""


class RpcError(HutchError):
    """Base class of remote procedure call failures."""


class NoServer(RpcError):
    """No queue received the request: no server is declared for it. Raised at once."""


class RpcTimeout(RpcError, TimeoutError):
    """No reply arrived before the call's deadline."""


class RemoteError(RpcError):
    """The remote procedure raised an exception.

    Attributes:
        type_name: The remote exception's type name, e.g. ``"ValueError"``.
        remote_message: The remote exception's message.
        remote_traceback: The remote traceback text, only if the server opted in.
    """

    def __init__(
        self, type_name: str, remote_message: str, *, remote_traceback: str | None = None
    ) -> None:
        super().__init__(f"{type_name}: {remote_message}")
        self.type_name = type_name
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback


class InvalidReply(RpcError):
    """A reply arrived for the call but cannot be decoded; the connection is unharmed.

    For example a foreign server's ``text/plain`` reply that is not UTF-8, or reply
    properties that cannot be decoded. Only this call fails; others carry on.

    Attributes:
        reason: Why the reply cannot be decoded.
        procedure: The procedure called ('' for a raw call to a server's default).
    """

    def __init__(self, reason: str, *, procedure: str = "") -> None:
        what = f"the reply of {procedure!r}" if procedure else "the reply"
        super().__init__(f"{what} cannot be decoded: {reason}")
        self.reason = reason
        self.procedure = procedure


class WorkerError(HutchError):
    """A worker process died or could not be started.

    A child that dies mid-task does not lose its message (it is redelivered or retried)
    and is replaced; this error ends the pool only when a replacement cannot be started.

    Attributes:
        pid: The process id, if the process was started.
        exitcode: Its exit code (negative: killed by that signal), if it exited.
    """

    def __init__(
        self, message: str, *, pid: int | None = None, exitcode: int | None = None
    ) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode
