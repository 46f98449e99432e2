"""The ``hutch`` command line: publish, consume, call, declare, worker and serve.

Run ``hutch --help`` (or ``python -m hutch --help``) for the commands and
``hutch COMMAND --help`` for each one's options and examples. The broker URL comes from
``--url``, else the ``HUTCH_URL`` environment variable, else
``amqp://guest:guest@localhost:5672/``.

Expected failures (broker down, credentials refused, unroutable message, timeout, bad JSON,
bad handler spec...) print one line, ``hutch: error: ...``, on stderr and exit with a
non-zero status; ``-vv`` adds the traceback. Exit statuses: 0 success, 1 failure, 2 usage
error (bad arguments, bad JSON, bad topology file), 130 interrupted.

Pretty output for humans uses `rich <https://rich.readthedocs.io>`_ when it is installed
(``pip install 'hutch[cli]'``) and stdout is a terminal; every command works without it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as _dt
import importlib
import json
import logging
import os
import signal
import sys
import textwrap
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO, TypeVar

import pydantic
from pydantic_core import PydanticSerializationError

from hutch._connection import Connection
from hutch._exceptions import (
    AuthenticationError,
    ConnectError,
    HutchError,
    NotFound,
    PublishError,
    RemoteError,
    RpcTimeout,
)
from hutch._message import PROPERTY_NAMES, Message
from hutch._publisher import Publisher
from hutch._subscriber import Subscriber
from hutch._topology import (
    Binding,
    Exchange,
    ExchangeType,
    Overflow,
    Queue,
    QueueType,
    TopologyItem,
)

if TYPE_CHECKING:
    from concurrent.futures import Future
    from types import FrameType

    from hutch._topology import FieldValue

__all__ = ["main"]

log = logging.getLogger("hutch")

T = TypeVar("T")

#: The broker URL used when neither ``--url`` nor ``HUTCH_URL`` is given.
DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
#: The environment variable holding the broker URL.
URL_ENV = "HUTCH_URL"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
BINARY_TYPE = "application/octet-stream"


class UsageError(ValueError):
    """A bad argument, file or value given on the command line (exit status 2)."""


class CommandFailed(HutchError):
    """A command could not do what it was asked (exit status 1), e.g. a consume timeout."""


# --------------------------------------------------------------------------- helpers


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _status(text: str) -> None:
    """A progress line for humans, on stderr (stdout is kept for data)."""
    print(f"hutch: {text}", file=sys.stderr, flush=True)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise UsageError(f"{what} is not valid JSON: nested too deeply") from None


def parse_pairs(items: Sequence[str] | None, *, what: str) -> dict[str, FieldValue]:
    """Parse ``KEY=VALUE`` (a string) and ``KEY:=JSON`` (a typed value) items.

    Args:
        items: The items as given on the command line.
        what: What they are, for error messages (``"header"``).

    Returns:
        The parsed mapping, in the given order.

    Raises:
        UsageError: An item without ``=``, an empty key, or bad JSON after ``:=``.

    Example:
        >>> parse_pairs(["format=pdf", "pages:=3"], what="header")
        {'format': 'pdf', 'pages': 3}
    """
    result: dict[str, FieldValue] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{what} {item!r} must look like KEY=VALUE (or KEY:=JSON)")
        typed = key.endswith(":")
        key = key[:-1] if typed else key
        if not key:
            raise UsageError(f"{what} {item!r} has an empty name")
        result[key] = _parse_json(value, f"{what} {key!r}") if typed else value
    return result


_INT_PROPERTIES = frozenset({"priority", "delivery_mode"})


def parse_properties(items: Sequence[str] | None) -> dict[str, Any]:
    """Parse ``--property NAME=VALUE`` items into AMQP basic properties.

    ``priority`` and ``delivery_mode`` are integers; ``timestamp`` is Unix seconds or an
    ISO 8601 date-time (UTC when it has no offset); the rest are strings.

    Args:
        items: The items as given on the command line.

    Returns:
        Property names (dashes turned into underscores) and values.

    Raises:
        UsageError: An unknown property, ``headers`` (use ``-H``), or a value of the wrong type.

    Example:
        >>> parse_properties(["correlation-id=abc", "priority=5"])
        {'correlation_id': 'abc', 'priority': 5}
    """
    props: dict[str, Any] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise UsageError(f"property {item!r} must look like NAME=VALUE")
        if name == "headers":
            raise UsageError("set headers with -H KEY=VALUE, not --property headers=...")
        if name not in PROPERTY_NAMES:
            raise UsageError(
                f"unknown property {name!r}; the AMQP basic properties are "
                + ", ".join(sorted(PROPERTY_NAMES - {"headers"}))
            )
        if name in _INT_PROPERTIES:
            try:
                props[name] = int(value)
            except ValueError:
                raise UsageError(f"property {name} must be a whole number, got {value!r}") from None
        elif name == "timestamp":
            props[name] = _parse_timestamp(value)
        else:
            props[name] = value
    return props


def _parse_timestamp(text: str) -> _dt.datetime:
    try:
        return _dt.datetime.fromtimestamp(int(text), _dt.timezone.utc)
    except ValueError:
        pass
    try:
        # Python 3.10's fromisoformat does not read the "Z" suffix
        when = _dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise UsageError(
            f"timestamp must be Unix seconds or ISO 8601 (2026-01-31T12:00:00Z), got {text!r}"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=_dt.timezone.utc)


def encode_body(data: bytes, fmt: str, *, what: str = "the body") -> tuple[bytes, str]:
    """Check a body against ``--json``/``--text``/``--raw`` and pick its content type.

    ``auto`` sends valid JSON as JSON, other UTF-8 as text and anything else as bytes.

    Args:
        data: The body as given.
        fmt: ``"auto"``, ``"json"``, ``"text"`` or ``"raw"``.
        what: What the data is, for error messages.

    Returns:
        The bytes to send (unchanged) and their content type.

    Raises:
        UsageError: ``json`` and the body is not valid JSON, or ``text`` and not UTF-8.

    Example:
        >>> encode_body(b'{"n": 1}', "auto")
        (b'{"n": 1}', 'application/json')
    """
    if fmt == "raw":
        return data, BINARY_TYPE
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        if fmt == "auto":
            return data, BINARY_TYPE
        raise UsageError(
            f"{what} is not valid UTF-8 (byte {exc.start}); use --raw to send bytes"
        ) from None
    if fmt == "text":
        return data, TEXT_TYPE
    if fmt == "json":
        _parse_json(text, what)
        return data, JSON_TYPE
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return data, TEXT_TYPE
    return data, JSON_TYPE


def display_body(raw: bytes, content_type: str | None) -> tuple[str, object]:
    """Decode a received body for display: JSON when it says (or looks like) JSON.

    Args:
        raw: The body bytes.
        content_type: The message's content type, if any.

    Returns:
        ``("json", value)``, ``("text", str)`` or ``("base64", str)``.

    Example:
        >>> display_body(b'[1, 2]', None)
        ('json', [1, 2])
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in ("", "application/json", "text/json") or media.endswith("+json"):
        try:
            return "json", json.loads(raw)
        except (ValueError, RecursionError):
            pass
    try:
        return "text", raw.decode()
    except UnicodeDecodeError:
        return "base64", base64.b64encode(raw).decode("ascii")


