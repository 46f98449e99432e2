"""RabbitMQ's channel errors, as the memory broker raises them.

The memory broker closes a channel for the same reasons as RabbitMQ 3.10, with the same
reply code and reply text (e.g. ``404 "NOT_FOUND - no queue 'q' in vhost '/'"``), and
raises the :class:`~hutch.ChannelClosed` subclass that hutch's pika error mapping gives
for that code, so code written against one backend sees the same exceptions on the other.
"""

from __future__ import annotations

from hutch._channel_errors import channel_closed_error
from hutch._exceptions import ChannelClosed

__all__ = [
    "ACCESS_REFUSED",
    "NOT_FOUND",
    "PRECONDITION_FAILED",
    "RESOURCE_LOCKED",
    "VOID",
    "channel_error",
    "describe",
    "locked",
    "no_exchange",
    "no_queue",
    "show_value",
]

ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540

_NAMES = {
    ACCESS_REFUSED: "ACCESS_REFUSED",
    NOT_FOUND: "NOT_FOUND",
    RESOURCE_LOCKED: "RESOURCE_LOCKED",
    PRECONDITION_FAILED: "PRECONDITION_FAILED",
    NOT_ALLOWED: "NOT_ALLOWED",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
}


def describe(kind: str, name: str, vhost: str) -> str:
    """RabbitMQ's name of a resource in texts, e.g. ``"queue 'q' in vhost '/'"``."""
    return f"{kind} '{name}' in vhost '{vhost}'"


def channel_error(code: int, detail: str, *, entity: str = "") -> ChannelClosed:
    """The exception for a channel the broker closes with ``code`` and ``detail``.

    Args:
        code: The AMQP reply code (403, 404, 405, 406...).
        detail: The text after RabbitMQ's ``"NOT_FOUND - "`` prefix.
        entity: What was being acted on, for the message (as hutch's pika mapping).

    Returns:
        The :class:`~hutch.ChannelClosed` (sub)class hutch raises for ``code``, whose
        ``reply_text`` is RabbitMQ's, prefix included.
    """
    text = f"{_NAMES.get(code, 'INTERNAL_ERROR')} - {detail}"
    return channel_closed_error(code, text, entity=entity)


def no_queue(name: str, vhost: str) -> ChannelClosed:
    """404: the queue does not exist."""
    return channel_error(
        NOT_FOUND, "no " + describe("queue", name, vhost), entity=f"queue {name!r}"
    )


def no_exchange(name: str, vhost: str) -> ChannelClosed:
    """404: the exchange does not exist."""
    return channel_error(
        NOT_FOUND, "no " + describe("exchange", name, vhost), entity=f"exchange {name!r}"
    )


def locked(name: str, vhost: str) -> ChannelClosed:
    """405: an exclusive queue of another connection (or exclusivity that differs)."""
    return channel_error(
        RESOURCE_LOCKED,
        "cannot obtain exclusive access to locked "
        + describe("queue", name, vhost)
        + ". It could be originally declared on another connection or the exclusive "
        "property value does not match that of the original declaration.",
    )


class _Void:
    """An argument given with AMQP's void value: present, unlike an absent one."""

    def __repr__(self) -> str:
        return "VOID"


#: An argument present with the void value (``None`` in a declaration's table).
VOID = _Void()


def show_value(value: object, *, typed: bool) -> str:
    """A value as RabbitMQ prints it in an 'inequivalent arg' text.

    Args:
        value: The argument's value (None: absent; :data:`VOID`: the void value).
        typed: Print its AMQP type too (when only one side has the argument).

    Returns:
        ``none``, ``'5'`` or ``the value '5' of type 'signedint'``.
    """
    if value is None:
        return "none"
    shown = _erlang(value)
    if not typed:
        return f"'{shown}'"
    return f"the value '{shown}' of type '{amqp_type(value)}'"


def _erlang(value: object) -> str:
    if value is VOID:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def amqp_type(value: object) -> str:
    """The AMQP field type pika gives ``value`` on the wire (RabbitMQ's name for it)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "signedint" if -(2**31) <= value < 2**31 else "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "longstr"
    if isinstance(value, bytes):
        return "binary"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "table"
    if value is None or value is VOID:
        return "void"
    return "longstr"
