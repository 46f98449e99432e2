"""The ``hutch`` program: the parser of all commands, logging, and exit statuses.

Expected failures (broker down, credentials refused, unroutable message, timeout, bad JSON,
bad handler spec...) print one line, ``hutch: error: ...``, on stderr and exit with a
non-zero status; ``-vv`` adds the traceback. Exit statuses: 0 success, 1 failure, 2 usage
error (bad arguments, bad JSON, bad topology file), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence

from hutch._cli import call, consume, declare, publish, serve, worker
from hutch._cli.common import (
    DEFAULT_URL,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    URL_ENV,
    Formatter,
    UsageError,
    examples,
    one_line,
    positive_float,
)
from hutch._exceptions import AuthenticationError, ConnectError, HutchError, NotFound

__all__ = ["build_parser", "main"]

log = logging.getLogger("hutch")

#: Seconds ``--connect-timeout`` allows by default (``Connection.open``'s default).
CONNECT_TIMEOUT = 30.0


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
        type=positive_float,
        default=argparse.SUPPRESS,
        metavar="S",
        help=f"seconds to wait for the connection (default: {CONNECT_TIMEOUT:g})",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log what happens (-v info: a line per task or call; -vv debug with tracebacks)",
    )
    group.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=argparse.SUPPRESS,
        help="log lines on stderr as timestamped text or one JSON object each (default: text)",
    )

    parser = argparse.ArgumentParser(
        prog="hutch",
        formatter_class=Formatter,
        parents=[common],
        description="Talk to RabbitMQ from the shell: publish, consume, call procedures, "
        "declare topology, run workers and RPC servers.",
        epilog=examples(
            """
            hutch publish amq.topic order.created '{"id": 1}'
            hutch consume amq.topic -k 'order.*' --count 1
            hutch declare topology.toml
            hutch worker myapp.tasks:resize --queue images --concurrency 8
            hutch serve myapp.rpc:server
            hutch call add 1 2
            HUTCH_URL=amqp://user:secret@rabbit:5672/prod hutch consume amq.fanout

            Run 'hutch COMMAND --help' for a command's options. Exit status: 0 ok,
            1 failure, 2 bad usage, 130 interrupted.
            """
        ),
    )
    from hutch import __version__

    parser.add_argument("--version", action="version", version=f"hutch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def command(
        name: str, help_text: str, description: str, example_lines: str
    ) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help_text,
            description=description,
            epilog=examples(example_lines),
            formatter_class=Formatter,
            parents=[common],
        )

    for module in (publish, consume, call, declare, worker, serve):
        module.register(command)
    return parser


_log_handler: logging.Handler | None = None


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time (ISO 8601, UTC), level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` as a JSON object on one line."""
        entry: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_formatter(fmt: str) -> logging.Formatter:
    """The formatter of ``--log-format``: ``text`` (timestamped lines) or ``json``."""
    if fmt == "json":
        return JsonFormatter()
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def _configure_logging(verbosity: int, fmt: str = "text") -> None:
    """Log to stderr: quiet by default, ``-v`` info, ``-vv`` debug, ``-vvv`` pika's debug.

    Without ``-v`` hutch's warnings are held back while a command sets up, so an expected
    failure prints one line; :func:`running` lets them through once it is serving.
    """
    global _log_handler
    root = logging.getLogger()
    if _log_handler is not None:
        root.removeHandler(_log_handler)
    _log_handler = logging.StreamHandler(sys.stderr)
    _log_handler.setFormatter(log_formatter(fmt))
    root.addHandler(_log_handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    levels = {0: logging.ERROR, 1: logging.INFO}
    logging.getLogger("hutch").setLevel(levels.get(verbosity, logging.DEBUG))
    logging.getLogger("pika").setLevel(logging.DEBUG if verbosity >= 3 else logging.CRITICAL)


def _error(message: str, code: int) -> int:
    """Print ``hutch: error: message`` on stderr; return the exit status ``code``."""
    print(f"hutch: error: {message}", file=sys.stderr, flush=True)
    return code


_NOT_AMQP = re.compile(r"([^\s,;]+): IncompatibleProtocolError")


def _describe_error(exc: HutchError, command: str | None = None) -> str:
    """One line for an expected failure, with a hint where one helps."""
    if isinstance(exc, AuthenticationError):
        return one_line(exc)
    if isinstance(exc, ConnectError):
        text = one_line(exc)
        match = _NOT_AMQP.search(text)
        if match:
            # pika's IncompatibleProtocolError: the peer answered the AMQP header with
            # something else (an HTTP server) or hung up
            return (
                f"cannot connect to the broker: {match.group(1)}: this port does not speak "
                "AMQP (RabbitMQ listens on 5672, 5671 for amqps://; 15672 is the management "
                f"UI's HTTP port); set --url or {URL_ENV}"
            )
        return f"{text} (is RabbitMQ running there? set --url or {URL_ENV})"
    if isinstance(exc, NotFound):
        # the broker's text names the entity: "NOT_FOUND - no exchange 'x' in vhost '/'"
        code, _, text = exc.reply_text.partition(" - ")
        if command == "declare":
            return f"{text or code} ({exc.reply_code} {code})"
        return (
            f"{text or code} ({exc.reply_code} {code}; declare it first, e.g. with 'hutch declare')"
        )
    return one_line(exc)


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
    # None: the library reads HUTCH_URL (and the other HUTCH_* settings) itself
    args.url = getattr(args, "url", None) or None
    args.verbose = getattr(args, "verbose", 0) or 0
    args.log_format = getattr(args, "log_format", None) or "text"
    args.connect_timeout = getattr(args, "connect_timeout", None) or CONNECT_TIMEOUT
    _configure_logging(args.verbose, args.log_format)
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except (UsageError, ValueError, TypeError) as exc:
        log.debug("hutch: usage error", exc_info=True)
        return _error(one_line(exc), EXIT_USAGE)
    except HutchError as exc:
        log.debug("hutch: command failed", exc_info=True)
        return _error(_describe_error(exc, args.command), EXIT_FAILURE)
    except KeyboardInterrupt:
        return _error("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILURE
    except OSError as exc:
        log.debug("hutch: OS error", exc_info=True)
        return _error(one_line(exc), EXIT_FAILURE)
    except Exception as exc:
        if args.verbose >= 2:
            traceback.print_exc()
        return _error(
            f"unexpected {type(exc).__name__}: {one_line(exc)} (a bug? run with -vv for the "
            "traceback and report it)",
            EXIT_FAILURE,
        )


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the exit flush does not fail."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