def to_jsonable(value: object) -> object:
    """Convert header, property and result values to something ``json.dumps`` accepts.

    Args:
        value: Any value from a message or an RPC result.

    Returns:
        A JSON-compatible value: bytes become text (or base64), date-times ISO 8601 strings,
        pydantic models their JSON form.
    """
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        try:
            return data.decode()
        except UnicodeDecodeError:
            return base64.b64encode(data).decode("ascii")
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    try:
        return pydantic.TypeAdapter(type(value)).dump_python(value, mode="json")
    except (pydantic.PydanticSchemaGenerationError, PydanticSerializationError):
        return str(value)


def _dumps(value: object) -> str:
    return json.dumps(to_jsonable(value), ensure_ascii=False)


@contextlib.contextmanager
def _stop_on_signals(stop: Callable[[], None], what: str) -> Iterator[threading.Event]:
    """On the first SIGINT/SIGTERM call ``stop()``; on the second give up (exit 130)."""
    received = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        if received.is_set():
            raise KeyboardInterrupt
        received.set()
        name = signal.Signals(signum).name
        # os.write: print() is not safe inside a signal handler (re-entrant buffered I/O)
        os.write(2, f"hutch: {name}: stopping {what} (send it again to abort)\n".encode())
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _connect(args: argparse.Namespace, command: str) -> Connection:
    url: str = args.url
    try:
        conn = Connection(url, connection_name=f"hutch-cli {command}")
    except ValueError as exc:
        raise UsageError(f"invalid broker URL (--url / {URL_ENV}): {_one_line(exc)}") from None
    return conn.open(args.connect_timeout)


