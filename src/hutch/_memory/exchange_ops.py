"""Declaring and deleting exchanges, and binding (a Broker mixin).

RabbitMQ 3.10's rules: the default exchange refuses every operation; ``amq.*`` names are
reserved for new exchanges; a redeclaration must match type, durable, auto-delete,
internal and ``alternate-exchange``; an auto-delete exchange goes when its last binding
does; unbinding is idempotent. Everything here runs under the broker's lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hutch._memory import errors
from hutch._memory.arguments import args_equivalent, inequivalent
from hutch._memory.errors import amqp_type, describe
from hutch._memory.exchanges import BUILTIN_EXCHANGES, X_MATCH_MODES, Binding, MemoryExchange
from hutch._memory.parts import BrokerPart
from hutch._topology import ExchangeType

if TYPE_CHECKING:
    from hutch._memory.broker import Vhost
    from hutch._memory.connection import MemoryChannel

__all__ = ["ExchangeOperations"]


class ExchangeOperations(BrokerPart):
    """``exchange.declare`` / ``exchange.delete`` and the (un)binds (a Broker mixin)."""

    # ------------------------------------------------------------------ exchanges
    def exchange_declare(
        self,
        ch: MemoryChannel,
        name: str,
        type: ExchangeType | str,
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """``exchange.declare`` (see RabbitMQ's equivalence rules in the module docs)."""
        vhost = ch.vhost

        def op(now: float) -> None:
            entity = describe("exchange", name, vhost.name)
            if name == "":
                raise errors.channel_error(
                    errors.ACCESS_REFUSED, "operation not permitted on the default exchange"
                )
            existing = vhost.exchanges.get(name)
            if passive:
                if existing is None:
                    raise errors.no_exchange(name, vhost.name)
                return
            kind = ExchangeType(type)
            if existing is None:
                if name.startswith("amq."):
                    raise errors.channel_error(
                        errors.ACCESS_REFUSED,
                        f"exchange name '{name}' contains reserved prefix 'amq.*'",
                    )
                alternate = (arguments or {}).get("alternate-exchange", "")
                if not isinstance(alternate, str):
                    raise errors.channel_error(
                        errors.PRECONDITION_FAILED,
                        f"invalid type '{amqp_type(alternate)}' for arg 'alternate-exchange' "
                        f"in {entity}",
                    )
                vhost.exchanges[name] = MemoryExchange(
                    name, kind, durable, auto_delete, internal, dict(arguments or {})
                )
                return
            for key, old, new in (
                ("type", existing.type.value, kind.value),
                ("durable", existing.durable, durable),
                ("auto_delete", existing.auto_delete, auto_delete),
                ("internal", existing.internal, internal),
            ):
                if old != new:
                    raise inequivalent(key, entity, new, old, typed=False)
            args_equivalent(existing.arguments, arguments or {}, ("alternate-exchange",), entity)

        self.run(ch, op)

    def exchange_delete(self, ch: MemoryChannel, name: str, *, if_unused: bool = False) -> None:
        """``exchange.delete``: deleting a missing exchange succeeds, as in RabbitMQ 3.10."""
        vhost = ch.vhost

        def op(now: float) -> None:
            if name == "":
                raise errors.channel_error(
                    errors.ACCESS_REFUSED, "operation not permitted on the default exchange"
                )
            if name in BUILTIN_EXCHANGES:
                raise errors.channel_error(
                    errors.ACCESS_REFUSED,
                    f"deletion of system {describe('exchange', name, vhost.name)} not allowed",
                )
            exchange = vhost.exchanges.get(name)
            if exchange is None:
                return
            if if_unused and exchange.bindings:
                raise errors.channel_error(
                    errors.PRECONDITION_FAILED, f"{describe('exchange', name, vhost.name)} in use"
                )
            self._delete_exchange(vhost, exchange)

        self.run(ch, op)

    def _delete_exchange(self, vhost: Vhost, exchange: MemoryExchange) -> None:
        vhost.exchanges.pop(exchange.name, None)
        for other in list(vhost.exchanges.values()):
            gone = {b for b in other.bindings if b.to_exchange and b.destination == exchange.name}
            if gone:
                other.bindings -= gone
                self._maybe_auto_delete_exchange(vhost, other)

    def _maybe_auto_delete_exchange(self, vhost: Vhost, exchange: MemoryExchange) -> None:
        if exchange.auto_delete and not exchange.bindings and exchange.name in vhost.exchanges:
            self._delete_exchange(vhost, exchange)

    # ------------------------------------------------------------------ bindings
    def bind(
        self,
        ch: MemoryChannel,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
        *,
        to_exchange: bool = False,
        unbind: bool = False,
    ) -> None:
        """``queue.bind`` / ``exchange.bind`` (and their ``unbind``, which is idempotent)."""
        vhost = ch.vhost

        def op(now: float) -> None:
            if source == "" or (to_exchange and destination == ""):
                raise errors.channel_error(
                    errors.ACCESS_REFUSED, "operation not permitted on the default exchange"
                )
            exchange = vhost.exchanges.get(source)
            binding = Binding(
                source, destination, to_exchange, routing_key, Binding.freeze(arguments)
            )
            if unbind:
                # RabbitMQ's rabbit_binding:remove checks a queue's exclusive access only
                # when the binding exists: removing none is ok for any connection
                if exchange is None or binding not in exchange.bindings:
                    return
                if not to_exchange and destination in vhost.queues:
                    self._check_access(vhost.queues[destination], ch.connection)
                exchange.bindings.discard(binding)
                self._maybe_auto_delete_exchange(vhost, exchange)
                return
            if exchange is None:
                raise errors.no_exchange(source, vhost.name)
            if to_exchange:
                if destination not in vhost.exchanges:
                    raise errors.no_exchange(destination, vhost.name)
            else:
                self._queue(ch, destination)
            if exchange.type is ExchangeType.HEADERS and arguments and "x-match" in arguments:
                mode = arguments["x-match"]
                if mode not in X_MATCH_MODES:
                    shown = mode.decode() if isinstance(mode, bytes) else mode
                    raise errors.channel_error(
                        errors.PRECONDITION_FAILED,
                        f'Invalid x-match field value <<"{shown}">>; expected all, any, '
                        "all-with-x, or any-with-x",
                    )
            exchange.bindings.add(binding)

        self.run(ch, op)
