"""Declarative topology: exchanges, queues and the bindings between them.

These are plain immutable values: building them does no I/O. A channel declares them
(exchanges first, then queues, then bindings) and declares them again after a reconnect.

Each has ``to_dict()`` and ``from_dict()``: the plain-data form that ``hutch declare`` reads
from TOML or YAML. ``from_dict`` checks the keys and the type of each value, then calls the
constructor, so a dict obeys exactly the rules the constructor does; a bad dict raises
:class:`TopologyDataError` naming the key.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar, Union

from hutch._checks import check_bool, check_float, check_int, check_shortstr, check_str
from hutch._topology_checks import (
    _Bad,
    _check_bool,
    _check_int,
    _check_number,
    _check_str,
    _check_table,
    _one_of,
    _optional,
    _short,
)

__all__ = [
    "Binding",
    "Exchange",
    "ExchangeType",
    "Overflow",
    "Queue",
    "QueueType",
    "TopologyDataError",
    "bind",
]

_T = TypeVar("_T")

#: Header and argument values RabbitMQ accepts in tables.
FieldValue = Union[
    str, int, float, bool, bytes, None, Sequence["FieldValue"], Mapping[str, "FieldValue"]
]


class ExchangeType(str, enum.Enum):
    """The four AMQP 0-9-1 exchange types, and RabbitMQ's consistent-hash exchange.

    Plain strings (``"topic"``) are accepted too. ``CONSISTENT_HASH``
    (``x-consistent-hash``) needs the ``rabbitmq_consistent_hash_exchange`` plugin, which
    ships with the server: it hashes the routing key and the binding keys are weights.
    """

    FANOUT = "fanout"
    DIRECT = "direct"
    TOPIC = "topic"
    HEADERS = "headers"
    CONSISTENT_HASH = "x-consistent-hash"


class QueueType(str, enum.Enum):
    """Queue implementations (``x-queue-type``).

    A ``stream`` is an append-only log: consuming does not remove messages, and a
    consumer says where to start reading (``Subscriber(..., offset=...)``).
    """

    CLASSIC = "classic"
    QUORUM = "quorum"
    STREAM = "stream"


class Overflow(str, enum.Enum):
    """What a queue does when it reaches its max length (``x-overflow``)."""

    DROP_HEAD = "drop-head"
    REJECT_PUBLISH = "reject-publish"
    REJECT_PUBLISH_DLX = "reject-publish-dlx"


class TopologyDataError(ValueError):
    """A dict given to ``from_dict`` does not describe a valid exchange, queue or binding.

    Args:
        entity: ``"exchange"``, ``"queue"`` or ``"binding"``.
        key: The offending key (dotted for a nested one, e.g. ``"exchange.type"``), or
            None when the entry as a whole breaks a rule (e.g. a quorum queue that is not
            durable).
        problem: What is wrong, and what would be right.

    Attributes:
        entity: As given.
        key: As given.
        problem: As given.

    Example:
        >>> Queue.from_dict({"name": "q", "max_lenght": 3})
        Traceback (most recent call last):
        ...
        hutch._topology.TopologyDataError: queue.max_lenght: Extra inputs are not permitted; ...
    """

    def __init__(self, entity: str, key: str | None, problem: str) -> None:
        self.entity = entity
        self.key = key
        self.problem = problem
        super().__init__(f"{entity}{self.path}: {problem}")

    @property
    def path(self) -> str:
        """The key as a suffix for the entry's name: ``".max_length"``, ``"['a b']"``, or ``""``."""
        if self.key is None:
            return ""
        if _PLAIN_PATH.fullmatch(self.key):
            return "." + self.key
        return f"[{self.key!r}]"


_PLAIN_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")


def _kwargs(
    entity: str,
    data: object,
    checks: Mapping[str, Callable[[object], object]],
    required: Sequence[str],
) -> dict[str, object]:
    """Check ``data``'s keys and value types against ``checks``; return constructor kwargs."""
    if not isinstance(data, Mapping):
        raise TypeError(f"a {entity} is described by a mapping, got {type(data).__name__}")
    for key in data:
        if not isinstance(key, str) or key not in checks:
            raise TopologyDataError(
                entity,
                str(key),
                f"Extra inputs are not permitted; the allowed keys are {', '.join(checks)}",
            )
    for key in required:
        if key not in data:
            raise TopologyDataError(entity, key, "Field required")
    kwargs: dict[str, object] = {}
    for key, value in data.items():
        try:
            kwargs[key] = checks[key](value)
        except _Bad as exc:
            raise TopologyDataError(entity, key, str(exc)) from None
    return kwargs