def _load_object(spec: str, loader: Callable[[str], T], what: str) -> T:
    """Load ``package.module:attribute`` with ``loader``, from the current directory too."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return loader(spec)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot load {what} {spec!r}: {_one_line(exc)}") from exc
    except HutchError:
        raise  # e.g. the module connects at import time and the broker is down
    except Exception as exc:
        # the module itself raised while being imported
        raise UsageError(
            f"importing {what} {spec!r} failed: {type(exc).__name__}: {_one_line(exc)}"
        ) from exc


# --------------------------------------------------------------------------- publish


def _read_input(body: str | None) -> bytes:
    if body is not None and body != "-":
        return os.fsencode(body)
    if sys.stdin is None:
        raise UsageError("no body given and no stdin to read it from")
    if sys.stdin.isatty():
        _status("reading the body from stdin; end it with Ctrl-D")
    return sys.stdin.buffer.read()


def _bodies(args: argparse.Namespace) -> list[tuple[bytes, str]]:
    fmt: str = args.format
    from_stdin = args.body is None or args.body == "-"
    data = _read_input(args.body)
    if args.lines:
        chunks = [line.rstrip(b"\r") for line in data.split(b"\n")]
        chunks = [c for c in chunks if c.strip()]
        if not chunks:
            raise UsageError("--lines: the input has no non-empty lines")
        return [encode_body(c, fmt, what=f"line {i}") for i, c in enumerate(chunks, 1)]
    body, content_type = encode_body(data, fmt)
    if from_stdin and content_type != BINARY_TYPE and body.endswith(b"\n"):
        # `echo text | hutch publish ...`: the newline is the shell's, not the message's
        body = body[:-2] if body.endswith(b"\r\n") else body[:-1]
    return [(body, content_type)]


def _cmd_publish(args: argparse.Namespace) -> int:
    headers = parse_pairs(args.header, what="header")
    properties = parse_properties(args.property)
    if args.mandatory and args.no_confirm:
        raise UsageError("--mandatory needs confirms: drop --no-confirm")
    if args.lines and "message_id" in properties:
        raise UsageError("--lines gives every message its own message_id; do not set one")
    bodies = _bodies(args)
    exchange: str = args.exchange
    routing_key: str = args.routing_key
    failures: list[str] = []
    with (
        _connect(args, "publish") as conn,
        Publisher(
            conn,
            exchange=exchange,
            routing_key=routing_key,
            confirm=not args.no_confirm,
            persistent=not args.transient,
            mandatory=args.mandatory,
            timeout=args.timeout,
        ) as pub,
    ):
        if len(bodies) == 1:
            data, content_type = bodies[0]
            props = {"content_type": content_type, **properties}
            print(pub.publish(data, headers=headers or None, **props), flush=True)
        else:
            pending: list[tuple[str, Future[None]]] = []
            for data, content_type in bodies:
                message_id = uuid.uuid4().hex
                props = {"content_type": content_type, "message_id": message_id, **properties}
                pending.append(
                    (message_id, pub.publish_async(data, headers=headers or None, **props))
                )
            for index, (message_id, future) in enumerate(pending, 1):
                try:
                    future.result(args.timeout)
                except PublishError as exc:
                    failures.append(f"line {index}: {_one_line(exc)}")
                except (TimeoutError, FutureTimeout):
                    failures.append(f"line {index}: no confirm within {args.timeout:g} s")
                else:
                    print(message_id, flush=True)
    count = len(bodies)
    where = f"exchange {exchange!r}" if exchange else "the default exchange"
    if failures:
        raise CommandFailed(
            f"{len(failures)} of {count} messages were not accepted; first: {failures[0]}"
        )
    how = "sent without confirms" if args.no_confirm else "confirmed by the broker"
    noun = "message" if count == 1 else "messages"
    _status(f"published {count} {noun} to {where} with routing key {routing_key!r}, {how}")
    return EXIT_OK


# --------------------------------------------------------------------------- consume


class MessagePrinter:
    """Prints received messages: JSON lines, rich on a terminal, or plain text.

    Args:
        stream: Where to print.
        json_lines: One JSON object per message (for scripts).
        pretty: Use rich (None: when it is installed and ``stream`` is a terminal).
    """

    def __init__(self, stream: TextIO, *, json_lines: bool, pretty: bool | None = None) -> None:
        self.stream = stream
        self.json_lines = json_lines
        self._console: Any = None
        if not json_lines and pretty is not False:
            isatty = getattr(stream, "isatty", None)
            if pretty or (isatty is not None and isatty()):
                try:
                    from rich.console import Console
                except ImportError:
                    pass
                else:
                    self._console = Console(file=stream, highlight=False, soft_wrap=True)

    def record(self, message: Message[bytes]) -> dict[str, object]:
        """The JSON-lines form of a message.

        Args:
            message: The message as received (raw body).

        Returns:
            ``exchange``, ``routing_key``, ``redelivered``, ``headers``, ``properties``,
            ``body`` and ``body_encoding`` (``json``, ``text`` or ``base64``).
        """
        encoding, body = display_body(message.raw_body, message.content_type)
        props = message.properties.as_dict()
        props.pop("headers", None)
        return {
            "exchange": message.exchange,
            "routing_key": message.routing_key,
            "redelivered": message.redelivered,
            "headers": to_jsonable(dict(message.headers)),
            "properties": to_jsonable(props),
            "body": body,
            "body_encoding": encoding,
        }

    def show(self, number: int, message: Message[bytes]) -> None:
        """Print one message.

        Args:
            number: Its position in this run (1-based).
            message: The message.
        """
        if self.json_lines:
            print(_dumps(self.record(message)), file=self.stream, flush=True)
            return
        encoding, body = display_body(message.raw_body, message.content_type)
        exchange = message.exchange or "(default exchange)"
        head = f"#{number} {exchange} -> {message.routing_key or '(no routing key)'}"
        extras = []
        if message.headers:
            extras.append(f"headers={_dumps(dict(message.headers))}")
        if message.content_type:
            extras.append(f"content_type={message.content_type}")
        if message.redelivered:
            extras.append("redelivered")
        if self._console is not None:
            from rich.text import Text

            line = Text(head, style="bold cyan")
            if extras:
                line.append("  " + "  ".join(extras), style="dim")
            self._console.print(line)
            if encoding == "json":
                self._console.print_json(json.dumps(body))
            elif encoding == "text":
                self._console.print(Text(str(body)))
            else:
                self._console.print(Text(f"<{len(message.raw_body)} bytes, base64> {body}"))
            self.stream.flush()
            return
        shown = (
            json.dumps(body, ensure_ascii=False)
            if encoding == "json"
            else (body if encoding == "text" else f"<{len(message.raw_body)} bytes, base64> {body}")
        )
        print(" ".join([head, *extras]), file=self.stream)
        print(shown, file=self.stream, flush=True)


def _cmd_consume(args: argparse.Namespace) -> int:
    exchange: str | None = args.exchange
    queue: str | None = args.queue
    keys: list[str] = args.key or []
    headers = parse_pairs(args.header, what="header")
    if not exchange and not queue:
        raise UsageError(
            "give an EXCHANGE to bind a temporary queue to, or --queue NAME to read a queue"
        )
    if keys and headers:
        raise UsageError("bind with -k KEY (direct/topic) or -H KEY=VALUE (headers), not both")
    if (keys or headers) and not exchange:
        raise UsageError("-k and -H bind to an exchange: give the EXCHANGE too")
    count: int | None = args.count
    timeout: float | None = args.timeout
    printer = MessagePrinter(sys.stdout, json_lines=args.json)
    received = 0
    stop_requested = threading.Event()
    with _connect(args, "consume") as conn:
        sub = Subscriber(
            conn,
            exchange=exchange or (),
            routing_keys=keys or ("",),
            headers=headers or None,
            match=args.match,
            queue=queue,
            model=bytes,
            prefetch=args.prefetch,
        )
        with sub:
            bound = ""
            if exchange:
                how = (
                    f"headers {_dumps(headers)} (x-match {args.match})"
                    if headers
                    else ("keys " + ", ".join(repr(k) for k in keys) if keys else "key ''")
                )
                bound = f", bound to exchange {exchange!r} with {how}"
            limits = []
            if count is not None:
                limits.append(f"{count} message{'s' if count != 1 else ''}")
            if timeout is not None:
                limits.append(f"{timeout:g} s")
            until = " or ".join(limits) if limits else "Ctrl-C"
            _running(args)
            _status(f"consuming from queue {sub.queue_name!r}{bound}; until {until}")
            deadline = None if timeout is None else time.monotonic() + timeout

            def stop() -> None:
                stop_requested.set()
                sub.stop()

            with _stop_on_signals(stop, "consuming"):
                while not stop_requested.is_set() and (count is None or received < count):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    wait = 0.5 if remaining is None else min(0.5, remaining)
                    limit = None if count is None else count - received
                    for message in sub.messages(timeout=wait, limit=limit):
                        received += 1
                        try:
                            printer.show(received, message)
                        except BrokenPipeError:
                            stop_requested.set()
                        if stop_requested.is_set() or (
                            deadline is not None and time.monotonic() >= deadline
                        ):
                            break
    if count is not None and received < count and not stop_requested.is_set():
        raise CommandFailed(
            f"timed out after {timeout:g} s: received {received} of {count} messages"
        )
    noun = "message" if received == 1 else "messages"
    _status(f"received {received} {noun}")
    return EXIT_OK


# --------------------------------------------------------------------------- call


def _cmd_call(args: argparse.Namespace) -> int:
    positional = [_parse_json(a, f"argument {i} ({a!r})") for i, a in enumerate(args.args, 1)]
    kwargs: dict[str, Any] = {}
    if args.kwargs is not None:
        parsed = _parse_json(args.kwargs, "--kwargs")
        if not isinstance(parsed, dict):
            raise UsageError("--kwargs must be a JSON object, e.g. '{\"x\": 1}'")
        kwargs = parsed
    from hutch._rpc import RpcClient

    with (
        _connect(args, "call") as conn,
        RpcClient(conn, queue=args.queue, timeout=args.timeout) as client,
    ):
        try:
            result = client.call(args.procedure, *positional, **kwargs)
        except RpcTimeout as exc:
            raise CommandFailed(
                f"{_one_line(exc)} (waited {args.timeout:g} s; a slow procedure needs a "
                "longer --timeout)"
            ) from exc
        except RemoteError as exc:
            raise CommandFailed(
                f"call to {args.procedure} failed: {exc.type_name}: {exc.remote_message}"
            ) from exc
    print(_dumps(result), flush=True)
    return EXIT_OK


# --------------------------------------------------------------------------- declare


class _Spec(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class ExchangeSpec(_Spec):
    """One ``[[exchanges]]`` entry of a topology file."""

    name: str = pydantic.Field(min_length=1)
    type: ExchangeType = ExchangeType.DIRECT
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = pydantic.Field(default_factory=dict)

    def build(self) -> Exchange:
        """The :class:`~hutch.Exchange` to declare."""
        return Exchange(
            self.name,
            type=self.type,
            durable=self.durable,
            auto_delete=self.auto_delete,
            internal=self.internal,
            arguments=self.arguments,
        )


class QueueSpec(_Spec):
    """One ``[[queues]]`` entry of a topology file (times in seconds)."""

    name: str = pydantic.Field(min_length=1)
    durable: bool = True
    auto_delete: bool = False
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    message_ttl: float | None = pydantic.Field(default=None, ge=0)
    expires: float | None = pydantic.Field(default=None, gt=0)
    max_length: int | None = pydantic.Field(default=None, ge=0)
    max_length_bytes: int | None = pydantic.Field(default=None, ge=0)
    overflow: Overflow | None = None
    queue_type: QueueType | None = None
    max_priority: int | None = pydantic.Field(default=None, ge=0, le=255)
    arguments: dict[str, Any] = pydantic.Field(default_factory=dict)

    def build(self) -> Queue:
        """The :class:`~hutch.Queue` to declare."""
        return Queue(
            self.name,
            durable=self.durable,
            exclusive=False,
            auto_delete=self.auto_delete,
            dead_letter_exchange=self.dead_letter_exchange,
            dead_letter_routing_key=self.dead_letter_routing_key,
            message_ttl=self.message_ttl,
            expires=self.expires,
            max_length=self.max_length,
            max_length_bytes=self.max_length_bytes,
            overflow=self.overflow,
            queue_type=self.queue_type,
            max_priority=self.max_priority,
            arguments=self.arguments,
        )


class BindingSpec(_Spec):
    """One ``[[bindings]]`` entry of a topology file."""

    exchange: str = pydantic.Field(min_length=1)
    queue: str = pydantic.Field(min_length=1)
    routing_key: str | list[str] = ""
    headers: dict[str, Any] | None = None
    match: Literal["all", "any"] = "all"
    arguments: dict[str, Any] = pydantic.Field(default_factory=dict)

    def build(self) -> list[Binding]:
        """One :class:`~hutch.Binding` per routing key."""
        keys = [self.routing_key] if isinstance(self.routing_key, str) else self.routing_key
        if self.headers is not None:
            keys = keys[:1] or [""]
        return [
            Binding(
                self.exchange,
                self.queue,
                routing_key=key,
                headers=self.headers,
                match=self.match,
                arguments=self.arguments,
            )
            for key in keys
        ]


class TopologyFile(_Spec):
    """A topology file: exchanges, queues and the bindings between them.

    Example:
        >>> TopologyFile.model_validate({"queues": [{"name": "tasks"}]}).items()
        [Queue('tasks', durable, arguments={})]
    """

    exchanges: list[ExchangeSpec] = pydantic.Field(default_factory=list)
    queues: list[QueueSpec] = pydantic.Field(default_factory=list)
    bindings: list[BindingSpec] = pydantic.Field(default_factory=list)

    def items(self) -> list[TopologyItem]:
        """Everything to declare, in declaration order (exchanges, queues, bindings)."""
        result: list[TopologyItem] = [e.build() for e in self.exchanges]
        result.extend(q.build() for q in self.queues)
        for b in self.bindings:
            result.extend(b.build())
        return result


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_topology(path: Path, fmt: str | None = None) -> TopologyFile:
    """Read and validate a TOML or YAML topology file.

    Args:
        path: The file.
        fmt: ``"toml"`` or ``"yaml"``; by default taken from the file's suffix.

    Returns:
        The validated topology.

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
        raise UsageError(f"cannot read {path}: {_one_line(exc)}") from None
    data: object
    if fmt == "toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path}: invalid TOML: {_one_line(exc)}") from None
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
            raise UsageError(f"{path}: invalid YAML: {_one_line(exc)}") from None
    if data is None:
        data = {}
    try:
        topology = TopologyFile.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise UsageError(f"{path}: {_loc(tuple(first['loc']))}: {first['msg']}{more}") from None
    try:
        topology.items()
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path}: {_one_line(exc)}") from None
    return topology


