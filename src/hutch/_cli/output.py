"""Data in and out of the command line: arguments read, messages printed.

Headers, properties and bodies given as arguments are parsed and checked here, and received
messages printed as text, JSON lines or (with rich) in colour.

Pretty output for humans uses `rich <https://rich.readthedocs.io>`_ when it is installed
(``pip install 'hutch[cli]'``) and stdout is a terminal; every command works without it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TextIO

import pydantic
from pydantic_core import PydanticSerializationError

from hutch._cli.common import UsageError, parse_json
from hutch._message import PROPERTY_NAMES, Message

if TYPE_CHECKING:
    from hutch._topology import FieldValue

__all__ = [
    "BINARY_TYPE",
    "JSON_TYPE",
    "TEXT_TYPE",
    "MessagePrinter",
    "display_body",
    "dumps",
    "encode_body",
    "parse_pairs",
    "parse_properties",
    "to_jsonable",
]

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
BINARY_TYPE = "application/octet-stream"


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
        result[key] = parse_json(value, f"{what} {key!r}") if typed else value
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
        parse_json(text, what)
        return data, JSON_TYPE
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return data, TEXT_TYPE
    return data, JSON_TYPE


def broken_json(data: bytes) -> str | None:
    """Why a body that looks like JSON (``{...`` or ``[...``) is not, or None.

    ``publish`` sends such a body as text (it is not JSON) but warns: it is most likely a
    quoting mistake, e.g. ``'{"id": 1,'``.

    Args:
        data: The body.

    Returns:
        The parser's complaint with its position, or None for valid JSON or plain text.

    Example:
        >>> broken_json(b'{"id": 1,')
        'Expecting property name enclosed in double quotes at line 1 column 10'
        >>> broken_json(b"hello") is None
        True
    """
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    if not text.lstrip().startswith(("{", "[")):
        return None
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    except (ValueError, RecursionError):
        return "nested too deeply or not a JSON value"
    return None


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


def dumps(value: object) -> str:
    """``value`` as one line of JSON (see :func:`to_jsonable`), non-ASCII kept."""
    return json.dumps(to_jsonable(value), ensure_ascii=False)


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
            print(dumps(self.record(message)), file=self.stream, flush=True)
            return
        encoding, body = display_body(message.raw_body, message.content_type)
        exchange = message.exchange or "(default exchange)"
        head = f"#{number} {exchange} -> {message.routing_key or '(no routing key)'}"
        extras = []
        if message.headers:
            extras.append(f"headers={dumps(dict(message.headers))}")
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
