"""Dead-lettering: the message a queue sends to its dead-letter exchange.

As RabbitMQ 3.10 writes it (``rabbit_dead_letter``):

- routed with the queue's ``x-dead-letter-routing-key`` if set (the ``CC`` header is then
  removed), else with the message's own routing keys (``CC``/``BCC`` included);
- ``expiration`` is removed; a per-message one is kept as ``original-expiration``;
- ``x-death`` is an array of tables, newest first: ``count``, ``reason`` (``rejected``,
  ``expired``, ``maxlen``), ``queue``, ``time``, ``exchange``, ``routing-keys`` and
  ``original-expiration``. A death in the same queue for the same reason increments that
  entry's ``count`` (keeping its other fields) and moves it first; with two or more
  entries RabbitMQ regroups them first, which reverses their order (see ``_grouped``);
- the first death also sets ``x-first-death-reason``, ``-queue`` and ``-exchange``;
- a message that would go round a cycle of queues without any ``rejected`` death in it is
  not delivered to the queue that closes the cycle.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable
from typing import Any

from hutch._memory.message import Message, header_routes

__all__ = ["DeathReason", "dead_letter", "without_cycles"]


class DeathReason(str, enum.Enum):
    """Why a message was dead-lettered (the ``reason`` of its ``x-death`` entry)."""

    REJECTED = "rejected"
    EXPIRED = "expired"
    MAXLEN = "maxlen"


def dead_letter(
    message: Message,
    reason: DeathReason,
    *,
    queue: str,
    exchange: str,
    routing_key: str | None,
    now: float,
) -> Message:
    """The dead letter of ``message`` from ``queue``, to publish to ``exchange``.

    Args:
        message: The message that died.
        reason: Why.
        queue: The queue it died in.
        exchange: The dead-letter exchange (its new ``exchange``).
        routing_key: The queue's dead-letter routing key, or None.
        now: Clock time in seconds since the epoch (the ``time`` field).

    Returns:
        A new message with the ``x-death`` headers and the routing keys to route it by.
    """
    props = message.properties
    headers: dict[str, Any] = dict(props.headers or {})
    info: dict[str, Any] = {
        "reason": reason.value,
        "queue": queue,
        "time": datetime.datetime.fromtimestamp(int(now), tz=datetime.timezone.utc),
        "exchange": message.exchange,
        "routing-keys": [message.routing_keys[0], *header_routes(headers)],
    }
    if props.expiration is not None:
        info["original-expiration"] = props.expiration
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        headers["x-first-death-reason"] = reason.value
        headers["x-first-death-queue"] = queue
        headers["x-first-death-exchange"] = message.exchange
        headers["x-death"] = [{"count": 1, **info}]
    else:
        deaths = _grouped(deaths)
        same = [
            d
            for d in deaths
            if isinstance(d, dict) and d.get("queue") == queue and d.get("reason") == reason.value
        ]
        others = [d for d in deaths if not any(d is s for s in same)]
        if same:
            entry = dict(same[0])
            count = entry.get("count")
            entry["count"] = (count if isinstance(count, int) else 0) + 1
        else:
            entry = {"count": 1, **info}
        headers["x-death"] = [dict(sorted(entry.items())), *others]
    if routing_key is not None:
        headers.pop("CC", None)
        keys: tuple[str, ...] = (routing_key,)
    else:
        keys = message.routing_keys
    return Message(
        exchange=exchange,
        routing_keys=keys,
        body=message.body,
        properties=props.replace(headers=headers, expiration=None),
    )


def _key(death: object) -> tuple[object, object]:
    if isinstance(death, dict):
        return death.get("queue"), death.get("reason")
    return None, None


def _grouped(deaths: list[Any]) -> list[Any]:
    """RabbitMQ 3.10's ``group_by_queue_and_reason`` of the existing ``x-death`` entries.

    With two or more entries it folds them into a new list by prepending, so each update
    *reverses* the older entries (one per queue and reason, counted): RabbitMQ's real order,
    which the cycle check reads too.
    """
    if len(deaths) < 2:
        return deaths
    seen: set[tuple[object, object]] = set()
    grouped: list[Any] = []
    for death in deaths:
        key = _key(death)
        if key in seen:
            continue
        seen.add(key)
        matches = [d for d in deaths if _key(d) == key]
        first = matches[0]
        if isinstance(first, dict) and "count" not in first:
            first = {**first, "count": len(matches)}
        grouped.insert(0, first)
    return grouped


def without_cycles(reason: DeathReason, message: Message, queues: Iterable[str]) -> list[str]:
    """The queues a dead letter may go to: those that close no fully automatic cycle.

    Args:
        reason: The reason of the newest death.
        message: The dead letter (its ``x-death`` includes the newest death).
        queues: The queues it routes to.

    Returns:
        ``queues`` minus those that appear in its ``x-death`` with no ``rejected`` death
        from the newest entry back to (and including) that queue's entry.
    """
    targets = list(queues)
    if reason is DeathReason.REJECTED:
        return targets
    deaths = (message.properties.headers or {}).get("x-death")
    if not isinstance(deaths, list):
        return targets
    kept = []
    for name in targets:
        path: list[Any] = []
        found = False
        for death in deaths:
            path.append(death)
            if isinstance(death, dict) and death.get("queue") == name:
                found = True
                break
        automatic = found and all(
            not (isinstance(d, dict) and d.get("reason") == "rejected") for d in path
        )
        if not automatic:
            kept.append(name)
    return kept