def _describe(item: TopologyItem) -> str:
    if isinstance(item, Exchange):
        flags = [ExchangeType(item.type).value, "durable" if item.durable else "transient"]
        if item.auto_delete:
            flags.append("auto-delete")
        return f"exchange {item.name!r} ({', '.join(flags)})"
    if isinstance(item, Queue):
        flags = ["durable" if item.durable else "transient"]
        if item.auto_delete:
            flags.append("auto-delete")
        flags.extend(f"{k}={_dumps(v)}" for k, v in item.arguments.items())
        return f"queue {item.name!r} ({', '.join(flags)})"
    how = (
        f"headers {_dumps(dict(item.headers))} (x-match {item.match})"
        if item.headers is not None
        else f"key {item.routing_key!r}"
    )
    queue = item.queue if isinstance(item.queue, str) else item.queue.name
    return f"binding {item.exchange_name!r} -> {queue!r} with {how}"


def _cmd_declare(args: argparse.Namespace) -> int:
    topology = load_topology(Path(args.file), args.format)
    items = topology.items()
    if not items:
        raise UsageError(f"{args.file}: declares nothing (no exchanges, queues or bindings)")
    if args.dry_run:
        for item in items:
            print(f"would declare {_describe(item)}")
        return EXIT_OK
    with _connect(args, "declare") as conn:
        channel = conn.channel()
        try:
            for item in items:
                channel.declare([item], timeout=args.timeout)
                print(f"declared {_describe(item)}", flush=True)
        finally:
            channel.close()
    return EXIT_OK