def _construct(entity: str, build: Callable[[], _T]) -> _T:
    try:
        return build()
    except (ValueError, TypeError) as exc:
        raise TopologyDataError(entity, None, str(exc)) from None


def _check_name(kind: str, name: object) -> None:
    check_shortstr(f"{kind} name", name)


@dataclass(frozen=True)
class Exchange:
    """An exchange to declare.

    Args:
        name: Exchange name; ``""`` is the default exchange (never declared).
        type: Exchange type, an :class:`ExchangeType` or its string value.
        durable: Survive a broker restart (default True).
        auto_delete: Delete when the last binding is removed.
        internal: Only other exchanges may publish to it.
        arguments: Extra ``x-`` arguments, e.g. ``{"alternate-exchange": "unrouted"}``.

    Example:
        >>> Exchange("logs", type="fanout").type
        <ExchangeType.FANOUT: 'fanout'>
    """

    name: str
    type: ExchangeType | str = ExchangeType.DIRECT
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: Mapping[str, FieldValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_name("exchange", self.name)
        if self.name.startswith("amq.") and self.name not in _BUILTIN_EXCHANGES:
            raise ValueError(f"exchange names starting with 'amq.' are reserved: {self.name!r}")
        try:
            object.__setattr__(self, "type", ExchangeType(self.type))
        except ValueError:
            raise ValueError(
                f"unknown exchange type {self.type!r}: use one of "
                + ", ".join(t.value for t in ExchangeType)
            ) from None
        object.__setattr__(self, "arguments", dict(self.arguments))

    @property
    def exchange_type(self) -> ExchangeType:
        """The exchange type as an enum."""
        return ExchangeType(self.type)

    def __hash__(self) -> int:
        return hash((self.name, self.type))

    @property
    def is_default(self) -> bool:
        """True for the default exchange and the built-in ``amq.*`` ones (never declared)."""
        return self.name == "" or self.name in _BUILTIN_EXCHANGES

    def to_dict(self) -> dict[str, FieldValue]:
        """The plain-data form of this exchange, as ``hutch declare`` reads it.

        Returns:
            ``name``, ``type`` (a string), ``durable``, ``auto_delete``, ``internal`` and
            ``arguments``; :meth:`from_dict` turns it back into an equal exchange.

        Example:
            >>> Exchange("logs", type="fanout").to_dict()["type"]
            'fanout'
        """
        return {
            "name": self.name,
            "type": ExchangeType(self.type).value,
            "durable": self.durable,
            "auto_delete": self.auto_delete,
            "internal": self.internal,
            "arguments": dict(self.arguments),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Exchange:
        """Build an exchange from its plain-data form (see :meth:`to_dict`).

        Only ``name`` is required; the other keys default as in the constructor.

        Args:
            data: The keys and values, e.g. a ``[[exchanges]]`` entry of a TOML file.

        Returns:
            The exchange.

        Raises:
            TypeError: ``data`` is not a mapping.
            TopologyDataError: An unknown or missing key, a value of the wrong type, or a
                value the constructor rejects (a ``ValueError``).

        Example:
            >>> Exchange.from_dict({"name": "orders", "type": "topic"}).type
            <ExchangeType.TOPIC: 'topic'>
        """
        kwargs = _kwargs("exchange", data, _EXCHANGE_KEYS, ("name",))
        return _construct("exchange", lambda: cls(**kwargs))  # type: ignore[arg-type]


_BUILTIN_EXCHANGES = {
    "amq.direct",
    "amq.fanout",
    "amq.topic",
    "amq.headers",
    "amq.match",
    "amq.rabbitmq.trace",
}

_EXCHANGE_KEYS: dict[str, Callable[[object], object]] = {
    "name": _check_str,
    "type": _one_of(*(t.value for t in ExchangeType)),
    "durable": _check_bool,
    "auto_delete": _check_bool,
    "internal": _check_bool,
    "arguments": _check_table,
}


@dataclass(frozen=True, eq=False)
class Queue:
    """A queue to declare.

    An empty name asks the broker for a server-named queue, which is then exclusive,
    auto-deleted and not durable unless said otherwise; such a queue gets a new name each
    time it is declared (so after a reconnect too). Queues compare by identity for that
    reason.

    Args:
        name: Queue name, or ``""`` for a server-named exclusive queue.
        durable: Survive a broker restart. Defaults to True for named queues.
        exclusive: Only this connection may use it; deleted when it closes.
        auto_delete: Delete when the last consumer goes away.
        dead_letter_exchange: Where rejected or expired messages go (``x-dead-letter-exchange``).
        dead_letter_routing_key: Routing key for dead letters (``x-dead-letter-routing-key``).
        message_ttl: Per-queue message time to live in seconds (``x-message-ttl``).
        expires: Delete the queue after this many idle seconds (``x-expires``).
        max_length: Maximum number of ready messages (``x-max-length``).
        max_length_bytes: Maximum total body size of ready messages (``x-max-length-bytes``).
        overflow: Behaviour at max length (``x-overflow``).
        queue_type: ``classic``, ``quorum`` or ``stream`` (quorum queues and streams are
            always durable, never exclusive or auto-delete).
        max_priority: Enable priorities 0..max_priority (``x-max-priority``, classic only).
        single_active_consumer: Deliver to one consumer at a time; the others wait and
            the next takes over when it goes away (``x-single-active-consumer``; classic
            and quorum queues).
        delivery_limit: Quorum queues only: after this many redeliveries (returns by a
            consumer that died or nacked with requeue) a message is dead-lettered, or
            dropped without a dead-letter exchange (``x-delivery-limit``).
        arguments: Any further ``x-`` arguments.

    Example:
        >>> Queue("tasks", dead_letter_exchange="", dead_letter_routing_key="tasks.dead").arguments
        {'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': 'tasks.dead'}
    """

    name: str = ""
    durable: bool | None = None
    exclusive: bool | None = None
    auto_delete: bool | None = None
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    message_ttl: float | None = None
    expires: float | None = None
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: Overflow | str | None = None
    queue_type: QueueType | str | None = None
    max_priority: int | None = None
    single_active_consumer: bool = False
    delivery_limit: int | None = None
    extra_arguments: Mapping[str, FieldValue] = field(default_factory=dict)

    def __init__(
        self,
        name: str = "",
        *,
        durable: bool | None = None,
        exclusive: bool | None = None,
        auto_delete: bool | None = None,
        dead_letter_exchange: str | None = None,
        dead_letter_routing_key: str | None = None,
        message_ttl: float | None = None,
        expires: float | None = None,
        max_length: int | None = None,
        max_length_bytes: int | None = None,
        overflow: Overflow | str | None = None,
        queue_type: QueueType | str | None = None,
        max_priority: int | None = None,
        single_active_consumer: bool = False,
        delivery_limit: int | None = None,
        arguments: Mapping[str, FieldValue] | None = None,
    ) -> None:
        _check_name("queue", name)
        if name.startswith("amq.") and name != "amq.rabbitmq.reply-to":
            raise ValueError(f"queue names starting with 'amq.' are reserved: {name!r}")
        server_named = name == ""
        qtype = None
        if queue_type is not None:
            try:
                qtype = QueueType(queue_type)
            except ValueError:
                raise ValueError(
                    f"unknown queue_type {queue_type!r}: use 'classic', 'quorum' or 'stream'"
                ) from None
        if overflow is not None:
            try:
                overflow = Overflow(overflow)
            except ValueError:
                raise ValueError(
                    f"unknown overflow {overflow!r}: use one of "
                    + ", ".join(o.value for o in Overflow)
                ) from None
        if durable is None:
            durable = not server_named
        if exclusive is None:
            exclusive = server_named
        if auto_delete is None:
            auto_delete = server_named
        if qtype in (QueueType.QUORUM, QueueType.STREAM) and (
            not durable or exclusive or auto_delete
        ):
            raise ValueError(
                f"{qtype.value} queues must be durable, non-exclusive and not auto-delete"
            )
        check_bool("single_active_consumer", single_active_consumer)
        if single_active_consumer and qtype is QueueType.STREAM:
            raise ValueError("single_active_consumer is for classic and quorum queues, not streams")
        if delivery_limit is not None and qtype is not QueueType.QUORUM:
            raise ValueError("delivery_limit needs queue_type='quorum'")
        if max_priority is not None and qtype is QueueType.STREAM:
            raise ValueError("streams have no priorities: drop max_priority")
        for label, number in (
            ("message_ttl", message_ttl),
            ("expires", expires),
            ("max_length", max_length),
            ("max_length_bytes", max_length_bytes),
            ("max_priority", max_priority),
            ("delivery_limit", delivery_limit),
        ):
            if number is None:
                continue
            whole = label not in ("message_ttl", "expires")
            if whole:
                check_int(label, number, low=0)
            else:
                check_float(label, number, low=0)
            if number * (1 if whole else 1000) >= 2**63:
                raise ValueError(f"{label} is too large for the broker, got {number!r}")
        if expires is not None and expires <= 0:
            raise ValueError("expires must be positive (seconds)")
        if max_priority is not None and max_priority > 255:
            raise ValueError(f"max_priority must be 255 at most, got {max_priority}")
        for key, value in {
            "name": name,
            "durable": durable,
            "exclusive": exclusive,
            "auto_delete": auto_delete,
            "dead_letter_exchange": dead_letter_exchange,
            "dead_letter_routing_key": dead_letter_routing_key,
            "message_ttl": message_ttl,
            "expires": expires,
            "max_length": max_length,
            "max_length_bytes": max_length_bytes,
            "overflow": overflow,
            "queue_type": qtype,
            "max_priority": max_priority,
            "single_active_consumer": single_active_consumer,
            "delivery_limit": delivery_limit,
            "extra_arguments": dict(arguments or {}),
        }.items():
            object.__setattr__(self, key, value)

    @property
    def server_named(self) -> bool:
        """True if the broker picks this queue's name."""
        return self.name == ""

    @property
    def arguments(self) -> dict[str, FieldValue]:
        """The ``x-`` arguments sent with ``queue.declare``."""
        args: dict[str, FieldValue] = {}
        if self.dead_letter_exchange is not None:
            args["x-dead-letter-exchange"] = self.dead_letter_exchange
        if self.dead_letter_routing_key is not None:
            args["x-dead-letter-routing-key"] = self.dead_letter_routing_key
        if self.message_ttl is not None:
            args["x-message-ttl"] = round(self.message_ttl * 1000)
        if self.expires is not None:
            args["x-expires"] = round(self.expires * 1000)
        if self.max_length is not None:
            args["x-max-length"] = self.max_length
        if self.max_length_bytes is not None:
            args["x-max-length-bytes"] = self.max_length_bytes
        if self.overflow is not None:
            args["x-overflow"] = Overflow(self.overflow).value
        if self.queue_type is not None:
            args["x-queue-type"] = QueueType(self.queue_type).value
        if self.max_priority is not None:
            args["x-max-priority"] = self.max_priority
        if self.single_active_consumer:
            args["x-single-active-consumer"] = True
        if self.delivery_limit is not None:
            args["x-delivery-limit"] = self.delivery_limit
        args.update(self.extra_arguments)
        return args

    def describe(self) -> str:
        """A short description for error messages, e.g. ``"queue 'tasks'"``."""
        return f"queue {self.name!r}" if self.name else "server-named queue"

    def to_dict(self) -> dict[str, FieldValue]:
        """The plain-data form of this queue, as ``hutch declare`` reads it.

        Returns:
            ``name``, ``durable``, ``exclusive``, ``auto_delete``, the options that are set
            (times in seconds, enums as strings) and ``arguments`` (the extra ones);
            :meth:`from_dict` turns it back into a queue with the same settings (queues
            compare by identity, so not an *equal* one).

        Example:
            >>> Queue("tasks", max_length=10).to_dict()["max_length"]
            10
        """
        data: dict[str, FieldValue] = {
            "name": self.name,
            "durable": self.durable,
            "exclusive": self.exclusive,
            "auto_delete": self.auto_delete,
        }
        if self.single_active_consumer:
            data["single_active_consumer"] = True
        for key in _QUEUE_OPTIONS:
            value = getattr(self, key)
            if isinstance(value, enum.Enum):
                value = value.value
            if value is not None:
                data[key] = value
        data["arguments"] = dict(self.extra_arguments)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Queue:
        """Build a queue from its plain-data form (see :meth:`to_dict`).

        ``name`` is required (``""`` asks for a server-named queue); the other keys take
        the constructor's arguments and defaults.

        Args:
            data: The keys and values, e.g. a ``[[queues]]`` entry of a TOML file.

        Returns:
            The queue.

        Raises:
            TypeError: ``data`` is not a mapping.
            TopologyDataError: An unknown or missing key, a value of the wrong type, or a
                value the constructor rejects (a ``ValueError``).

        Example:
            >>> Queue.from_dict({"name": "audit", "message_ttl": 60}).arguments
            {'x-message-ttl': 60000}
        """
        kwargs = _kwargs("queue", data, _QUEUE_KEYS, ("name",))
        return _construct("queue", lambda: cls(**kwargs))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        flags = [f for f in ("durable", "exclusive", "auto_delete") if getattr(self, f)]
        return (
            f"Queue({self.name!r}, {', '.join(flags) or 'transient'}, arguments={self.arguments})"
        )


_QUEUE_OPTIONS = (
    "dead_letter_exchange",
    "dead_letter_routing_key",
    "message_ttl",
    "expires",
    "max_length",
    "max_length_bytes",
    "overflow",
    "queue_type",
    "max_priority",
    "delivery_limit",
)
_QUEUE_KEYS: dict[str, Callable[[object], object]] = {
    "name": _check_str,
    "durable": _optional(_check_bool),
    "exclusive": _optional(_check_bool),
    "auto_delete": _optional(_check_bool),
    "dead_letter_exchange": _optional(_check_str),
    "dead_letter_routing_key": _optional(_check_str),
    "message_ttl": _optional(_check_number),
    "expires": _optional(_check_number),
    "max_length": _optional(_check_int),
    "max_length_bytes": _optional(_check_int),
    "overflow": _optional(_one_of(*(o.value for o in Overflow))),
    "queue_type": _optional(_one_of(*(t.value for t in QueueType))),
    "max_priority": _optional(_check_int),
    "single_active_consumer": _check_bool,
    "delivery_limit": _optional(_check_int),
    "arguments": _check_table,
}

MatchMode = Literal["all", "any", "all-with-x", "any-with-x"]


@dataclass(frozen=True)
class Binding:
    """A binding of a queue (or exchange) to an exchange.

    For direct and topic exchanges the ``routing_key`` is the binding key (topic keys use
    ``*`` for exactly one word and ``#`` for zero or more). For headers exchanges pass
    ``headers`` and ``match``; the routing key is ignored by the broker.

    Args:
        exchange: The source exchange (object or name).
        queue: The destination queue (object or name).
        routing_key: The binding key.
        headers: For headers exchanges: the header values to match.
        match: ``"all"`` (default) or ``"any"`` of ``headers`` must match (``x-match``).
        arguments: Further binding arguments.

    Example:
        >>> Binding("amq.topic", "audit", routing_key="order.#").routing_key
        'order.#'
    """

    exchange: Exchange | str
    queue: Queue | str
    routing_key: str = ""
    headers: Mapping[str, FieldValue] | None = None
    match: MatchMode = "all"
    arguments: Mapping[str, FieldValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.exchange, (Exchange, str)):
            raise TypeError("Binding.exchange must be an Exchange or a name")
        if not isinstance(self.queue, (Queue, str)):
            raise TypeError("Binding.queue must be a Queue or a name")
        if self.exchange_name == "":
            raise ValueError(
                "queues cannot be bound to the default exchange: it routes by queue name already"
            )
        check_str("routing_key", self.routing_key)
        if self.match not in ("all", "any", "all-with-x", "any-with-x"):
            raise ValueError(f"match must be 'all' or 'any', got {self.match!r}")

    @property
    def exchange_name(self) -> str:
        """The source exchange's name."""
        return self.exchange.name if isinstance(self.exchange, Exchange) else self.exchange

    @property
    def binding_arguments(self) -> dict[str, FieldValue]:
        """Arguments sent with ``queue.bind`` (``x-match`` and headers for headers exchanges)."""
        args: dict[str, FieldValue] = dict(self.arguments)
        if self.headers is not None:
            args["x-match"] = self.match
            args.update(self.headers)
        return args

    def __hash__(self) -> int:
        return hash((self.exchange_name, id(self.queue), self.routing_key))

    def to_dict(self) -> dict[str, FieldValue]:
        """The plain-data form of this binding, as ``hutch declare`` reads it.

        Returns:
            ``exchange`` and ``queue`` (a name, or the nested form of an
            :class:`Exchange` / :class:`Queue` object), ``routing_key``, ``headers`` (when
            set), ``match`` and ``arguments``; :meth:`from_dict` turns it back.

        Example:
            >>> Binding("amq.topic", "audit", routing_key="order.#").to_dict()["queue"]
            'audit'
        """
        data: dict[str, FieldValue] = {
            "exchange": self.exchange.to_dict()
            if isinstance(self.exchange, Exchange)
            else self.exchange,
            "queue": self.queue.to_dict() if isinstance(self.queue, Queue) else self.queue,
            "routing_key": self.routing_key,
        }
        if self.headers is not None:
            data["headers"] = dict(self.headers)
        data["match"] = self.match
        data["arguments"] = dict(self.arguments)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Binding:
        """Build a binding from its plain-data form (see :meth:`to_dict`).

        ``exchange`` and ``queue`` are required: names, or nested exchange and queue
        mappings.

        Args:
            data: The keys and values, e.g. a ``[[bindings]]`` entry of a TOML file with a
                single routing key.

        Returns:
            The binding.

        Raises:
            TypeError: ``data`` is not a mapping.
            TopologyDataError: An unknown or missing key, a value of the wrong type, or a
                value the constructor rejects (a ``ValueError``).

        Example:
            >>> Binding.from_dict({"exchange": "orders", "queue": "audit"}).exchange_name
            'orders'
        """
        kwargs = _kwargs("binding", data, _BINDING_KEYS, ("exchange", "queue"))
        for key, entity in (("exchange", Exchange), ("queue", Queue)):
            value = kwargs[key]
            if isinstance(value, Mapping):
                try:
                    kwargs[key] = entity.from_dict(value)
                except TopologyDataError as exc:
                    nested = f"{key}.{exc.key}" if exc.key else key
                    raise TopologyDataError("binding", nested, exc.problem) from None
        return _construct("binding", lambda: cls(**kwargs))  # type: ignore[arg-type]


def _name_or_table(value: object) -> object:
    if isinstance(value, Mapping):
        return value
    if not isinstance(value, str):
        raise _Bad(f"Input should be a name or a table, got {_short(value)}")
    return value


_BINDING_KEYS: dict[str, Callable[[object], object]] = {
    "exchange": _name_or_table,
    "queue": _name_or_table,
    "routing_key": _check_str,
    "headers": _optional(_check_table),
    "match": _one_of("all", "any", "all-with-x", "any-with-x"),
    "arguments": _check_table,
}


def bind(
    exchanges: Exchange | str | Iterable[Exchange | str],
    queues: Queue | str | Iterable[Queue | str],
    keys: str | Iterable[str] = ("",),
) -> list[Binding]:
    """Bind every queue to every exchange with every key: 1:n, n:1, n:n, several keys.

    Args:
        exchanges: One exchange or several.
        queues: One queue or several.
        keys: One binding key or several.

    Returns:
        One :class:`Binding` for each (exchange, queue, key) combination.

    Example:
        >>> len(bind(["a", "b"], ["q1", "q2"], keys=["x", "y"]))
        8
    """
    ex_list = [exchanges] if isinstance(exchanges, (Exchange, str)) else list(exchanges)
    q_list = [queues] if isinstance(queues, (Queue, str)) else list(queues)
    key_list = [keys] if isinstance(keys, str) else list(keys)
    if not ex_list or not q_list or not key_list:
        raise ValueError("bind() needs at least one exchange, one queue and one key")
    return [Binding(e, q, routing_key=k) for e in ex_list for q in q_list for k in key_list]


TopologyItem = Union[Exchange, Queue, Binding]


def ordered(items: Iterable[TopologyItem]) -> list[TopologyItem]:
    """Sort declarations so exchanges come before queues and queues before bindings.

    Exchanges and queues referenced by bindings are added if they were not listed.

    Args:
        items: Topology objects in any order.

    Returns:
        A list in declaration order, each object once.
    """
    exchanges: list[Exchange] = []
    queues: list[Queue] = []
    bindings: list[Binding] = []
    for item in items:
        if isinstance(item, Exchange):
            if item not in exchanges:
                exchanges.append(item)
        elif isinstance(item, Queue):
            if not any(item is q for q in queues):
                queues.append(item)
        elif isinstance(item, Binding):
            bindings.append(item)
            if isinstance(item.exchange, Exchange) and item.exchange not in exchanges:
                exchanges.append(item.exchange)
            if isinstance(item.queue, Queue) and not any(item.queue is q for q in queues):
                queues.append(item.queue)
        else:
            raise TypeError(f"not a topology object: {item!r}")
    return [*exchanges, *queues, *bindings]
