"""``hutch declare``: declare the exchanges, queues and bindings of a TOML or YAML file.

The file holds three optional lists, ``exchanges``, ``queues`` and ``bindings``, whose
entries are the ``to_dict()`` form of :class:`~hutch.Exchange`, :class:`~hutch.Queue` and
:class:`~hutch.Binding`; each is read by that class's ``from_dict``, so the file obeys the
rules the constructors do. Two conveniences belong to the file only: a binding's
``routing_key`` may be a list (one binding per key), and queues must be named and not
exclusive, since they are meant to outlive the command.
"""

from __future__ import annotations

import argparse
import enum
import importlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hutch._cli.common import (
    EXIT_OK,
    AddCommand,
    CommandFailed,
    UsageError,
    connect,
    one_line,
    positive_float,
    status,
)
from hutch._cli.output import dumps
from hutch._connection import Connection
from hutch._exceptions import ChannelClosed, HutchError, PreconditionFailed
from hutch._topology import (
    Binding,
    Exchange,
    ExchangeType,
    Queue,
    TopologyDataError,
    TopologyItem,
)

__all__ = [
    "TOPOLOGY_SCHEMA",
    "TopologyFile",
    "load_topology",
    "parse_topology",
    "register",
    "run",
]

_Item = TypeVar("_Item", Exchange, Queue, Binding)

TOPOLOGY_SCHEMA = """\
topology file (TOML shown; YAML has the same keys):
  [[exchanges]]                 # name, type (fanout|direct|topic|headers; default direct),
  name = "orders"               # durable (true), auto_delete (false), internal (false),
  type = "topic"                # arguments ({"alternate-exchange" = "unrouted"})

  [[queues]]                    # name, durable (true), auto_delete (false),
  name = "orders.audit"         # dead_letter_exchange, dead_letter_routing_key,
  message_ttl = 3600            # message_ttl and expires (seconds), max_length,
  queue_type = "quorum"         # max_length_bytes, overflow, queue_type, max_priority,
                                # arguments
  [[bindings]]                  # exchange, queue, routing_key (a key or a list of keys),
  exchange = "orders"           # headers + match ("all"|"any") for headers exchanges,
  queue = "orders.audit"        # arguments
  routing_key = ["order.*", "refund.#"]"""


@dataclass(frozen=True)
class TopologyFile:
    """What a topology file declares: exchanges, queues and the bindings between them.

    Example:
        >>> TopologyFile(queues=[Queue("tasks")]).items()
        [Queue('tasks', durable, arguments={})]
    """

    exchanges: list[Exchange] = field(default_factory=list)
    queues: list[Queue] = field(default_factory=list)
    bindings: list[Binding] = field(default_factory=list)

    def items(self) -> list[TopologyItem]:
        """Everything to declare, in declaration order (exchanges, queues, bindings)."""
        return [*self.exchanges, *self.queues, *self.bindings]


_SECTIONS = ("exchanges", "queues", "bindings")


def _entry(where: str, build: Callable[[Mapping[str, object]], _Item], data: object) -> _Item:
    """Build one entry with ``build`` (a ``from_dict``), naming it in any error."""
    if not isinstance(data, Mapping):
        raise UsageError(f"{where}: Input should be a table, got {type(data).__name__}")
    try:
        return build(data)
    except TopologyDataError as exc:
        raise UsageError(f"{where}{exc.path}: {exc.problem}") from None


def _binding_entries(where: str, data: object) -> list[object]:
    """A ``[[bindings]]`` entry with a list of routing keys is one binding per key."""
    if not isinstance(data, Mapping) or not isinstance(data.get("routing_key"), list):
        return [data]
    keys: list[object] = data["routing_key"]
    for index, key in enumerate(keys):
        if not isinstance(key, str):
            raise UsageError(f"{where}.routing_key[{index}]: Input should be a valid string")
    if data.get("headers") is not None:
        keys = keys[:1] or [""]  # a headers exchange ignores the key: bind once
    return [{**data, "routing_key": key} for key in keys]