# --------------------------------------------------------------------------- worker / serve


def _cmd_worker(args: argparse.Namespace) -> int:
    from hutch._retry import RetryPolicy
    from hutch._worker_pool import WorkerPool, load_handler

    handler = _load_object(args.handler, load_handler, "handler")
    retry = (
        RetryPolicy() if args.max_attempts is None else RetryPolicy(max_attempts=args.max_attempts)
    )
    with _connect(args, "worker") as conn:
        pool = WorkerPool(
            conn,
            queue=args.queue,
            handler=handler,
            concurrency=args.concurrency,
            processes=args.processes,
            prefetch=args.prefetch,
            retry=retry,
        )
        pool.start()
        _running(args)
        mode = "processes" if args.processes else "threads"
        _status(
            f"worker {args.handler} consuming queue {args.queue!r} with {args.concurrency} "
            f"{mode}, prefetch {args.prefetch}, up to {retry.max_attempts} attempts; "
            "Ctrl-C or SIGTERM stops it gracefully"
        )
        # on the main thread, run() turns SIGTERM/SIGINT into a graceful stop by itself
        pool.run()
        stats = pool.stats
    _status(
        f"worker stopped: {stats.processed} processed, {stats.retried} retried, "
        f"{stats.dead_lettered} dead-lettered, {stats.requeued} requeued"
    )
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    from hutch._rpc import load_server

    if args.url_given:
        # the server's module opens its own connection; this is how it learns --url
        os.environ[URL_ENV] = args.url
    server = _load_object(args.server, load_server, "server")
    server.start()
    _running(args)
    _status(
        f"serving {', '.join(server.procedures)} on queue {server.queue.name!r}; "
        "Ctrl-C or SIGTERM stops it gracefully"
    )
    with _stop_on_signals(server.stop, "the server after the calls in hand"):
        server.run()
    _status(f"server stopped: {server.handled} calls answered, {server.failed} with an error")
    return EXIT_OK


