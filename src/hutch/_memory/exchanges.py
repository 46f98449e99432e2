"""Exchanges and how each type routes (RabbitMQ 3.10's rules).

- direct: the binding key equals one of the message's routing keys;
- fanout: every binding;
- topic: keys are words split on ``.`` (``""`` is zero words, ``"a."`` is ``a`` and an
  empty word); ``*`` matches exactly one word, ``#`` zero or more;
- headers: ``x-match`` ``all`` (default) / ``any`` compare the binding's arguments whose
  names do not start with ``x-`` with the message's headers; ``all-with-x`` / ``any-with-x``
  compare the ``x-`` ones too (except ``x-match``). An argument without a value (void)
  asks only that the header be present. Values compare as Erlang's ``==`` does: strings and
  byte strings by their bytes, numbers by value (``1 == 1.0``), booleans only with
  booleans.
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from hutch._topology import ExchangeType

__all__ = [
    "BUILTIN_EXCHANGES",
    "X_MATCH_MODES",
    "Binding",
    "MemoryExchange",
    "headers_match",
    "topic_match",
]

#: The exchanges every vhost has: name -> type.
BUILTIN_EXCHANGES: dict[str, ExchangeType] = {
    "": ExchangeType.DIRECT,
    "amq.direct": ExchangeType.DIRECT,
    "amq.fanout": ExchangeType.FANOUT,
    "amq.topic": ExchangeType.TOPIC,
    "amq.headers": ExchangeType.HEADERS,
    "amq.match": ExchangeType.HEADERS,
    "amq.rabbitmq.trace": ExchangeType.TOPIC,
}

X_MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")


@dataclass(frozen=True)
class Binding:
    """A binding from an exchange to a queue or another exchange.

    Attributes:
        source: The exchange's name.
        destination: The queue's or exchange's name.
        to_exchange: True if ``destination`` is an exchange.
        routing_key: The binding key.
        arguments: The binding arguments (for headers exchanges: what to match).
    """

    source: str
    destination: str
    to_exchange: bool
    routing_key: str
    arguments: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def freeze(arguments: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
        """Binding arguments as a hashable, key-sorted tuple (identity of a binding)."""
        return tuple(sorted((k, _hashable(v)) for k, v in (arguments or {}).items()))


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return ("__table__", tuple(sorted((k, _hashable(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("__array__", tuple(_hashable(v) for v in value))
    return value


@dataclass
class MemoryExchange:
    """An exchange of a vhost and its outgoing bindings (broker-internal; under its lock).

    Attributes:
        name: Its name ('' is the default exchange).
        type: How it routes.
        durable: As declared (kept only for equivalence checks: nothing persists).
        auto_delete: Deleted when its last outgoing binding goes, once it had one.
        internal: Clients may not publish to it.
        arguments: As declared (``alternate-exchange`` is honoured).
        bindings: Its outgoing bindings.
    """

    name: str
    type: ExchangeType
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    bindings: set[Binding] = field(default_factory=set)

    @property
    def alternate(self) -> str | None:
        """The ``alternate-exchange`` argument, if it is a string."""
        value = self.arguments.get("alternate-exchange")
        return value if isinstance(value, str) else None

    def match(
        self, routing_keys: tuple[str, ...], headers: Mapping[str, Any] | None
    ) -> list[Binding]:
        """The bindings a message with these routing keys and headers goes through.

        Args:
            routing_keys: The publish routing key, then ``CC``/``BCC`` keys.
            headers: The message's header table.

        Returns:
            The matching bindings (a destination may appear more than once).
        """
        kind = self.type
        if kind is ExchangeType.FANOUT:
            return list(self.bindings)
        if kind is ExchangeType.DIRECT:
            keys = set(routing_keys)
            return [b for b in self.bindings if b.routing_key in keys]
        if kind is ExchangeType.TOPIC:
            return [
                b for b in self.bindings if any(topic_match(b.routing_key, k) for k in routing_keys)
            ]
        return [b for b in self.bindings if headers_match(dict(b.arguments), headers or {})]


# ------------------------------------------------------------------------------ topic


def _words(key: str) -> tuple[str, ...]:
    return () if key == "" else tuple(key.split("."))


@lru_cache(maxsize=4096)
def topic_match(pattern: str, routing_key: str) -> bool:
    """True if a topic binding key matches a routing key, as RabbitMQ's topic trie does.

    Args:
        pattern: The binding key (``*`` one word, ``#`` zero or more words).
        routing_key: The message's routing key.

    Returns:
        Whether the message goes through the binding.

    Example:
        >>> topic_match("a.#.b", "a.b"), topic_match("*", "")
        (True, False)
    """
    pat, key = _words(pattern), _words(routing_key)
    # reachable[j]: the pattern's first i words can match the key's first j words
    reachable = [True] + [False] * len(key)
    for word in pat:
        if word == "#":
            nxt = list(reachable)
            for j in range(1, len(key) + 1):
                nxt[j] = nxt[j] or nxt[j - 1]
        else:
            nxt = [False] * (len(key) + 1)
            for j in range(1, len(key) + 1):
                nxt[j] = reachable[j - 1] and (word == "*" or word == key[j - 1])
        reachable = nxt
    return reachable[len(key)]


# ------------------------------------------------------------------------------ headers


def _erlang_term(value: Any) -> Any:
    """A key under which two header values are equal iff RabbitMQ finds them ``==``."""
    if value is None:
        return ("void",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)  # Erlang: 1 == 1.0
    if isinstance(value, decimal.Decimal):
        return ("decimal", value)
    if isinstance(value, str):
        return ("binary", value.encode())
    if isinstance(value, (bytes, bytearray)):
        return ("binary", bytes(value))
    if isinstance(value, datetime.datetime):
        return ("number", int(value.timestamp()))
    if isinstance(value, Mapping):
        return ("table", tuple(sorted((k, _typed(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("array", tuple(_typed(v) for v in value))
    return ("other", repr(value))


def _typed(value: Any) -> Any:
    # inside tables and arrays Erlang compares {Type, Value} pairs: the type counts
    from hutch._memory.errors import amqp_type

    return (amqp_type(value), _erlang_term(value))


def headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    """True if a headers-exchange binding matches a message's headers (RabbitMQ 3.10).

    Args:
        arguments: The binding's arguments, ``x-match`` included.
        headers: The message's headers.

    Returns:
        Whether the message goes through the binding.

    Example:
        >>> headers_match({"x-match": "any", "a": 1, "b": 2}, {"b": 2.0})
        True
    """
    mode = arguments.get("x-match", "all")
    if isinstance(mode, bytes):
        mode = mode.decode("utf-8", "replace")
    if mode not in X_MATCH_MODES:
        mode = "all"
    with_x = mode.endswith("-with-x")
    want_all = mode.startswith("all")
    any_matched = False
    for name, expected in arguments.items():
        if name == "x-match" or (name.startswith("x-") and not with_x):
            continue
        if name in headers and (
            expected is None or _erlang_term(expected) == _erlang_term(headers[name])
        ):
            any_matched = True
            if not want_all:
                return True
        elif want_all:
            return False
    return want_all or any_matched