def parse_topology(data: object) -> TopologyFile:
    """Build the topology from a parsed file (a mapping of the three lists).

    Args:
        data: What the TOML or YAML parser returned.

    Returns:
        The topology.

    Raises:
        UsageError: The data does not describe a topology; the message names the entry
            and key, e.g. ``queues[1].max_lenght: Extra inputs are not permitted; ...``.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise UsageError(
            f"(top level): Input should be a table of {', '.join(_SECTIONS)}, "
            f"got {type(data).__name__}"
        )
    for key in data:
        if key not in _SECTIONS:
            raise UsageError(
                f"{key if isinstance(key, str) and key.isprintable() else repr(key)}: "
                "Extra inputs are not permitted; the allowed keys are " + ", ".join(_SECTIONS)
            )
    sections: dict[str, list[object]] = {}
    for name in _SECTIONS:
        value = data.get(name, [])
        if not isinstance(value, list):
            raise UsageError(f"{name}: Input should be a valid list, got {type(value).__name__}")
        sections[name] = value
    exchanges = [
        _entry(f"exchanges[{i}]", Exchange.from_dict, e)
        for i, e in enumerate(sections["exchanges"])
    ]
    for i, exchange in enumerate(exchanges):
        if exchange.name == "":
            raise UsageError(f"exchanges[{i}].name: the default exchange '' cannot be declared")
    queues = [_entry(f"queues[{i}]", Queue.from_dict, q) for i, q in enumerate(sections["queues"])]
    for i, queue in enumerate(queues):
        if queue.server_named or queue.exclusive:
            raise UsageError(
                f"queues[{i}]: a declared queue must be named and not exclusive: it is meant "
                "to outlive the command"
            )
    bindings = [
        _entry(f"bindings[{i}]", Binding.from_dict, entry)
        for i, b in enumerate(sections["bindings"])
        for entry in _binding_entries(f"bindings[{i}]", b)
    ]
    return TopologyFile(exchanges, queues, bindings)


def load_topology(path: Path, fmt: str | None = None) -> TopologyFile:
    """Read a TOML or YAML topology file.

    Args:
        path: The file.
        fmt: ``"toml"`` or ``"yaml"``; by default taken from the file's suffix.

    Returns:
        The exchanges, queues and bindings it describes, each built by its
        ``from_dict`` (so by the same rules as in Python).

    Raises:
        UsageError: The file cannot be read or parsed, or does not follow the schema; the
            message names the file and the offending entry.
    """
    fmt = fmt or {".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"{path}: cannot tell the format from the suffix; use --format toml|yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {one_line(exc)}") from None
    data: object
    if fmt == "toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path}: invalid TOML: {one_line(exc)}") from None
    else:
        try:
            yaml: Any = importlib.import_module("yaml")
        except ImportError:
            raise UsageError(
                f"{path}: reading YAML needs PyYAML (pip install pyyaml); or write the "
                "topology in TOML"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"{path}: invalid YAML: {one_line(exc)}") from None
    try:
        return parse_topology(data)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None


def _describe(item: TopologyItem) -> str:
    """One line for ``--dry-run`` and progress: the entity and its settings."""
    if isinstance(item, Exchange):
        flags = [ExchangeType(item.type).value, "durable" if item.durable else "transient"]
        if item.auto_delete:
            flags.append("auto-delete")
        return f"exchange {item.name!r} ({', '.join(flags)})"
    if isinstance(item, Queue):
        flags = ["durable" if item.durable else "transient"]
        if item.auto_delete:
            flags.append("auto-delete")
        flags.extend(f"{k}={dumps(v)}" for k, v in item.arguments.items())
        return f"queue {item.name!r} ({', '.join(flags)})"
    how = (
        f"headers {dumps(dict(item.headers))} (x-match {item.match})"
        if item.headers is not None
        else f"key {item.routing_key!r}"
    )
    queue = item.queue if isinstance(item.queue, str) else item.queue.name
    return f"binding {item.exchange_name!r} -> {queue!r} with {how}"


class Status(enum.Enum):
    """What the broker has of one entity of the file."""

    SAME = "same"  #: it exists with the file's settings (as far as the broker tells)
    MISSING = "missing"  #: it does not exist
    DIFFERS = "differs"  #: it exists with other settings (the broker refused a redeclare)
    UNCHECKED = "unchecked"  #: a binding: AMQP cannot look one up


@dataclass(frozen=True)
class Finding:
    """The broker's side of one entity: its status and, when it differs, how."""

    item: TopologyItem
    status: Status
    detail: str = ""
    #: For a binding: the ("exchange" | "queue", name) it needs that the broker lacks.
    absent: tuple[tuple[str, str], ...] = ()

    def line(self) -> str:
        """One line for the report, e.g. ``differs queue 'q' (...): inequivalent arg ...``."""
        text = f"{self.status.value} {_describe(self.item)}"
        return f"{text}: {self.detail}" if self.detail else text


def _difference(exc: HutchError) -> str:
    """The broker's refusal, once (a PreconditionFailed's message repeats its reply text)."""
    if isinstance(exc, PreconditionFailed):
        return f"{exc.differences or exc.reply_text} ({exc.reply_code})"
    if isinstance(exc, ChannelClosed):
        return f"{exc.reply_text} ({exc.reply_code})"
    return one_line(exc)