# --------------------------------------------------------------------------- parser


class _Formatter(argparse.HelpFormatter):
    """Wraps prose paragraphs; keeps indented blocks (examples, schemas) as written."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            lines = paragraph.splitlines()
            if len(lines) > 1 and any(line[:1].isspace() for line in lines[1:]):
                paragraphs.append(textwrap.indent(paragraph, indent))
            else:
                paragraphs.append(
                    textwrap.fill(
                        " ".join(lines), width, initial_indent=indent, subsequent_indent=indent
                    )
                )
        return "\n\n".join(paragraphs)


def _examples(text: str) -> str:
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip("\n"), "  ")


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


def build_parser() -> argparse.ArgumentParser:
    """Build the ``hutch`` argument parser (exposed for tests and documentation).

    Returns:
        The parser with one subparser per command.
    """
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"broker URL (default: ${URL_ENV} or {DEFAULT_URL})",
    )
    group.add_argument(
        "--connect-timeout",
        type=_positive_float,
        default=argparse.SUPPRESS,
        metavar="S",
        help="seconds to wait for the connection (default 30)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log what happens (-v info, -vv debug with tracebacks)",
    )

    parser = argparse.ArgumentParser(
        prog="hutch",
        formatter_class=_Formatter,
        parents=[common],
        description="Talk to RabbitMQ from the shell: publish, consume, call procedures, "
        "declare topology, run workers and RPC servers.",
        epilog=_examples(
            """
            hutch publish amq.topic order.created '{"id": 1}'
            hutch consume amq.topic -k 'order.*' --count 1
            hutch declare topology.toml
            hutch worker myapp.tasks:resize --queue images --concurrency 8
            hutch serve myapp.rpc:server
            hutch call add 1 2
            HUTCH_URL=amqp://user:secret@rabbit:5672/prod hutch consume logs

            Run 'hutch COMMAND --help' for a command's options. Exit status: 0 ok,
            1 failure, 2 bad usage, 130 interrupted.
            """
        ),
    )
    from hutch import __version__

    parser.add_argument("--version", action="version", version=f"hutch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def command(name: str, help_text: str, description: str, examples: str) -> Any:
        return commands.add_parser(
            name,
            help=help_text,
            description=description,
            epilog=_examples(examples),
            formatter_class=_Formatter,
            parents=[common],
        )

    # publish ---------------------------------------------------------------------------
    p = command(
        "publish",
        "publish a message (confirmed by the broker)",
        "Publish a message to an exchange and wait until the broker confirms it. The body "
        "comes from the BODY argument, or stdin when BODY is '-' or missing. By default valid "
        "JSON is sent as application/json, other UTF-8 as text/plain and anything else as "
        "application/octet-stream; --json, --text and --raw force one. The message id is "
        "printed on stdout.",
        """
        hutch publish amq.topic order.created '{"id": 1, "item": "book"}'
        hutch publish "" tasks hello --mandatory       # default exchange: key = queue
        echo '{"level": "info"}' | hutch publish logs ""
        hutch publish reports "" report.pdf -H format=pdf -H pages:=12 --raw < report.pdf
        hutch publish amq.direct rpc '[1, 2]' -p reply_to=replies -p correlation_id=42
        hutch consume jobs.dead --json | jq -c .body | hutch publish "" jobs --lines
        """,
    )
    p.add_argument("exchange", metavar="EXCHANGE", help="exchange name; '' is the default exchange")
    p.add_argument("routing_key", metavar="ROUTING_KEY", nargs="?", default="", help="(default '')")
    p.add_argument("body", metavar="BODY", nargs="?", help="the body; '-' or missing: stdin")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="format", action="store_const", const="json", help="JSON body")
    fmt.add_argument("--text", dest="format", action="store_const", const="text", help="text body")
    fmt.add_argument("--raw", dest="format", action="store_const", const="raw", help="raw bytes")
    p.set_defaults(format="auto")
    p.add_argument(
        "-H",
        "--header",
        action="append",
        metavar="KEY=VALUE",
        help="a header; KEY:=JSON for a typed value (pages:=3, urgent:=true)",
    )
    p.add_argument(
        "-p",
        "--property",
        action="append",
        metavar="NAME=VALUE",
        help="an AMQP property: correlation_id, reply_to, expiration (ms), priority, "
        "message_id, type, app_id, timestamp, content_type...",
    )
    p.add_argument("--lines", action="store_true", help="publish each non-empty line as a message")
    p.add_argument(
        "--mandatory", action="store_true", help="fail if no queue is bound for the routing key"
    )
    p.add_argument("--transient", action="store_true", help="not persistent (delivery_mode 1)")
    p.add_argument("--no-confirm", action="store_true", help="do not wait for publisher confirms")
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="seconds to wait for the confirm (default 30)",
    )
    p.set_defaults(run=_cmd_publish)

    # consume ---------------------------------------------------------------------------
    c = command(
        "consume",
        "print messages as they arrive",
        "Bind a temporary queue (server-named, exclusive, deleted on exit) to EXCHANGE and "
        "print every message it receives: routing key, headers and body. Or read an existing "
        "queue with --queue (its messages are acked, i.e. removed). Stops after --count "
        "messages, after --timeout seconds, or on Ctrl-C. A status line on stderr says when "
        "the queue is bound.",
        """
        hutch consume amq.fanout                          # everything published to it
        hutch consume amq.topic -k 'order.*' -k 'refund.#'
        hutch consume reports -H format=pdf -H type=report --match any
        hutch consume --queue tasks --count 10 --json > tasks.jsonl
        hutch consume amq.topic -k '#' --timeout 5        # listen for 5 seconds
        """,
    )
    c.add_argument("exchange", metavar="EXCHANGE", nargs="?", help="exchange to bind to")
    c.add_argument(
        "-k",
        "--key",
        action="append",
        metavar="KEY",
        help="binding key (repeatable); topic patterns use * (one word) and # (zero or more)",
    )
    c.add_argument(
        "-H",
        "--header",
        "--headers",
        action="append",
        metavar="KEY=VALUE",
        help="headers-exchange match (repeatable); KEY:=JSON for typed values",
    )
    c.add_argument(
        "--match", choices=("all", "any"), default="all", help="x-match for -H (default all)"
    )
    c.add_argument("-q", "--queue", metavar="NAME", help="consume this existing queue instead")
    c.add_argument("-n", "--count", type=_positive_int, metavar="N", help="stop after N messages")
    c.add_argument(
        "-t",
        "--timeout",
        type=_positive_float,
        metavar="S",
        help="stop after S seconds (an error if --count was not reached)",
    )
    c.add_argument("--json", action="store_true", help="print one JSON object per message")
    c.add_argument(
        "--prefetch",
        type=_positive_int,
        default=100,
        metavar="N",
        help="messages the broker may send ahead (default 100)",
    )
    c.set_defaults(run=_cmd_consume)

    # call ------------------------------------------------------------------------------
    r = command(
        "call",
        "call a remote procedure and print its JSON result",
        "Call a procedure served by 'hutch serve' (or any hutch RpcServer) with JSON "
        "arguments and print the result as JSON. Each ARG is parsed as JSON: quote strings "
        "as '\"text\"'.",
        """
        hutch call add_point 1 2
        hutch call add_point --kwargs '{"x": 1, "y": 2}'
        hutch call greet '"Ada"' --timeout 5
        """,
    )
    r.add_argument("procedure", metavar="PROCEDURE", help="procedure name")
    r.add_argument("args", metavar="ARG", nargs="*", help="a JSON positional argument")
    r.add_argument("--kwargs", metavar="JSON", help="keyword arguments as a JSON object")
    r.add_argument(
        "--queue",
        default="rpc_queue",
        metavar="NAME",
        help="the server's request queue (default rpc_queue)",
    )
    r.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="seconds to wait for the reply (default 30)",
    )
    r.set_defaults(run=_cmd_call)

    # declare ---------------------------------------------------------------------------
    d = command(
        "declare",
        "declare exchanges, queues and bindings from a TOML or YAML file",
        "Declare the exchanges, queues and bindings described in FILE (TOML, or YAML when "
        "PyYAML is installed). Declaring is idempotent; an entity that exists with other "
        "settings is an error naming the difference.\n\n" + TOPOLOGY_SCHEMA,
        """
        hutch declare topology.toml
        hutch declare topology.yaml --dry-run
        """,
    )
    d.add_argument("file", metavar="FILE", help="the topology file (.toml, .yaml or .yml)")
    d.add_argument("--format", choices=("toml", "yaml"), help="file format (default: by suffix)")
    d.add_argument("--dry-run", action="store_true", help="check the file, print, declare nothing")
    d.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="seconds allowed for each declaration (default 30)",
    )
    d.set_defaults(run=_cmd_declare)

    # worker ----------------------------------------------------------------------------
    w = command(
        "worker",
        "process a work queue with a pool of workers",
        "Run HANDLER (package.module:function) for every message of a queue on a pool of "
        "threads (or processes), with fair dispatch. A task is acked when its handler "
        "returns; one that keeps failing goes to the dead-letter queue. SIGTERM or Ctrl-C "
        "stops taking tasks, finishes the ones in hand and exits.",
        """
        hutch worker myapp.tasks:resize --queue images
        hutch worker myapp.tasks:resize --queue images --concurrency 8 --processes
        hutch worker myapp.tasks:send_mail --queue mail --prefetch 1 --max-attempts 5
        """,
    )
    w.add_argument("handler", metavar="HANDLER", help="package.module:function")
    w.add_argument("--queue", required=True, metavar="NAME", help="the work queue")
    w.add_argument(
        "-c",
        "--concurrency",
        type=_positive_int,
        default=1,
        metavar="N",
        help="tasks run at once (default 1)",
    )
    w.add_argument(
        "--processes", action="store_true", help="run handlers in processes, not threads"
    )
    w.add_argument(
        "--prefetch",
        type=_positive_int,
        default=1,
        metavar="N",
        help="unacked tasks per worker (default 1: fair dispatch)",
    )
    w.add_argument(
        "--max-attempts",
        type=_positive_int,
        metavar="N",
        help="tries before a task is dead-lettered",
    )
    w.set_defaults(run=_cmd_worker)

    # serve -----------------------------------------------------------------------------
    s = command(
        "serve",
        "run an RPC server",
        "Load SERVER (package.module:attribute, an RpcServer) and serve calls until "
        "SIGTERM or Ctrl-C, which finishes the calls in hand first.",
        """
        hutch serve myapp.rpc:server
        hutch serve myapp.rpc:server --url amqp://user:secret@rabbit/prod
        """,
    )
    s.add_argument("server", metavar="SERVER", help="package.module:attribute")
    s.set_defaults(run=_cmd_serve)
    return parser


# --------------------------------------------------------------------------- main

_log_handler: logging.Handler | None = None


def _configure_logging(verbosity: int) -> None:
    """Log to stderr: quiet by default, ``-v`` info, ``-vv`` debug, ``-vvv`` pika's debug.

    Without ``-v`` hutch's warnings are held back while a command sets up, so an expected
    failure prints one line; :func:`_running` lets them through once it is serving.
    """
    global _log_handler
    root = logging.getLogger()
    if _log_handler is not None:
        root.removeHandler(_log_handler)
    _log_handler = logging.StreamHandler(sys.stderr)
    _log_handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(_log_handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    levels = {0: logging.ERROR, 1: logging.INFO}
    logging.getLogger("hutch").setLevel(levels.get(verbosity, logging.DEBUG))
    logging.getLogger("pika").setLevel(logging.DEBUG if verbosity >= 3 else logging.CRITICAL)


def _running(args: argparse.Namespace) -> None:
    """A long-running command is set up: from now on show hutch's warnings (reconnects)."""
    if args.verbose == 0:
        logging.getLogger("hutch").setLevel(logging.WARNING)


