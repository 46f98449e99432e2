"""Messages: the AMQP basic properties and the delivered message handed to handlers."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from hutch._topology import FieldValue

__all__ = ["Message", "Properties"]

T = TypeVar("T")

PERSISTENT = 2
TRANSIENT = 1


@dataclass(frozen=True, slots=True)
class Properties:
    """The 14 AMQP 0-9-1 basic properties of a message; every one is optional.

    Attributes:
        content_type: MIME type of the body, e.g. ``application/json``.
        content_encoding: Body encoding, e.g. ``gzip``.
        headers: Application headers.
        delivery_mode: 1 transient, 2 persistent.
        priority: 0-9.
        correlation_id: Correlates an RPC reply with its request.
        reply_to: Queue to reply to.
        expiration: Per-message TTL in milliseconds, as a string (AMQP's format).
        message_id: Application message id.
        timestamp: Creation time (whole seconds).
        type: Application message type name.
        user_id: Must equal the connection's user when set (RabbitMQ checks it).
        app_id: Publishing application's id.
        cluster_id: Deprecated by AMQP 0-9-1; kept for completeness.
    """

    content_type: str | None = None
    content_encoding: str | None = None
    headers: Mapping[str, FieldValue] | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: _dt.datetime | None = None
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None

    def __post_init__(self) -> None:
        if self.delivery_mode not in (None, 1, 2):
            raise ValueError("delivery_mode must be 1 (transient) or 2 (persistent)")
        if self.priority is not None and not 0 <= self.priority <= 255:
            raise ValueError("priority must be between 0 and 255")
        if self.expiration is not None and (
            not isinstance(self.expiration, str) or not self.expiration.isdigit()
        ):
            raise ValueError(
                "expiration is a TTL in milliseconds as a string of digits, e.g. '60000'"
            )

    @property
    def persistent(self) -> bool:
        """True if ``delivery_mode`` is 2."""
        return self.delivery_mode == PERSISTENT

    def merged(self, **changes: Any) -> Properties:
        """Return a copy with ``changes`` applied (unknown names raise TypeError).

        Args:
            **changes: Property names and their new values.

        Returns:
            The new properties.
        """
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The properties that are set, as a dict."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }


PROPERTY_NAMES = frozenset(f.name for f in fields(Properties))


@dataclass(frozen=True, slots=True)
class Message(Generic[T]):
    """A delivered message with its decoded body.

    Handlers receive it when they ask for delivery details; the body alone otherwise.

    Attributes:
        body: The decoded, validated body.
        raw_body: The bytes as received.
        properties: The basic properties.
        exchange: The exchange it was published to (``""`` is the default exchange).
        routing_key: The routing key it was published with.
        redelivered: True if the broker delivered it before and it was not acked
            (e.g. the consumer died mid-task).
        delivery_tag: The delivery tag on the consuming channel.
        consumer_tag: The consumer's tag.
    """

    body: T
    raw_body: bytes
    properties: Properties = field(default_factory=Properties)
    exchange: str = ""
    routing_key: str = ""
    redelivered: bool = False
    delivery_tag: int = 0
    consumer_tag: str = ""

    @property
    def headers(self) -> Mapping[str, FieldValue]:
        """The application headers (empty if none)."""
        return self.properties.headers or {}

    @property
    def message_id(self) -> str | None:
        """The message id property."""
        return self.properties.message_id

    @property
    def correlation_id(self) -> str | None:
        """The correlation id property."""
        return self.properties.correlation_id

    @property
    def reply_to(self) -> str | None:
        """The reply_to property."""
        return self.properties.reply_to

    @property
    def content_type(self) -> str | None:
        """The content type property."""
        return self.properties.content_type