def compare(conn: Connection, topology: TopologyFile, timeout: float) -> list[Finding]:
    """Compare the file with the broker, changing nothing.

    Each exchange and queue is looked up with a passive declare; one that exists is
    redeclared with the file's settings on a throwaway channel, which the broker refuses
    (406) when a setting differs -- type, durability, auto-delete, arguments such as
    ``x-message-ttl`` -- and accepts without change when they are equal. A binding cannot
    be looked up over AMQP: it is MISSING when the broker lacks its exchange or queue,
    else UNCHECKED.

    Args:
        conn: An open connection.
        topology: What the file declares.
        timeout: Seconds allowed for each operation.

    Returns:
        One finding per exchange, queue and binding, in the file's order.
    """
    probe = conn.channel()
    findings: list[Finding] = []
    try:
        entities: list[Exchange | Queue] = [*topology.exchanges, *topology.queues]
        for item in entities:
            kind = "exchange" if isinstance(item, Exchange) else "queue"
            if not probe.exists(kind, item.name, timeout):
                findings.append(Finding(item, Status.MISSING))
                continue
            throwaway = conn.channel()
            try:
                throwaway.declare([item], timeout=timeout)
            except (PreconditionFailed, ChannelClosed) as exc:
                findings.append(Finding(item, Status.DIFFERS, _difference(exc)))
            else:
                findings.append(Finding(item, Status.SAME))
            finally:
                throwaway.close()
        for binding in topology.bindings:
            queue = binding.queue if isinstance(binding.queue, str) else binding.queue.name
            absent = tuple(
                (kind, name)
                for kind, name in (("exchange", binding.exchange_name), ("queue", queue))
                if name and not probe.exists(kind, name, timeout)
            )
            if absent:
                text = " and ".join(f"{kind} {name!r}" for kind, name in absent) + " missing"
                findings.append(Finding(binding, Status.MISSING, text, absent))
            else:
                findings.append(Finding(binding, Status.UNCHECKED, "AMQP cannot look it up"))
    finally:
        probe.close()
    return findings


def _declared_by(topology: TopologyFile) -> set[tuple[str, str]]:
    return {("exchange", e.name) for e in topology.exchanges} | {
        ("queue", q.name) for q in topology.queues
    }


def run(args: argparse.Namespace) -> int:
    """Check, then declare (or only print or only check) the file; the exit status."""
    topology = load_topology(Path(args.file), args.format)
    items = topology.items()
    if not items:
        raise UsageError(f"{args.file}: declares nothing (no exchanges, queues or bindings)")
    if args.dry_run:
        for item in items:
            print(f"would declare {_describe(item)}")
        return EXIT_OK
    with connect(args, "declare") as conn:
        findings = compare(conn, topology, args.timeout)
        if args.check:
            differences = [f for f in findings if f.status in (Status.MISSING, Status.DIFFERS)]
            for finding in findings:
                print(finding.line(), flush=True)
            if differences:
                raise CommandFailed(
                    f"{len(differences)} of {len(findings)} entities differ from {args.file} "
                    "(nothing was changed)"
                )
            status(f"the broker has what {args.file} declares (bindings not compared)")
            return EXIT_OK
        # everything is checked before anything is declared: a conflict changes nothing
        in_file = _declared_by(topology)
        problems = [f for f in findings if f.status is Status.DIFFERS]
        # a binding to an exchange or queue that neither the broker nor the file has
        problems += [f for f in findings if any(part not in in_file for part in f.absent)]
        if problems:
            for finding in problems:
                print(finding.line(), flush=True)
            raise CommandFailed(
                f"{len(problems)} of {len(findings)} entities in {args.file} cannot be "
                "declared as they are; nothing was declared"
            )
        channel = conn.channel()
        try:
            for item in items:
                channel.declare([item], timeout=args.timeout)
                print(f"declared {_describe(item)}", flush=True)
        finally:
            channel.close()
    return EXIT_OK


def register(command: AddCommand) -> None:
    """Add ``hutch declare`` and its options to the parser."""
    d = command(
        "declare",
        "declare exchanges, queues and bindings from a TOML or YAML file",
        "Declare the exchanges, queues and bindings described in FILE (TOML, or YAML when "
        "PyYAML is installed: pip install 'hutch[yaml]'). Everything is compared with the "
        "broker first, and declared only if nothing conflicts: an entity that exists with "
        "other settings is reported and nothing is declared. --check only compares, prints "
        "every difference and exits 1 if there is any.\n\n" + TOPOLOGY_SCHEMA,
        """
        hutch declare topology.toml
        hutch declare topology.toml --check
        hutch declare topology.yaml --dry-run
        """,
    )
    d.add_argument("file", metavar="FILE", help="the topology file (.toml, .yaml or .yml)")
    d.add_argument("--format", choices=("toml", "yaml"), help="file format (default: by suffix)")
    mode = d.add_mutually_exclusive_group()
    mode.add_argument(
        "--dry-run", action="store_true", help="check the file, print, declare nothing"
    )
    mode.add_argument(
        "--check",
        action="store_true",
        help="compare with the broker, print every difference, change nothing (exit 1 if any)",
    )
    d.add_argument(
        "--timeout",
        type=positive_float,
        default=30.0,
        metavar="S",
        help="seconds allowed for each declaration (default: %(default)g)",
    )
    d.set_defaults(run=run)