def _error(message: str, code: int) -> int:
    print(f"hutch: error: {message}", file=sys.stderr, flush=True)
    return code


def _describe_error(exc: HutchError) -> str:
    """One line for an expected failure, with a hint where one helps."""
    if isinstance(exc, AuthenticationError):
        return _one_line(exc)
    if isinstance(exc, ConnectError):
        return f"{_one_line(exc)} (is RabbitMQ running there? set --url or {URL_ENV})"
    if isinstance(exc, NotFound):
        # the broker's text names the entity: "NOT_FOUND - no exchange 'x' in vhost '/'"
        code, _, text = exc.reply_text.partition(" - ")
        return (
            f"{text or code} ({exc.reply_code} {code}; declare it first, e.g. with 'hutch declare')"
        )
    return _one_line(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hutch`` command line.

    Args:
        argv: The arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 success, 1 failure, 2 usage error, 130 interrupted.

    Example:
        >>> main(["publish", "amq.topic", "order.created", '{"id": 1}'])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args.url_given = getattr(args, "url", None) is not None
    args.url = getattr(args, "url", None) or os.environ.get(URL_ENV) or DEFAULT_URL
    args.verbose = getattr(args, "verbose", 0) or 0
    args.connect_timeout = getattr(args, "connect_timeout", None) or 30.0
    _configure_logging(args.verbose)
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except (UsageError, ValueError, TypeError) as exc:
        log.debug("hutch: usage error", exc_info=True)
        return _error(_one_line(exc), EXIT_USAGE)
    except HutchError as exc:
        log.debug("hutch: command failed", exc_info=True)
        return _error(_describe_error(exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        return _error("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILURE
    except OSError as exc:
        log.debug("hutch: OS error", exc_info=True)
        return _error(_one_line(exc), EXIT_FAILURE)
    except Exception as exc:
        if args.verbose >= 2:
            traceback.print_exc()
        return _error(
            f"unexpected {type(exc).__name__}: {_one_line(exc)} (a bug? run with -vv for the "
            "traceback and report it)",
            EXIT_FAILURE,
        )


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the exit flush does not fail."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
