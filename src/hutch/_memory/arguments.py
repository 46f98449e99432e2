"""Checks of declare arguments and the equivalence of redeclarations (RabbitMQ 3.10 texts)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hutch._exceptions import ChannelClosed
from hutch._memory.errors import (
    NOT_IMPLEMENTED,
    PRECONDITION_FAILED,
    VOID,
    amqp_type,
    channel_error,
    describe,
    show_value,
)

__all__ = [
    "check_consume_arguments",
    "check_queue_arguments",
    "inequivalent",
    "queue_arguments_equivalent",
]

#: The arguments of a classic queue, in RabbitMQ 3.10's order: the ones it validates, and
#: compares on redeclaration (``rabbit_classic_queue:capabilities()``).
QUEUE_ARGUMENTS = (
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
    "x-queue-master-locator",
)

#: Arguments of quorum queues and streams only: a classic queue refuses them.
OTHER_TYPES_QUEUE_ARGUMENTS = frozenset(
    {
        "x-dead-letter-strategy",
        "x-max-in-memory-length",
        "x-max-in-memory-bytes",
        "x-quorum-initial-group-size",
        "x-delivery-limit",
        "x-queue-leader-locator",
        "x-max-age",
        "x-stream-max-segment-size-bytes",
        "x-initial-cluster-size",
    }
)

#: RabbitMQ's ``rabbit_misc:check_expiry``: ten years, in milliseconds.
_MAX_EXPIRY = 315_360_000_000
_OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
_QUEUE_TYPES = ("classic", "quorum", "stream")

#: What a failed check says (RabbitMQ prints its error term with ``~p``).
_Check = Callable[[Any, Mapping[str, Any]], "str | None"]


def _quoted(text: str) -> str:
    return f'"{text}"'


def _int(value: Any, _args: Mapping[str, Any]) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return _quoted(f"expected integer, got {amqp_type(value)}")
    return None


def _non_negative(value: Any, args: Mapping[str, Any]) -> str | None:
    error = _int(value, args)
    if error is None and value < 0:
        return f"{{value_negative,{value}}}"
    return error


def _expiry(value: int) -> str | None:
    if value < 0:
        return f"{{value_negative,{value}}}"
    if value > _MAX_EXPIRY:
        return f"{{value_too_large,{value}}}"
    return None


def _expires(value: Any, args: Mapping[str, Any]) -> str | None:
    error = _int(value, args)
    if error is None:
        return f"{{value_zero,{value}}}" if value == 0 else _expiry(value)
    return error


def _message_ttl(value: Any, args: Mapping[str, Any]) -> str | None:
    error = _int(value, args)
    return _expiry(value) if error is None else error


def _max_priority(value: Any, args: Mapping[str, Any]) -> str | None:
    error = _non_negative(value, args)
    if error is None and value > 255:
        return f"{{max_value_exceeded,{value}}}"
    return error


def _string(value: Any, _args: Mapping[str, Any]) -> str | None:
    return None if isinstance(value, str) else f"{{unacceptable_type,{amqp_type(value)}}}"


def _dead_letter_routing_key(value: Any, args: Mapping[str, Any]) -> str | None:
    error = _string(value, args)
    if error is None and "x-dead-letter-exchange" not in args:
        return "routing_key_but_no_dlx_defined"
    return error


def _one_of(allowed: tuple[str, ...], otherwise: Callable[[str], str]) -> _Check:
    def check(value: Any, args: Mapping[str, Any]) -> str | None:
        error = _string(value, args)
        if error is None and value not in allowed:
            return otherwise(value)
        return error

    return check


def _queue_version(value: Any, args: Mapping[str, Any]) -> str | None:
    error = _non_negative(value, args)
    if error is None and value not in (1, 2):
        return _quoted(f"unsupported queue version '{value}'")
    return error


def _bool(value: Any, _args: Mapping[str, Any]) -> str | None:
    return None if isinstance(value, bool) else f"{{unacceptable_type,{amqp_type(value)}}}"


#: ``rabbit_amqqueue:declare_args()`` for a classic queue, in its order.
_VALIDATORS: tuple[tuple[str, _Check], ...] = (
    ("x-expires", _expires),
    ("x-message-ttl", _message_ttl),
    ("x-dead-letter-exchange", _string),
    ("x-dead-letter-routing-key", _dead_letter_routing_key),
    ("x-max-length", _non_negative),
    ("x-max-length-bytes", _non_negative),
    ("x-max-priority", _max_priority),
    ("x-overflow", _one_of(_OVERFLOW_MODES, lambda _v: "invalid_overflow")),
    (
        "x-queue-mode",
        _one_of(("default", "lazy"), lambda v: _quoted(f"unsupported queue mode '{v}'")),
    ),
    ("x-queue-version", _queue_version),
    ("x-single-active-consumer", _bool),
    ("x-queue-type", _one_of(_QUEUE_TYPES, lambda v: _quoted(f"unsupported queue type '{v}'"))),
)


def _invalid(key: str, queue: str, vhost: str, why: str) -> ChannelClosed:
    return channel_error(
        PRECONDITION_FAILED,
        f"invalid arg '{key}' for {describe('queue', queue, vhost)}: {why}",
    )


def check_queue_arguments(arguments: Mapping[str, Any], queue: str, vhost: str) -> None:
    """Raise the 406 RabbitMQ 3.10 gives a new classic queue's first invalid argument.

    In RabbitMQ's order (``rabbit_channel`` then ``rabbit_amqqueue:check_declare_arguments``):
    a dead-letter exchange that is not a string, ``x-queue-type``, each argument's type and
    range in ``declare_args()`` order, then the first argument (in the table's order) that
    only quorum queues or streams take. Unknown arguments are kept and ignored. A quorum
    queue or a stream is refused with 540 NOT_IMPLEMENTED: the memory broker has neither,
    and a classic queue in their place would only imitate them.

    Args:
        arguments: The declare arguments.
        queue: The queue's name (for the text).
        vhost: The vhost (for the text).

    Raises:
        ChannelClosed: 406 PRECONDITION_FAILED with RabbitMQ's text; 540 NOT_IMPLEMENTED
            for ``x-queue-type`` ``quorum`` or ``stream``.
    """
    if "x-dead-letter-exchange" in arguments:
        dlx = arguments["x-dead-letter-exchange"]
        if not isinstance(dlx, str):
            raise channel_error(
                PRECONDITION_FAILED,
                f"invalid type '{amqp_type(dlx)}' for arg 'x-dead-letter-exchange' in "
                + describe("queue", queue, vhost),
            )
    queue_type = [check for check in _VALIDATORS if check[0] == "x-queue-type"]
    for key, check in (*queue_type, *_VALIDATORS):
        if key in arguments:
            error = check(arguments[key], arguments)
            if error is not None:
                raise _invalid(key, queue, vhost, error)
        if key == "x-queue-type" and arguments.get(key, "classic") != "classic":
            # not imitated: a quorum queue or stream behaves differently in ways a test
            # could come to depend on (delivery limits, offsets, requeue order...)
            raise channel_error(
                NOT_IMPLEMENTED,
                f"the memory broker has no {arguments[key]} queues: "
                f"{describe('queue', queue, vhost)} needs RabbitMQ "
                "(mark a test that declares it rabbitmq_only)",
            )
    for key in arguments:
        if key in OTHER_TYPES_QUEUE_ARGUMENTS:
            raise channel_error(
                PRECONDITION_FAILED,
                f"invalid arg '{key}' for {describe('queue', queue, vhost)} "
                "of queue type rabbit_classic_queue",
            )


#: Consumer arguments of other queue types: RabbitMQ refuses them on a classic queue.
_OTHER_TYPES_CONSUME_ARGUMENTS = frozenset({"x-stream-offset"})

#: ``rabbit_amqqueue:consume_args()`` that apply to a classic queue, in its order.
_CONSUME_VALIDATORS: tuple[tuple[str, _Check], ...] = (
    ("x-priority", _int),
    ("x-cancel-on-ha-failover", _bool),
)


def check_consume_arguments(arguments: Mapping[str, Any], queue: str, vhost: str) -> int:
    """Check ``basic.consume`` arguments as RabbitMQ 3.10 does on a classic queue.

    ``x-priority`` must be an integer (any sign), ``x-cancel-on-ha-failover`` a bool (in
    that order); then arguments of other queue types are refused; anything else is ignored.

    Args:
        arguments: The consume arguments.
        queue: The queue's name (for the text).
        vhost: The vhost (for the text).

    Returns:
        The consumer's priority (``x-priority``, default 0).

    Raises:
        ChannelClosed: 406 PRECONDITION_FAILED: an argument has the wrong type or does not
            apply.
    """
    for key, check in _CONSUME_VALIDATORS:
        if key in arguments:
            error = check(arguments[key], arguments)
            if error is not None:
                raise _invalid(key, queue, vhost, error)
    for key in arguments:
        if key in _OTHER_TYPES_CONSUME_ARGUMENTS:
            raise channel_error(
                PRECONDITION_FAILED,
                f"invalid arg '{key}' for {describe('queue', queue, vhost)} "
                "of queue type rabbit_classic_queue",
            )
    priority: int = arguments.get("x-priority", 0)
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
    return amqp_type(value)


def args_equivalent(
    current: Mapping[str, Any], received: Mapping[str, Any], keys: tuple[str, ...], entity: str
) -> None:
    """Raise 406 for the first of ``keys`` whose value differs between the declarations."""
    for key in keys:
        # absent (None) and present with the void value (VOID) differ, as in RabbitMQ
        old, new = _present(current, key), _present(received, key)
        if key == "x-queue-type" and "classic" in (old, new) and None in (old, new):
            continue
        if old is None and new is None:
            continue
        if old is None or new is None:
            raise inequivalent(key, entity, new, old, typed=True)
        if _type_class(old) == _type_class(new) and old == new:
            continue
        raise inequivalent(key, entity, new, old, typed=False)


def _present(arguments: Mapping[str, Any], key: str) -> object:
    """``arguments[key]``: None if absent, :data:`VOID` if given as void (None)."""
    if key not in arguments:
        return None
    value = arguments[key]
    return VOID if value is None else value


def queue_arguments_equivalent(
    current: Mapping[str, Any], received: Mapping[str, Any], entity: str
) -> None:
    """Raise the 406 RabbitMQ gives when a queue is redeclared with other arguments."""
    args_equivalent(current, received, QUEUE_ARGUMENTS, entity)
