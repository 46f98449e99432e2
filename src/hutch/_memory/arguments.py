"""Checks of declare arguments and the equivalence of redeclarations (RabbitMQ 3.10 texts)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hutch._exceptions import ChannelClosed
from hutch._memory.errors import PRECONDITION_FAILED, channel_error, describe, show_value

__all__ = [
    "check_consume_arguments",
    "check_queue_arguments",
    "inequivalent",
    "queue_arguments_equivalent",
]

#: The queue arguments RabbitMQ checks and compares on redeclaration, in its order.
QUEUE_ARGUMENTS = (
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-queue-type",
)

_INT_LIMITS: dict[str, tuple[int, int | None]] = {
    # name: (lowest allowed, highest allowed)
    "x-expires": (1, None),
    "x-message-ttl": (0, 2**32 - 1),
    "x-max-length": (0, None),
    "x-max-length-bytes": (0, None),
    "x-max-in-memory-length": (0, None),
    "x-max-in-memory-bytes": (0, None),
    "x-max-priority": (0, 255),
}


def _invalid(key: str, queue: str, vhost: str, why: str) -> ChannelClosed:
    return channel_error(
        PRECONDITION_FAILED,
        f"invalid arg '{key}' for {describe('queue', queue, vhost)}: {why}",
    )


def _type_name(value: object) -> str:
    from hutch._memory.errors import amqp_type

    return amqp_type(value)


def check_queue_arguments(arguments: Mapping[str, Any], queue: str, vhost: str) -> None:
    """Raise the 406 RabbitMQ gives for the first invalid ``x-`` argument, if any.

    Args:
        arguments: The declare arguments.
        queue: The queue's name (for the text).
        vhost: The vhost (for the text).

    Raises:
        PreconditionFailed: An argument has the wrong type or value.
    """
    for key in QUEUE_ARGUMENTS:
        if key not in arguments:
            continue
        value = arguments[key]
        if key in _INT_LIMITS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _invalid(key, queue, vhost, f'"expected integer, got {_type_name(value)}"')
            low, high = _INT_LIMITS[key]
            if value < 0:
                raise _invalid(key, queue, vhost, f"{{value_negative,{value}}}")
            if value < low:
                raise _invalid(key, queue, vhost, f"{{value_zero,{value}}}")
            if high is not None and value > high:
                raise _invalid(key, queue, vhost, f"{{max_value_exceeded,{value}}}")
        elif key == "x-overflow":
            if value not in ("drop-head", "reject-publish", "reject-publish-dlx"):
                raise _invalid(key, queue, vhost, "invalid_overflow")
        elif key in ("x-dead-letter-exchange", "x-dead-letter-routing-key"):
            if not isinstance(value, str):
                raise _invalid(key, queue, vhost, f'"expected string, got {_type_name(value)}"')
            if key == "x-dead-letter-routing-key" and "x-dead-letter-exchange" not in arguments:
                raise _invalid(key, queue, vhost, "routing_key_but_no_dlx_defined")
        elif key == "x-single-active-consumer" and not isinstance(value, bool):
            raise _invalid(key, queue, vhost, f'"expected bool, got {_type_name(value)}"')


#: Consumer arguments of other queue types: RabbitMQ refuses them on a classic queue.
_OTHER_TYPES_CONSUME_ARGUMENTS = ("x-stream-offset",)


def check_consume_arguments(arguments: Mapping[str, Any], queue: str, vhost: str) -> int:
    """Check ``basic.consume`` arguments as RabbitMQ 3.10 does on a classic queue.

    ``x-priority`` must be an integer (any sign), ``x-cancel-on-ha-failover`` a bool;
    arguments of other queue types are refused; anything else is ignored.

    Args:
        arguments: The consume arguments.
        queue: The queue's name (for the text).
        vhost: The vhost (for the text).

    Returns:
        The consumer's priority (``x-priority``, default 0).

    Raises:
        PreconditionFailed: An argument has the wrong type or does not apply.
    """
    for key in _OTHER_TYPES_CONSUME_ARGUMENTS:
        if key in arguments:
            raise channel_error(
                PRECONDITION_FAILED,
                f"invalid arg '{key}' for {describe('queue', queue, vhost)} "
                "of queue type rabbit_classic_queue",
            )
    failover = arguments.get("x-cancel-on-ha-failover", False)
    if not isinstance(failover, bool):
        raise _invalid(
            "x-cancel-on-ha-failover", queue, vhost, f"{{unacceptable_type,{_type_name(failover)}}}"
        )
    priority = arguments.get("x-priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise _invalid(
            "x-priority", queue, vhost, f'"expected integer, got {_type_name(priority)}"'
        )
    return priority


def inequivalent(
    key: str, entity: str, received: object, current: object, *, typed: bool
) -> ChannelClosed:
    """406 ``inequivalent arg`` with RabbitMQ's text.

    Args:
        key: The argument or field (``durable``, ``x-message-ttl``...).
        entity: ``"queue 'q' in vhost '/'"``.
        received: The value in the new declaration (None: absent).
        current: The existing value (None: absent).
        typed: Print AMQP types (RabbitMQ does when an argument is on one side only).

    Returns:
        The exception to raise.
    """
    return channel_error(
        PRECONDITION_FAILED,
        f"inequivalent arg '{key}' for {entity}: received "
        f"{show_value(received, typed=typed)} but current is {show_value(current, typed=typed)}",
    )


def _type_class(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return _type_name(value)


def args_equivalent(
    current: Mapping[str, Any], received: Mapping[str, Any], keys: tuple[str, ...], entity: str
) -> None:
    """Raise 406 for the first of ``keys`` whose value differs between the declarations."""
    for key in keys:
        old, new = current.get(key), received.get(key)
        if key == "x-queue-type" and "classic" in (old, new) and None in (old, new):
            continue
        if old is None and new is None:
            continue
        if old is None or new is None:
            raise inequivalent(key, entity, new, old, typed=True)
        if _type_class(old) == _type_class(new) and old == new:
            continue
        raise inequivalent(key, entity, new, old, typed=False)


def queue_arguments_equivalent(
    current: Mapping[str, Any], received: Mapping[str, Any], entity: str
) -> None:
    """Raise the 406 RabbitMQ gives when a queue is redeclared with other arguments."""
    args_equivalent(current, received, QUEUE_ARGUMENTS, entity)
